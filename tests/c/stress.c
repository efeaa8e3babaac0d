/*
 * Stress: every allocation function from many threads at once, blocks freed by
 * other threads, and fork() in the middle of it.
 *
 *   stress [seed=N] [threads=N] [ops=N] [seconds=S] [forks=N]
 *
 * Worker threads (threads=, default 6) each keep 256 slots and do random
 * operations on them:
 *  - an empty slot gets a new block from malloc, calloc, realloc(NULL, n),
 *    posix_memalign, aligned_alloc or memalign, of 1 B to 1 MiB (log-
 *    distributed: mostly below 1 KiB, a few of 64 KiB..1 MiB);
 *  - a full slot is freed (sometimes with realloc(p, 0)), realloc'ed (or
 *    reallocarray'ed) to a new size, or handed to another thread through that
 *    thread's mailbox (a small locked queue); the receiver frees it or
 *    realloc's it and keeps it. About half of all frees are done by another
 *    thread than the one that allocated the block.
 * Every block is filled, over its whole malloc_usable_size, with a pattern
 * derived from a unique block id, and verified before every free and realloc;
 * after a realloc the kept prefix is verified; calloc memory must be zero;
 * malloc_usable_size must be at least the request; pointers must be 16-byte
 * aligned (and aligned as asked for the memalign family).
 *
 * Meanwhile a forker thread calls fork() (forks=, default 60, one every 2 ms
 * or so). Each child checks and frees blocks it inherited from the forker,
 * mallocs, reallocs and frees a few hundred blocks (one of 1 MiB), and exits
 * 0; a child stuck on a lock dies of its own alarm (SIGALRM) and is reported.
 *
 * The workers do ops= operations each (default 50000) and keep going until
 * the forks are done; with seconds=S instead, everything runs for S seconds
 * (forking every 50 ms). The seed (default 1) decides each thread's choices;
 * the interleaving of threads is not reproducible.
 *
 * Output: "ok ..." lines with counts, then "stress: all ok". Any failure
 * prints "stress: FAIL ... (seed N)" and exits 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t seed = 1;

#define DIE(...)                                                                                   \
  do {                                                                                             \
    fprintf(stderr, "stress: FAIL " __VA_ARGS__);                                                  \
    fprintf(stderr, " (seed %llu)\n", (unsigned long long)seed);                                   \
    exit(1);                                                                                       \
  } while (0)

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
  uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* 1 B .. 1 MiB: 85% below 1 KiB, 13% 1..64 KiB, 2% 64 KiB..1 MiB. */
static size_t rand_size(uint64_t *s) {
  uint64_t r = rng_next(s);
  unsigned pct = (unsigned)(r % 100), bits;
  r >>= 8;
  if (pct < 85)
    bits = (unsigned)(r % 10);
  else if (pct < 98)
    bits = 10 + (unsigned)(r % 6);
  else
    bits = 16 + (unsigned)(r % 5);
  r >>= 8;
  size_t n = ((size_t)1 << bits) + (size_t)(r % ((uint64_t)1 << bits));
  return n > ((size_t)1 << 20) ? (size_t)1 << 20 : n;
}

/* ---------------------------------------------------------------- blocks */

/* Byte j of block `id`: byte j % 8 of word(id, j / 8) (little endian), so a
 * block is filled a word at a time and any prefix can be checked. */
static inline uint64_t word_of(uint64_t id, size_t i) {
  return (id * 0x9E3779B97F4A7C15ULL) ^ ((uint64_t)i * 0xD6E8FEB86659FD93ULL) ^ (uint64_t)i;
}

static inline unsigned char byte_of(uint64_t id, size_t j) {
  return (unsigned char)(word_of(id, j / 8) >> (8 * (j % 8)));
}

static void fill(unsigned char *p, size_t n, uint64_t id) {
  size_t w = n / 8;
  for (size_t i = 0; i < w; i++) {
    uint64_t v = word_of(id, i);
    memcpy(p + 8 * i, &v, 8);
  }
  for (size_t j = 8 * w; j < n; j++) p[j] = byte_of(id, j);
}

