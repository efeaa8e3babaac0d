/*
 * fitalloc loaded with dlopen instead of LD_PRELOAD (as a plugin, or a
 * library that links it, would be): it keeps each thread's slot in
 * initial-exec TLS, which a library loaded after startup can use only from
 * glibc's spare static TLS space. dlopen must succeed, and its malloc and
 * free (called through dlsym) must work from the main thread and from new
 * threads. Usage: dlopen_alloc PATH-TO-allocator.so. Prints
 * "dlopen_alloc: ok", or "dlopen_alloc: FAIL ..." and exits 1.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void *(*malloc_fn)(size_t);
typedef void (*free_fn)(void *);
static malloc_fn f_malloc;
static free_fn f_free;

static void die(const char *what) {
  printf("dlopen_alloc: FAIL %s\n", what);
  exit(1);
}

static void *work(void *arg) {
  unsigned char mark = (unsigned char)(long)arg;
  unsigned char *kept[32];
  for (int round = 0; round < 200; round++) {
    for (int k = 0; k < 32; k++) {
      size_t n = 16 + (size_t)((round * 31 + k * 17) % 700);
      kept[k] = f_malloc(n);
      if (!kept[k])
        die("malloc returned NULL");
      memset(kept[k], mark, n);
    }
    for (int k = 0; k < 32; k++) {
      if (kept[k][0] != mark)
        die("block contents changed");
      f_free(kept[k]);
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 2)
    die("usage: dlopen_alloc PATH");
  void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    printf("dlopen_alloc: FAIL dlopen: %s\n", dlerror());
    return 1;
  }
  f_malloc = (malloc_fn)dlsym(h, "malloc");
  f_free = (free_fn)dlsym(h, "free");
  if (!f_malloc || !f_free)
    die("dlsym");
  work((void *)1L);
  pthread_t t[4];
  for (long i = 0; i < 4; i++)
    if (pthread_create(&t[i], NULL, work, (void *)(i + 2)) != 0)
      die("pthread_create");
  for (int i = 0; i < 4; i++)
    pthread_join(t[i], NULL);
  printf("dlopen_alloc: ok\n");
  return 0;
}
