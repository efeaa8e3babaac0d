/*
 * More live threads than arenas (fitalloc has 1024): 1100 threads alive at
 * once, so 76 of them share an arena with its owner (the lock for everyone
 * there, ARCHITECTURE.md §5). Each thread mallocs, fills, checks and frees
 * blocks, then keeps one block, and every thread checks and frees its
 * neighbour's (a free into another, possibly shared, arena). All threads
 * exit and a second generation of 1100 does the same in the arenas the
 * first left behind: a thread that shared a slot must not give it back at
 * exit (it never claimed it), or two threads would own one arena.
 * Any failure prints "many_threads: FAIL ..." and exits 1.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 1100

static pthread_barrier_t bar;
static unsigned char *kept[N];

#define DIE(what)                                                                                  \
  do {                                                                                             \
    fprintf(stderr, "many_threads: FAIL %s (thread %ld)\n", what, id);                            \
    exit(1);                                                                                       \
  } while (0)

static void *run(void *arg) {
  long id = (long)arg;
  unsigned char mark = (unsigned char)(id * 37 + 1);
  pthread_barrier_wait(&bar); /* all N alive at once */
  for (int k = 0; k < 200; k++) {
    size_t n = 16 + (size_t)(id * 7 + k * 13) % 500;
    unsigned char *p = malloc(n);
    if (!p)
      DIE("malloc returned NULL");
    memset(p, mark, n);
    for (size_t j = 0; j < n; j++)
      if (p[j] != mark)
        DIE("a block changed under its thread");
    free(p);
  }
  unsigned char *keep = malloc(64);
  if (!keep)
    DIE("malloc returned NULL");
  memset(keep, mark, 64);
  kept[id] = keep;
  pthread_barrier_wait(&bar);
  long other = (id + 1) % N;
  unsigned char *q = kept[other];
  unsigned char theirs = (unsigned char)(other * 37 + 1);
  for (int j = 0; j < 64; j++)
    if (q[j] != theirs)
      DIE("a neighbour's block changed");
  pthread_barrier_wait(&bar);
  free(q);
  return 0;
}

int main(void) {
  static pthread_t t[N];
  pthread_attr_t a;
  pthread_attr_init(&a);
  pthread_attr_setstacksize(&a, 64 * 1024);
  for (int gen = 0; gen < 2; gen++) {
    pthread_barrier_init(&bar, 0, N);
    for (long i = 0; i < N; i++)
      if (pthread_create(&t[i], &a, run, (void *)i)) {
        fprintf(stderr, "many_threads: FAIL pthread_create %ld\n", i);
        return 1;
      }
    for (long i = 0; i < N; i++)
      pthread_join(t[i], 0);
    pthread_barrier_destroy(&bar);
  }
  printf("many_threads: ok\n");
  return 0;
}