/* The first byte of p[0..n) that differs from the pattern, or -1. */
static long mismatch(const unsigned char *p, size_t n, uint64_t id) {
  size_t w = n / 8;
  for (size_t i = 0; i < w; i++) {
    uint64_t v;
    memcpy(&v, p + 8 * i, 8);
    if (v != word_of(id, i))
      for (size_t j = 8 * i;; j++)
        if (p[j] != byte_of(id, j)) return (long)j;
  }
  for (size_t j = 8 * w; j < n; j++)
    if (p[j] != byte_of(id, j)) return (long)j;
  return -1;
}

struct blk {
  unsigned char *p;
  size_t n;      /* requested */
  size_t usable; /* malloc_usable_size, all of it filled */
  uint64_t id;   /* pattern; its top 16 bits are the allocating thread + 1 */
};

static int owner_of(const struct blk *b) { return (int)(b->id >> 48) - 1; }

static void verify(const struct blk *b, size_t n, const char *where) {
  long bad = mismatch(b->p, n, b->id);
  if (bad >= 0)
    DIE("%s: block %p (id %#llx, %zu bytes requested, %zu usable) differs at byte %ld: %#x, "
        "expected %#x", where, (void *)b->p, (unsigned long long)b->id, b->n, b->usable, bad,
        b->p[bad], byte_of(b->id, (size_t)bad));
}

static void check_new(const char *what, void *p, size_t n, size_t align) {
  if (!p) DIE("%s(%zu) returned NULL (errno %d)", what, n, errno);
  if ((uintptr_t)p % align) DIE("%s(%zu) = %p is not %zu-byte aligned", what, n, p, align);
  size_t u = malloc_usable_size(p);
  if (u < n) DIE("%s(%zu) = %p: malloc_usable_size %zu", what, n, p, u);
}

/* A new block's record: usable size, id, pattern written. */
static void adopt(struct blk *b, unsigned char *p, size_t n, uint64_t id) {
  b->p = p;
  b->n = n;
  b->usable = malloc_usable_size(p);
  b->id = id;
  fill(p, b->usable, id);
}

/* ---------------------------------------------------------------- threads */

#define MAXT 32
#define SLOTS 256
#define MAILBOX 512

enum { A_MALLOC, A_CALLOC, A_REALLOC_NULL, A_POSIX_MEMALIGN, A_ALIGNED_ALLOC, A_MEMALIGN, A_KINDS };
static const char *const alloc_name[A_KINDS] = {"malloc", "calloc", "realloc(NULL)",
                                                "posix_memalign", "aligned_alloc", "memalign"};

struct counts {
  long ops, alloc[A_KINDS], free_own, free_cross, realloc_own, realloc_cross, handed;
};

static struct worker {
  pthread_t thread;
  int index;
  uint64_t rng, next_id;
  struct blk slot[SLOTS];
  struct counts c;
  pthread_mutex_t mu; /* guards box and boxed */
  struct blk box[MAILBOX];
  int boxed;
} workers[MAXT];

static int nthreads = 6;
static long ops_per_thread = 50000, forks_wanted = 60;
static double seconds, t_start;
static atomic_int forker_done, time_up;

static uint64_t new_id(struct worker *w) { return ((uint64_t)(w->index + 1) << 48) | ++w->next_id; }

static void free_block(struct worker *w, struct blk *b, const char *where) {
  verify(b, b->usable, where);
  if (owner_of(b) == w->index)
    w->c.free_own++;
  else
    w->c.free_cross++;
  if (rng_next(&w->rng) % 8 == 0) {
    errno = 0;
    void *r = realloc(b->p, 0);
    if (r) DIE("realloc(%p, 0) returned %p, expected NULL (the block freed)", (void *)b->p, r);
  } else {
    free(b->p);
  }
  b->p = NULL;
}

