/*
 * Threads on fitalloc. Usage: threads SCALE
 * (SCALE multiplies the iteration counts; 1 is the quick version used with
 * ALLOCATOR_CHECK=1.) Four parts, each printing one "ok" line:
 *
 *  random   4 threads, each a random mix of malloc / calloc / realloc /
 *           posix_memalign / free of random sizes over its own slots; every
 *           block carries a pattern unique to (thread, block) that is checked
 *           before every free and realloc (so overlapping blocks are caught),
 *           calloc memory must be zero, realloc must keep the old bytes.
 *  queue    2 producers allocate and fill blocks and push them on a bounded
 *           queue; 2 consumers pop them, check them, realloc half of them
 *           (growing or shrinking: a realloc of another thread's block) and
 *           free them. Every block allocated by one thread is freed by another.
 *  exit     threads allocate blocks, hand them to main and exit; main checks
 *           and frees them after the join (and some detached threads exit
 *           while main frees theirs). Repeated in cycles: the process's
 *           virtual size must not keep growing (no memory of an exited thread
 *           is lost).
 *  churn    many short-lived threads that each malloc and free a little.
 *
 * Any failure prints a line "threads: FAIL ..." and exits 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static long scale = 10;

#define DIE(...)                                                                                   \
  do {                                                                                             \
    fprintf(stderr, "threads: FAIL " __VA_ARGS__);                                                 \
    fputc('\n', stderr);                                                                           \
    exit(1);                                                                                       \
  } while (0)

static uint64_t rng_next(uint64_t *s) { /* xorshift64* */
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1DULL;
}

/* A random size: mostly small, sometimes medium, rarely large. */
static size_t rand_size(uint64_t *s) {
  uint64_t r = rng_next(s);
  switch (r % 64) {
  case 0:
    return 65536 + (r >> 8) % (300 * 1024);
  case 1: case 2: case 3: case 4:
    return 4096 + (r >> 8) % 28672;
  default:
    return 1 + (r >> 8) % 1024;
  }
}

/* Pattern byte i of a block tagged `tag`. */
static inline unsigned char pat(uint64_t tag, size_t i) {
  return (unsigned char)((tag * 0x9E3779B97F4A7C15ULL >> 56) ^ (i * 31) ^ (i >> 8));
}

static void fill(unsigned char *p, size_t n, uint64_t tag) {
  for (size_t i = 0; i < n; i++) p[i] = pat(tag, i);
}

static void verify(const unsigned char *p, size_t n, uint64_t tag, const char *where) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != pat(tag, i))
      DIE("%s: block %p (%zu bytes, tag %#llx) corrupted at byte %zu: %#x, expected %#x", where,
          (void *)p, n, (unsigned long long)tag, i, p[i], pat(tag, i));
}

static void check_new(void *p, size_t n, size_t align, const char *what) {
  if (!p) DIE("%s(%zu) returned NULL (errno %d)", what, n, errno);
  if ((uintptr_t)p % align) DIE("%s(%zu) = %p is not %zu-aligned", what, n, p, align);
  if (malloc_usable_size(p) < n) DIE("%s(%zu): usable size %zu", what, n, malloc_usable_size(p));
}

/* ---------------------------------------------------------------- random */
#define SLOTS 512
struct slot {
  unsigned char *p;
  size_t n;
  uint64_t tag;
};

