/*
 * Out of memory for real. Run it under a virtual memory limit (ulimit -v, set
 * by tests/29-oom.sh):
 *
 *   oom
 *
 * fill     allocate blocks of 1 MiB until malloc fails, then of 64 KiB, 4 KiB,
 *          256 B and 16 B (each size until it fails): the address space is
 *          used up. Every failed malloc must return NULL with errno ENOMEM.
 *          Every block is filled with a pattern of its number.
 * refuse   with the address space full: malloc, calloc, aligned_alloc,
 *          memalign of sizes that just failed return NULL with ENOMEM;
 *          realloc and reallocarray that need a new place return NULL with
 *          ENOMEM and leave the old block intact, readable and the same size;
 *          posix_memalign returns ENOMEM and touches neither *memptr nor
 *          errno.
 * recover  free every other block (checked first): malloc, calloc (zero),
 *          posix_memalign and a growing realloc succeed again; every
 *          surviving block is intact.
 * The same again (a second fill on the half-free heap must reach at least
 * 3/4 of the first one's bytes: freed memory is usable again), then
 * everything is checked and freed, and a last malloc must work.
 *
 * The bookkeeping arrays come from mmap before the first fill. stdout has a
 * static buffer, so printing needs no memory. Any failure prints
 * "oom: FAIL ..." and exits 1; success ends with "oom: all ok".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

#define DIE(...)                                                                                   \
  do {                                                                                             \
    fprintf(stderr, "oom: FAIL " __VA_ARGS__);                                                     \
    fputc('\n', stderr);                                                                           \
    exit(1);                                                                                       \
  } while (0)

static inline unsigned char pat(uint32_t id, size_t i) {
  return (unsigned char)((id * 0x9E3779B1u >> 24) ^ (i * 31) ^ (i >> 9));
}

static void fill(unsigned char *p, size_t n, uint32_t id) {
  for (size_t i = 0; i < n; i++) p[i] = pat(id, i);
}

static long mismatch(const unsigned char *p, size_t n, uint32_t id) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != pat(id, i)) return (long)i;
  return -1;
}

#define MAXB (1 << 18)
static unsigned char **blk; /* NULL once freed */
static size_t *len;
static long nblk;
static uint32_t next_id = 1;
static uint32_t *ids;

static void check_block(long i, const char *where) {
  long bad = mismatch(blk[i], len[i], ids[i]);
  if (bad >= 0)
    DIE("%s: block %ld (%p, %zu bytes) differs at byte %ld", where, i, (void *)blk[i], len[i], bad);
  if (malloc_usable_size(blk[i]) < len[i])
    DIE("%s: block %ld: malloc_usable_size %zu < %zu", where, i, malloc_usable_size(blk[i]), len[i]);
}

static void check_all(const char *where) {
  for (long i = 0; i < nblk; i++)
    if (blk[i]) check_block(i, where);
}

static void add(unsigned char *p, size_t n) {
  if (nblk == MAXB) DIE("more than %d blocks", MAXB);
  blk[nblk] = p;
  len[nblk] = n;
  ids[nblk] = next_id++;
  fill(p, n, ids[nblk]);
  nblk++;
}

/* Allocates blocks of each size until malloc fails; returns the bytes in
 * use then (`live` of them were in use before). */
static size_t fill_up(const char *when, size_t live) {
  static const size_t sizes[] = {1 << 20, 64 << 10, 4 << 10, 256, 16};
  size_t bytes = 0;
  printf("ok   %s:", when);
  for (unsigned k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
    long count = 0;
    for (;;) {
      errno = 0;
      unsigned char *p = malloc(sizes[k]);
      if (!p) {
        if (errno != ENOMEM)
          DIE("%s: malloc(%zu) returned NULL with errno %d (%s), not ENOMEM", when, sizes[k], errno,
              strerror(errno));
        break;
      }
      if ((uintptr_t)p % 16) DIE("malloc(%zu) = %p is not 16-byte aligned", sizes[k], (void *)p);
      add(p, sizes[k]);
      bytes += sizes[k];
      count++;
    }
    printf(" %ld x %zu B", count, sizes[k]);
  }
  printf(" until malloc returned NULL, ENOMEM (%zu MiB in use)\n", (live + bytes) >> 20);
  return live + bytes;
}

static void expect_null(void *p, const char *what) {
  int e = errno;
  if (p) DIE("%s with the address space full returned %p, expected NULL", what, p);
  if (e != ENOMEM) DIE("%s returned NULL with errno %d (%s), not ENOMEM", what, e, strerror(e));
}

/* A big and a small live block, for the realloc refusals. */
static long find_block(size_t n) {
  for (long i = 0; i < nblk; i++)
    if (blk[i] && len[i] == n) return i;
  DIE("no live block of %zu bytes", n);
}