static void realloc_block(struct worker *w, struct blk *b, const char *where) {
  verify(b, b->usable, where);
  if (owner_of(b) == w->index)
    w->c.realloc_own++;
  else
    w->c.realloc_cross++;
  uint64_t r = rng_next(&w->rng);
  size_t n = r % 4 == 0 ? b->n + 1 + (r >> 8) % 512 : rand_size(&w->rng); /* grow a little, or any */
  unsigned char *q;
  if (r % 16 == 1) { /* reallocarray(p, k, n / k) */
    size_t k = 1 + (r >> 20) % 4;
    n = (n + k - 1) / k * k;
    q = reallocarray(b->p, k, n / k);
  } else {
    q = realloc(b->p, n);
  }
  check_new("realloc", q, n, 16);
  struct blk moved = {q, n, malloc_usable_size(q), b->id};
  verify(&moved, n < b->n ? n : b->n, "after realloc (the kept bytes)");
  adopt(b, q, n, new_id(w));
}

static void alloc_block(struct worker *w, struct blk *b) {
  uint64_t r = rng_next(&w->rng);
  unsigned pick = (unsigned)(r % 100);
  int kind = pick < 50 ? A_MALLOC : pick < 65 ? A_CALLOC : pick < 75 ? A_REALLOC_NULL
             : pick < 85 ? A_POSIX_MEMALIGN : pick < 93 ? A_ALIGNED_ALLOC : A_MEMALIGN;
  size_t n = rand_size(&w->rng), align = 16;
  void *p = NULL;
  switch (kind) {
  case A_MALLOC:
    p = malloc(n);
    break;
  case A_CALLOC: {
    size_t k = 1 + (r >> 8) % 4;
    n = (n + k - 1) / k * k;
    p = calloc(k, n / k);
    check_new("calloc", p, n, 16);
    for (size_t j = 0; j < n; j++)
      if (((unsigned char *)p)[j])
        DIE("calloc(%zu, %zu) = %p: byte %zu is %#x, not 0", k, n / k, p, j, ((unsigned char *)p)[j]);
    break;
  }
  case A_REALLOC_NULL:
    p = realloc(NULL, n);
    break;
  case A_POSIX_MEMALIGN: {
    align = (size_t)8 << ((r >> 8) % 14); /* 8 .. 64 KiB */
    int e = posix_memalign(&p, align, n);
    if (e) DIE("posix_memalign(%zu, %zu) = %d", align, n, e);
    break;
  }
  case A_ALIGNED_ALLOC:
    align = (size_t)16 << ((r >> 8) % 9); /* 16 .. 4 KiB; size a multiple of it (C11) */
    n = (n + align - 1) / align * align;
    p = aligned_alloc(align, n);
    break;
  case A_MEMALIGN:
    align = (size_t)16 << ((r >> 8) % 9);
    p = memalign(align, n);
    break;
  }
  check_new(alloc_name[kind], p, n, align < 16 ? 16 : align);
  w->c.alloc[kind]++;
  adopt(b, p, n, new_id(w));
}

static struct blk *empty_slot(struct worker *w) {
  struct blk *b = &w->slot[rng_next(&w->rng) % SLOTS];
  return b->p ? NULL : b;
}

/* Blocks other threads handed over: free most, realloc and keep some. */
static void drain_mailbox(struct worker *w) {
  struct blk got[MAILBOX];
  pthread_mutex_lock(&w->mu);
  int n = w->boxed;
  memcpy(got, w->box, sizeof(struct blk) * (size_t)n);
  w->boxed = 0;
  pthread_mutex_unlock(&w->mu);
  for (int i = 0; i < n; i++) {
    struct blk *keep = rng_next(&w->rng) % 4 == 0 ? empty_slot(w) : NULL;
    if (keep) {
      *keep = got[i];
      realloc_block(w, keep, "a block from another thread, before realloc");
    } else {
      free_block(w, &got[i], "a block from another thread, before free");
    }
  }
}

static void hand_over(struct worker *w, struct blk *b) {
  if (nthreads < 2) {
    free_block(w, b, "before free");
    return;
  }
  struct worker *to = &workers[(w->index + 1 + (int)(rng_next(&w->rng) % (uint64_t)(nthreads - 1))) % nthreads];
  pthread_mutex_lock(&to->mu);
  int ok = to->boxed < MAILBOX;
  if (ok) to->box[to->boxed++] = *b;
  pthread_mutex_unlock(&to->mu);
  if (!ok) {
    free_block(w, b, "before free (mailbox full)");
    return;
  }
  w->c.handed++;
  b->p = NULL;
}

