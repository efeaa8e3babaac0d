/*
 * Allocation after fitalloc's thread-exit destructor: fitalloc keeps each
 * thread's arena slot in a pthread key (created in its constructor, so its
 * destructor runs before the program's) and in a word of TLS. Here every
 * thread sets a key of the program's own whose destructor, running after
 * fitalloc gave the slot back, mallocs, checks and frees blocks and frees
 * a block the thread allocated in its body; and glibc frees the thread's
 * strerror buffer after every destructor has run. Such a thread must never
 * keep using the slot it gave back (another thread may own it by then),
 * nor take one for good (nothing would give it back). 3000 threads, 8
 * alive at a time: with slots leaked, more than 1024 would have been
 * claimed, which the stats line ("N arena(s)") shows. Any failure prints
 * "late_destructor: FAIL ..." and exits 1.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 3000
#define LIVE 8

static pthread_key_t key;

static void die(const char *what, long id) {
  fprintf(stderr, "late_destructor: FAIL %s (thread %ld)\n", what, id);
  exit(1);
}

static unsigned char *filled(size_t n, unsigned char mark, long id) {
  unsigned char *p = malloc(n);
  if (!p)
    die("malloc returned NULL", id);
  memset(p, mark, n);
  return p;
}

static void check(const unsigned char *p, size_t n, unsigned char mark, long id) {
  for (size_t j = 0; j < n; j++)
    if (p[j] != mark)
      die("block contents changed", id);
}

/* Runs after fitalloc's own destructor gave this thread's slot back. */
static void late(void *v) {
  unsigned char *kept = v;
  long id = (long)kept[0] << 8 | kept[1];
  unsigned char *more[16];
  for (int k = 0; k < 16; k++)
    more[k] = filled(24 + (size_t)k * 40, (unsigned char)(k + 1), id);
  for (int k = 0; k < 16; k++) {
    check(more[k], 24 + (size_t)k * 40, (unsigned char)(k + 1), id);
    free(more[k]);
  }
  check(kept + 2, 198, 0x5a, id);
  free(kept);
}

static void *body(void *arg) {
  long id = (long)arg;
  unsigned char *kept = filled(200, 0x5a, id);
  kept[0] = (unsigned char)(id >> 8);
  kept[1] = (unsigned char)id;
  for (int k = 0; k < 50; k++) {
    size_t n = 16 + (size_t)(id * 7 + k * 13) % 700;
    unsigned char *p = filled(n, (unsigned char)k, id);
    check(p, n, (unsigned char)k, id);
    free(p);
  }
  if (pthread_setspecific(key, kept) != 0)
    die("pthread_setspecific", id);
  /* glibc frees this buffer at thread exit after every key destructor
   * (__libc_thread_freeres): a free with no destructor round after it. */
  (void)strerror(100000 + (int)id);
  return NULL;
}

int main(void) {
  if (pthread_key_create(&key, late) != 0)
    die("pthread_key_create", -1);
  for (long base = 0; base < THREADS; base += LIVE) {
    pthread_t t[LIVE];
    for (long i = 0; i < LIVE; i++)
      if (pthread_create(&t[i], NULL, body, (void *)(base + i)) != 0)
        die("pthread_create", base + i);
    for (long i = 0; i < LIVE; i++)
      pthread_join(t[i], NULL);
  }
  printf("late_destructor: ok\n");
  return 0;
}