static void *random_worker(void *arg) {
  long id = (long)arg;
  uint64_t s = 0x1234567ULL + (uint64_t)id * 0x9E3779B97F4A7C15ULL, tags = (uint64_t)id << 48;
  static __thread struct slot slot[SLOTS];
  long iters = 20000 * scale;
  for (long it = 0; it < iters; it++) {
    struct slot *b = &slot[rng_next(&s) % SLOTS];
    uint64_t op = rng_next(&s) % 16;
    if (!b->p) {
      size_t n = rand_size(&s);
      b->tag = ++tags;
      if (op < 10) {
        b->p = malloc(n);
        check_new(b->p, n, 16, "malloc");
      } else if (op < 13) {
        b->p = calloc(1, n);
        check_new(b->p, n, 16, "calloc");
        for (size_t i = 0; i < n; i++)
          if (b->p[i]) DIE("calloc(%zu) = %p: byte %zu is %#x", n, (void *)b->p, i, b->p[i]);
      } else {
        size_t align = (size_t)64 << (rng_next(&s) % 7); /* 64 .. 4096 */
        void *q = NULL;
        int e = posix_memalign(&q, align, n);
        if (e) DIE("posix_memalign(%zu, %zu) = %d", align, n, e);
        b->p = q;
        check_new(b->p, n, align, "posix_memalign");
      }
      b->n = n;
      fill(b->p, n, b->tag);
    } else if (op < 11) {
      verify(b->p, b->n, b->tag, "before free");
      free(b->p);
      b->p = NULL;
    } else {
      verify(b->p, b->n, b->tag, "before realloc");
      size_t n = op < 14 ? rand_size(&s) : b->n + 1 + rng_next(&s) % 256; /* any, or grow a bit */
      unsigned char *q = realloc(b->p, n);
      check_new(q, n, 16, "realloc");
      verify(q, n < b->n ? n : b->n, b->tag, "after realloc (kept bytes)");
      b->tag = ++tags;
      b->p = q;
      b->n = n;
      fill(q, n, b->tag);
    }
  }
  for (int i = 0; i < SLOTS; i++)
    if (slot[i].p) {
      verify(slot[i].p, slot[i].n, slot[i].tag, "at the end");
      free(slot[i].p);
    }
  return NULL;
}

/* ------------------------------------------------------------ transition */
#define TN 4000
static struct slot tblk[TN];

static void *transition_worker(void *arg) {
  long id = (long)arg; /* 0 or 1: frees the odd blocks i with i % 4 == 2 * id + 1 */
  uint64_t s = 0x31415ULL + (uint64_t)id;
  for (int i = 2 * (int)id + 1; i < TN; i += 4) {
    struct slot *b = &tblk[i];
    verify(b->p, b->n, b->tag, "transition: main's block in a new thread");
    if (i % 3 == 0) {
      size_t n = rand_size(&s);
      unsigned char *r = realloc(b->p, n);
      check_new(r, n, 16, "realloc (transition)");
      verify(r, n < b->n ? n : b->n, b->tag, "transition: after realloc");
      b->p = r;
      b->n = n;
      fill(r, n, b->tag);
    }
    void *mine = malloc(1 + i % 700);
    check_new(mine, (size_t)(1 + i % 700), 16, "malloc (transition thread)");
    free(b->p);
    free(mine);
    b->p = NULL;
  }
  return NULL;
}

static void transition_part(void) {
  uint64_t s = 0xFEEDULL;
  for (int i = 0; i < TN; i++) {
    tblk[i].n = rand_size(&s);
    tblk[i].tag = 0x7700000000ULL + (uint64_t)i;
    tblk[i].p = malloc(tblk[i].n);
    check_new(tblk[i].p, tblk[i].n, 16, "malloc (transition)");
    fill(tblk[i].p, tblk[i].n, tblk[i].tag);
  }
  pthread_t t[2];
  for (long k = 0; k < 2; k++)
    if (pthread_create(&t[k], NULL, transition_worker, (void *)k)) DIE("pthread_create");
  void *extra[TN / 2];
  for (int i = 0; i < TN; i += 2) {
    verify(tblk[i].p, tblk[i].n, tblk[i].tag, "transition: main, after the threads started");
    extra[i / 2] = malloc(tblk[i].n);
    check_new(extra[i / 2], tblk[i].n, 16, "malloc (transition, main)");
    memcpy(extra[i / 2], tblk[i].p, tblk[i].n);
    free(tblk[i].p);
    tblk[i].p = extra[i / 2];
  }
  for (int k = 0; k < 2; k++) pthread_join(t[k], NULL);
  for (int i = 0; i < TN; i += 2) {
    verify(tblk[i].p, tblk[i].n, tblk[i].tag, "transition: main, copies");
    free(tblk[i].p);
  }
  printf("ok   transition: %d blocks allocated single-threaded, half freed by the first threads\n", TN);
}