static int worker_done(struct worker *w) {
  if (seconds > 0) {
    if (atomic_load(&time_up)) return 1;
    if (now() - t_start < seconds) return 0;
    atomic_store(&time_up, 1);
    return 1;
  }
  return w->c.ops >= ops_per_thread && atomic_load(&forker_done);
}

static void *worker_main(void *arg) {
  struct worker *w = arg;
  for (;; w->c.ops++) {
    if ((w->c.ops & 63) == 0 && worker_done(w)) break;
    if ((w->c.ops & 3) == 0) drain_mailbox(w);
    struct blk *b = &w->slot[rng_next(&w->rng) % SLOTS];
    if (!b->p) {
      alloc_block(w, b);
      continue;
    }
    unsigned pick = (unsigned)(rng_next(&w->rng) % 100);
    if (pick < 30)
      free_block(w, b, "before free");
    else if (pick < 55)
      realloc_block(w, b, "before realloc");
    else
      hand_over(w, b);
  }
  for (int i = 0; i < SLOTS; i++)
    if (w->slot[i].p) free_block(w, &w->slot[i], "at the end");
  return NULL;
}

/* ------------------------------------------------------------------ fork */

#define INHERIT 32
static struct blk inherited[INHERIT];
static long forks_done;

/* In the child: returns an exit status (0: all went well). */
static int child_work(uint64_t s) {
  alarm(30); /* a deadlocked child dies of SIGALRM instead of hanging */
  for (int i = 0; i < INHERIT; i++) {
    if (mismatch(inherited[i].p, inherited[i].usable, inherited[i].id) >= 0) return 10;
    if (i % 2) {
      free(inherited[i].p);
      inherited[i].p = NULL;
    }
  }
  enum { N = 200 };
  static struct blk b[N];
  for (int i = 0; i < N; i++) {
    size_t n = i == 0 ? (size_t)1 << 20 : rand_size(&s);
    unsigned char *p = i % 3 ? malloc(n) : calloc(1, n);
    if (!p || malloc_usable_size(p) < n || (uintptr_t)p % 16) return 11;
    adopt(&b[i], p, n, (uint64_t)i + 1);
  }
  for (int i = 0; i < N; i += 2) {
    size_t n = rand_size(&s);
    unsigned char *q = realloc(b[i].p, n);
    if (!q || mismatch(q, n < b[i].n ? n : b[i].n, b[i].id) >= 0) return 12;
    adopt(&b[i], q, n, (uint64_t)i + 1000);
  }
  for (int i = 0; i < N; i++) {
    if (mismatch(b[i].p, b[i].usable, b[i].id) >= 0) return 13;
    free(b[i].p);
  }
  return 0;
}

static void *forker_main(void *arg) {
  uint64_t s = seed ^ 0xF0F0F0F0ULL;
  (void)arg;
  for (int i = 0; i < INHERIT; i++) {
    size_t n = 100 + rand_size(&s) % 5000;
    unsigned char *p = malloc(n);
    check_new("malloc (forker)", p, n, 16);
    adopt(&inherited[i], p, n, 0xF000000000ULL + (uint64_t)i);
  }
  for (long k = 0;; k++) {
    if (seconds > 0 ? atomic_load(&time_up) || now() - t_start >= seconds : k >= forks_wanted) break;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) DIE("fork: %s", strerror(errno));
    if (pid == 0) _exit(child_work(s + (uint64_t)k));
    int st;
    if (waitpid(pid, &st, 0) != pid) DIE("waitpid(%d): %s", (int)pid, strerror(errno));
    if (WIFSIGNALED(st))
      DIE("fork %ld: the child was killed by signal %d%s", k, WTERMSIG(st),
          WTERMSIG(st) == SIGALRM ? " (SIGALRM: deadlocked for 30 s)" : "");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
      DIE("fork %ld: the child exited with status %d (10: an inherited block changed, 11: "
          "malloc/calloc, 12: realloc, 13: its own blocks changed)", k, WEXITSTATUS(st));
    forks_done++;
    usleep(seconds > 0 ? 50000 : 2000);
  }
  for (int i = 0; i < INHERIT; i++) {
    verify(&inherited[i], inherited[i].usable, "forker, at the end");
    free(inherited[i].p);
  }
  atomic_store(&forker_done, 1);
  return NULL;
}