static void refuse(void) {
  errno = 0;
  expect_null(malloc(16), "malloc(16)");
  errno = 0;
  expect_null(malloc(1 << 20), "malloc(1 MiB)");
  errno = 0;
  expect_null(calloc(1, 64 << 10), "calloc(1, 64 KiB)");
  errno = 0;
  expect_null(calloc(4096, 16), "calloc(4096, 16)");
  errno = 0;
  expect_null(aligned_alloc(4096, 64 << 10), "aligned_alloc(4096, 64 KiB)");
  errno = 0;
  expect_null(memalign(4096, 64 << 10), "memalign(4096, 64 KiB)");

  long big = find_block(1 << 20), small = find_block(256);
  long which[2] = {big, small};
  size_t grow[2] = {(size_t)4 << 20, 64 << 10};
  for (int k = 0; k < 2; k++) {
    long i = which[k];
    size_t usable = malloc_usable_size(blk[i]);
    errno = 0;
    expect_null(realloc(blk[i], grow[k]), k ? "realloc(256 B block, 64 KiB)" : "realloc(1 MiB block, 4 MiB)");
    /* (blk[i] is read again below: still the block, since realloc failed) */
    if (malloc_usable_size(blk[i]) != usable)
      DIE("a failed realloc changed the block's usable size from %zu to %zu", usable,
          malloc_usable_size(blk[i]));
    check_block(i, "after a failed realloc");
    errno = 0;
    expect_null(reallocarray(blk[i], 1024, grow[k] / 1024), "reallocarray");
    check_block(i, "after a failed reallocarray");
  }

  void *m = (void *)0x1234;
  errno = 4321;
  int r = posix_memalign(&m, 4096, 64 << 10);
  if (r != ENOMEM || m != (void *)0x1234 || errno != 4321)
    DIE("posix_memalign(4096, 64 KiB) with the address space full: returned %d (expected ENOMEM "
        "%d), *memptr %p (expected 0x1234 untouched), errno %d (expected 4321 untouched)",
        r, ENOMEM, m, errno);
  m = (void *)0x1234;
  errno = 4321;
  r = posix_memalign(&m, 16, 16);
  if (r != ENOMEM || m != (void *)0x1234 || errno != 4321)
    DIE("posix_memalign(16, 16) with the address space full: returned %d, *memptr %p, errno %d", r,
        m, errno);
  printf("ok   refused with NULL/ENOMEM: malloc, calloc, aligned_alloc, memalign; realloc and "
         "reallocarray (old blocks intact); posix_memalign ENOMEM, *memptr and errno untouched\n");
}

static void recover(void) {
  long freed = 0;
  size_t bytes = 0;
  for (long i = 0; i < nblk; i += 2)
    if (blk[i]) {
      check_block(i, "before free");
      bytes += len[i];
      free(blk[i]);
      blk[i] = NULL;
      freed++;
    }
  check_all("after freeing half of the blocks");
  unsigned char *p = malloc(1 << 20);
  if (!p) DIE("malloc(1 MiB) after freeing %zu MiB: NULL (errno %d)", bytes >> 20, errno);
  add(p, 1 << 20);
  unsigned char *c = calloc(16, 4096);
  if (!c) DIE("calloc(16, 4096) after freeing %zu MiB: NULL (errno %d)", bytes >> 20, errno);
  for (size_t i = 0; i < 16 * 4096; i++)
    if (c[i]) DIE("calloc(16, 4096) = %p: byte %zu is %#x, not 0", (void *)c, i, c[i]);
  add(c, 16 * 4096);
  void *m = NULL;
  int r = posix_memalign(&m, 4096, 100000);
  if (r || !m || (uintptr_t)m % 4096) DIE("posix_memalign(4096, 100000) after freeing: %d, %p", r, m);
  add(m, 100000);
  long i = find_block(256);
  unsigned char *q = realloc(blk[i], 300000);
  if (!q) DIE("realloc(256 B block, 300000) after freeing: NULL (errno %d)", errno);
  if (mismatch(q, 256, ids[i]) >= 0) DIE("realloc after freeing did not keep the block's bytes");
  blk[i] = q;
  len[i] = 300000;
  fill(q, len[i], ids[i]);
  check_all("after the new allocations");
  printf("ok   recovered: freed %ld blocks (%zu MiB); malloc, calloc (zero), posix_memalign and a "
         "growing realloc succeed; all surviving blocks intact\n", freed, bytes >> 20);
}

int main(void) {
  static char outbuf[4096];
  setvbuf(stdout, outbuf, _IOLBF, sizeof outbuf);
  struct rlimit rl;
  if (getrlimit(RLIMIT_AS, &rl) || rl.rlim_cur == RLIM_INFINITY)
    DIE("no virtual memory limit: run under ulimit -v (tests/29-oom.sh)");
  printf("ok   limit: ulimit -v %llu kB\n", (unsigned long long)rl.rlim_cur >> 10);
  size_t arrays = (size_t)MAXB * (sizeof *blk + sizeof *len + sizeof *ids);
  unsigned char *a = mmap(NULL, arrays, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (a == MAP_FAILED) DIE("mmap of the bookkeeping arrays");
  blk = (unsigned char **)a;
  len = (size_t *)(a + (size_t)MAXB * sizeof *blk);
  ids = (uint32_t *)(a + (size_t)MAXB * (sizeof *blk + sizeof *len));

  size_t first = fill_up("fill", 0);
  check_all("after the fill");
  refuse();
  recover();
  size_t live = 0;
  for (long i = 0; i < nblk; i++)
    if (blk[i]) live += len[i];
  size_t second = fill_up("fill again", live);
  if (second < first / 4 * 3)
    DIE("the second fill reached %zu MiB in use, the first %zu MiB: freed memory is not "
        "usable again", second >> 20, first >> 20);
  check_all("after the second fill");
  refuse();
  recover();
  for (long i = 0; i < nblk; i++)
    if (blk[i]) {
      check_block(i, "at the end");
      free(blk[i]);
    }
  void *p = malloc(1 << 20);
  if (!p) DIE("malloc(1 MiB) after freeing everything: NULL");
  free(p);
  printf("oom: all ok\n");
  return 0;
}
