/*
 * A thread's last free comes after fitalloc's exit destructor (glibc frees
 * the thread's strerror buffer in __libc_thread_freeres, after every key
 * destructor); then the process forks and the child starts two threads
 * that malloc and free hard. The first child thread usually reuses the
 * exited thread's cached stack (and its pthread key data). If that late
 * free had claimed a slot and recorded it in the key, the child thread
 * would find that slot there while fork gave it back, and the second
 * thread would claim the same one: two owners of one arena (fitalloc
 * aborts with "allocator entered again", or blocks get corrupted).
 * Prints "fork_exited: ok" when the child exits 0, "fork_exited: FAIL ..."
 * and exits 1 otherwise.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void *exits_late(void *arg) {
  (void)arg;
  free(malloc(64));
  (void)strerror(123456); /* freed by glibc after every key destructor */
  return NULL;
}

static void *worker(void *arg) {
  unsigned s = 12345u + (unsigned)(long)arg;
  unsigned char *p[64] = {0};
  size_t n[64] = {0};
  for (long i = 0; i < 400000; i++) {
    s = s * 1103515245u + 12345u;
    int k = (int)((s >> 8) % 64);
    if (p[k]) {
      for (size_t j = 0; j < n[k]; j++)
        if (p[k][j] != (unsigned char)k) {
          fprintf(stderr, "fork_exited: FAIL block contents changed in the child\n");
          _exit(1);
        }
      free(p[k]);
      p[k] = NULL;
    } else {
      n[k] = 16 + (s >> 16) % 500;
      p[k] = malloc(n[k]);
      if (!p[k]) {
        fprintf(stderr, "fork_exited: FAIL malloc returned NULL\n");
        _exit(1);
      }
      memset(p[k], k, n[k]);
    }
  }
  for (int k = 0; k < 64; k++)
    free(p[k]);
  return NULL;
}

int main(void) {
  for (int round = 0; round < 3; round++) {
    pthread_t t;
    pthread_create(&t, NULL, exits_late, NULL);
    pthread_join(t, NULL);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
      fprintf(stderr, "fork_exited: FAIL fork\n");
      return 1;
    }
    if (pid == 0) {
      alarm(60);
      pthread_t x, y;
      pthread_create(&x, NULL, worker, (void *)1L);
      pthread_create(&y, NULL, worker, (void *)2L);
      pthread_join(x, NULL);
      pthread_join(y, NULL);
      _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      fprintf(stderr, "fork_exited: FAIL child of round %d %s %d\n", round,
              WIFSIGNALED(st) ? "died of signal" : "exited with", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
      return 1;
    }
  }
  printf("fork_exited: ok\n");
  return 0;
}