/* ----------------------------------------------------------------- queue */
#define QCAP 256
static struct {
  pthread_mutex_t mu;
  pthread_cond_t nonempty, nonfull;
  struct slot item[QCAP];
  int head, len, producers_left;
} q = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, {{0}}, 0, 0, 0};

static void *producer(void *arg) {
  long id = (long)arg;
  uint64_t s = 0xABCDEF01ULL * (uint64_t)(id + 1), tags = (uint64_t)(id + 16) << 48;
  long n_items = 20000 * scale;
  for (long k = 0; k < n_items; k++) {
    struct slot b;
    b.n = rand_size(&s);
    b.tag = ++tags;
    b.p = malloc(b.n);
    check_new(b.p, b.n, 16, "malloc (producer)");
    fill(b.p, b.n, b.tag);
    pthread_mutex_lock(&q.mu);
    while (q.len == QCAP) pthread_cond_wait(&q.nonfull, &q.mu);
    q.item[(q.head + q.len++) % QCAP] = b;
    pthread_cond_signal(&q.nonempty);
    pthread_mutex_unlock(&q.mu);
  }
  pthread_mutex_lock(&q.mu);
  q.producers_left--;
  pthread_cond_broadcast(&q.nonempty);
  pthread_mutex_unlock(&q.mu);
  return NULL;
}

static long consumed[2];

static void *consumer(void *arg) {
  long id = (long)arg;
  uint64_t s = 0x5555ULL + (uint64_t)id;
  for (;;) {
    pthread_mutex_lock(&q.mu);
    while (q.len == 0 && q.producers_left > 0) pthread_cond_wait(&q.nonempty, &q.mu);
    if (q.len == 0) {
      pthread_mutex_unlock(&q.mu);
      return NULL;
    }
    struct slot b = q.item[q.head];
    q.head = (q.head + 1) % QCAP;
    q.len--;
    pthread_cond_signal(&q.nonfull);
    pthread_mutex_unlock(&q.mu);
    verify(b.p, b.n, b.tag, "consumer, from another thread");
    if (rng_next(&s) % 2) {
      size_t n = rand_size(&s);
      unsigned char *r = realloc(b.p, n);
      check_new(r, n, 16, "realloc (consumer)");
      verify(r, n < b.n ? n : b.n, b.tag, "consumer, after realloc of another thread's block");
      b.p = r;
      b.n = n;
      fill(r, n, b.tag);
      verify(r, n, b.tag, "consumer, refilled");
    }
    free(b.p);
    consumed[id]++;
  }
}

/* ------------------------------------------------------------------ exit */
static long vm_kb(const char *key) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long v = -1;
  size_t k = strlen(key);
  if (!f) DIE("cannot open /proc/self/status");
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, key, k) && line[k] == ':') v = atol(line + k + 1);
  fclose(f);
  return v;
}

#define HAND 64
struct handoff {
  struct slot b[HAND];
  long id;
  volatile int ready;
};

static void *exiting_worker(void *arg) {
  struct handoff *h = arg;
  uint64_t s = 0x77ULL + (uint64_t)h->id;
  for (int i = 0; i < HAND; i++) {
    h->b[i].n = i % 8 == 0 ? 50000 + (size_t)i * 1000 : rand_size(&s);
    h->b[i].tag = ((uint64_t)h->id << 32) | (uint64_t)i;
    h->b[i].p = malloc(h->b[i].n);
    check_new(h->b[i].p, h->b[i].n, 16, "malloc (exiting thread)");
    fill(h->b[i].p, h->b[i].n, h->b[i].tag);
  }
  __atomic_store_n(&h->ready, 1, __ATOMIC_RELEASE);
  return NULL; /* exits; its blocks live on */
}

static void take_and_free(struct handoff *h) {
  for (int i = 0; i < HAND; i++) {
    verify(h->b[i].p, h->b[i].n, h->b[i].tag, "main, block of an exited thread");
    free(h->b[i].p);
  }
}