/* ------------------------------------------------------------------ main */

static const char *arg(int argc, char **argv, const char *name) {
  size_t len = strlen(name);
  for (int i = 1; i < argc; i++)
    if (!strncmp(argv[i], name, len) && argv[i][len] == '=') return argv[i] + len + 1;
  return NULL;
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    if (!strchr(argv[i], '=')) {
      fprintf(stderr, "usage: stress [seed=N] [threads=N] [ops=N] [seconds=S] [forks=N]\n");
      return 2;
    }
  const char *v;
  if ((v = arg(argc, argv, "seed"))) seed = strtoull(v, NULL, 0);
  if ((v = arg(argc, argv, "threads"))) nthreads = atoi(v);
  if ((v = arg(argc, argv, "ops"))) ops_per_thread = (long)strtod(v, NULL);
  if ((v = arg(argc, argv, "seconds"))) seconds = strtod(v, NULL);
  if ((v = arg(argc, argv, "forks"))) forks_wanted = atol(v);
  if (nthreads < 1 || nthreads > MAXT) DIE("threads must be 1..%d", MAXT);
  setvbuf(stdout, NULL, _IOLBF, 0);

  t_start = now();
  for (int i = 0; i < nthreads; i++) {
    struct worker *w = &workers[i];
    w->index = i;
    w->rng = seed * 0x100000001B3ULL + (uint64_t)i * 0x9E3779B97F4A7C15ULL;
    pthread_mutex_init(&w->mu, NULL);
  }
  for (int i = 0; i < nthreads; i++)
    if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i])) DIE("pthread_create");
  pthread_t forker;
  if (pthread_create(&forker, NULL, forker_main, NULL)) DIE("pthread_create (forker)");
  pthread_join(forker, NULL);
  for (int i = 0; i < nthreads; i++) pthread_join(workers[i].thread, NULL);

  /* blocks still in mailboxes, handed over after their receiver stopped */
  struct counts t = {0};
  long left = 0;
  for (int i = 0; i < nthreads; i++) {
    struct worker *w = &workers[i];
    for (int k = 0; k < w->boxed; k++) {
      verify(&w->box[k], w->box[k].usable, "left in a mailbox, at the end");
      free(w->box[k].p);
      left++;
    }
    t.ops += w->c.ops;
    for (int k = 0; k < A_KINDS; k++) t.alloc[k] += w->c.alloc[k];
    t.free_own += w->c.free_own;
    t.free_cross += w->c.free_cross + w->boxed;
    t.realloc_own += w->c.realloc_own;
    t.realloc_cross += w->c.realloc_cross;
    t.handed += w->c.handed;
  }
  long frees = t.free_own + t.free_cross;
  printf("ok   stress: %d threads, %ld operations in %.1f s (seed %llu)\n", nthreads, t.ops,
         now() - t_start, (unsigned long long)seed);
  printf("ok   allocations: %ld malloc, %ld calloc, %ld realloc(NULL), %ld posix_memalign, "
         "%ld aligned_alloc, %ld memalign\n", t.alloc[A_MALLOC], t.alloc[A_CALLOC],
         t.alloc[A_REALLOC_NULL], t.alloc[A_POSIX_MEMALIGN], t.alloc[A_ALIGNED_ALLOC],
         t.alloc[A_MEMALIGN]);
  printf("ok   frees: %ld, %ld (%.0f%%) by another thread than the allocating one; reallocs: %ld "
         "own, %ld of another thread's block; %ld blocks handed over\n", frees, t.free_cross,
         frees ? 100.0 * (double)t.free_cross / (double)frees : 0.0, t.realloc_own,
         t.realloc_cross, t.handed);
  printf("ok   fork: %ld children forked while the workers allocated, all exited 0\n", forks_done);
  printf("stress: all ok\n");
  return 0;
}