static void exit_part(void) {
  long cycles = 20 + 4 * scale, vm_after_first = 0, rss_after_first = 0;
  static struct handoff h[8];
  for (long c = 0; c < cycles; c++) {
    pthread_t t[8];
    for (int k = 0; k < 8; k++) {
      h[k].id = c * 8 + k;
      h[k].ready = 0;
      if (pthread_create(&t[k], NULL, exiting_worker, &h[k])) DIE("pthread_create");
    }
    /* four joined, four detached: main frees the latter's blocks while the
     * threads may still be exiting */
    for (int k = 0; k < 4; k++) {
      pthread_join(t[k], NULL);
      take_and_free(&h[k]);
    }
    for (int k = 4; k < 8; k++) {
      pthread_detach(t[k]);
      while (!__atomic_load_n(&h[k].ready, __ATOMIC_ACQUIRE)) sched_yield();
      take_and_free(&h[k]);
    }
    if (c == 0) {
      vm_after_first = vm_kb("VmSize");
      rss_after_first = vm_kb("VmRSS");
    }
  }
  usleep(100000); /* let the detached threads finish exiting */
  long vm_end = vm_kb("VmSize"), rss_end = vm_kb("VmRSS");
  /* Each cycle's threads fill about 8 MB that main frees: lost memory of
   * exited threads would show in the resident size (and address space). */
  if (rss_end - rss_after_first > 16 * 1024)
    DIE("exit: VmRSS grew by %ld kB (from %ld kB after the first cycle to %ld kB) over %ld "
        "cycles of exiting threads whose blocks were all freed (memory of exited threads lost?)",
        rss_end - rss_after_first, rss_after_first, rss_end, cycles);
  if (vm_end - vm_after_first > 64 * 1024)
    DIE("exit: VmSize grew by %ld kB (from %ld kB to %ld kB) over %ld cycles of exiting threads "
        "whose blocks were all freed", vm_end - vm_after_first, vm_after_first, vm_end, cycles);
  printf("ok   exit: %ld cycles of 8 threads whose blocks main frees; VmSize %ld -> %ld kB, "
         "VmRSS %ld -> %ld kB\n", cycles, vm_after_first, vm_end, rss_after_first, rss_end);
}

/* ----------------------------------------------------------------- churn */
static void *churn_worker(void *arg) {
  uint64_t s = (uint64_t)(uintptr_t)arg + 1;
  void *keep[16];
  for (int i = 0; i < 16; i++) {
    size_t n = rand_size(&s);
    keep[i] = malloc(n);
    check_new(keep[i], n, 16, "malloc (short-lived thread)");
    memset(keep[i], 0x5A, n);
  }
  for (int i = 0; i < 16; i++) free(keep[i]);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc > 1) scale = atol(argv[1]);
  setvbuf(stdout, NULL, _IOLBF, 0);

  transition_part();

  pthread_t t[4];
  for (long i = 0; i < 4; i++)
    if (pthread_create(&t[i], NULL, random_worker, (void *)i)) DIE("pthread_create");
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  printf("ok   random: 4 threads x %ld operations\n", 20000 * scale);

  q.producers_left = 2;
  pthread_create(&t[0], NULL, producer, (void *)0L);
  pthread_create(&t[1], NULL, producer, (void *)1L);
  pthread_create(&t[2], NULL, consumer, (void *)0L);
  pthread_create(&t[3], NULL, consumer, (void *)1L);
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  if (consumed[0] + consumed[1] != 2 * 20000 * scale)
    DIE("queue: %ld blocks consumed, expected %ld", consumed[0] + consumed[1], 2 * 20000 * scale);
  printf("ok   queue: %ld blocks allocated by a producer, realloc'ed/freed by a consumer (%ld + %ld)\n",
         2 * 20000 * scale, consumed[0], consumed[1]);

  exit_part();

  long n = 50 * scale;
  for (long i = 0; i < n; i += 8) {
    pthread_t c[8];
    for (long k = 0; k < 8; k++)
      if (pthread_create(&c[k], NULL, churn_worker, (void *)(i + k))) DIE("pthread_create");
    for (int k = 0; k < 8; k++) pthread_join(c[k], NULL);
  }
  printf("ok   churn: %ld short-lived threads\n", n);
  printf("threads: all ok\n");
  return 0;
}
