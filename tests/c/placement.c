/*
 * Placement policies, split and merge, checked from pointer differences.
 * Usage: placement POLICY   (run with ALLOCATOR_ALGORITHM=POLICY, LD_PRELOAD)
 *
 * Each phase starts from an empty heap (the program allocates nothing before
 * main and uses no stdio until the end), so its first allocation maps a fresh
 * region of one page and lands at the region's start. The phase then
 * allocates blocks of chosen sizes that tile the region from its start, plus
 * a filler that takes exactly the rest of the page, and checks it: every
 * block right after the previous one, and a probe allocation landing outside
 * the region (so no free tail is left). Then it frees chosen blocks to make
 * holes separated by used blocks, makes requests, and compares each returned
 * pointer with the answer worked out by hand from ARCHITECTURE.md §3:
 *   need(n) = max(32, 16 + round16(n)); split when the rest is >= 32;
 *   next fit: the rover is the position of the last chosen block.
 * The tables below give, per policy, the expected block as (hole, offset).
 * Block sizes in the comments are whole blocks (header included); a request
 * for a block of size N is malloc(N - 16).
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>
#include <unistd.h>

#include "allocator.h"
#pragma weak write_memory

enum { FIRST, NEXT, BEST, WORST };
static int pol;
static size_t page;
static int failed, checks;
static char msgs[16384];
static size_t msglen;

/* Records a line without allocating (printed at the end). */
static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(msgs + msglen, sizeof msgs - msglen, fmt, ap);
  va_end(ap);
  if (n > 0) msglen += (size_t)n < sizeof msgs - msglen ? (size_t)n : sizeof msgs - msglen - 1;
}

static void *need(size_t n) { /* a block of exactly n bytes (n >= 32, 16 | n) */
  void *p = malloc(n - 16);
  if (!p) note("malloc(%zu) failed\n", n - 16);
  return p;
}

/* The block start of a pointer malloc returned. */
static char *p_block(void *p) { return (char *)((uintptr_t)p - 16); }

#define MAXB 16
struct region {
  const char *phase;
  char *base;                /* region start == first block start */
  size_t off[MAXB], size[MAXB];
  void *ptr[MAXB];           /* what malloc returned (block start + 16) */
  const char *name[MAXB];
  int n;
  void *filler;
};

/* Offset of a returned pointer's block from the region base, or -1 when the
 * pointer is outside the region. */
static long where(struct region *r, void *p) {
  char *b = p_block(p);
  if (!p || b < r->base || b >= r->base + page) return -1;
  return (long)(b - r->base);
}

static void describe(struct region *r, long off, char *out, size_t len) {
  if (off < 0) {
    snprintf(out, len, "outside the region");
    return;
  }
  for (int i = r->n - 1; i >= 0; i--)
    if ((size_t)off >= r->off[i]) {
      snprintf(out, len, "%s+%zu (offset %ld)", r->name[i], (size_t)off - r->off[i], off);
      return;
    }
}

/* expect: the block of p must start at block `hole` + `plus` (hole = -1:
 * outside the region). */
static void expect(struct region *r, const char *what, void *p, int hole, size_t plus) {
  checks++;
  long want = hole < 0 ? -1 : (long)(r->off[hole] + plus);
  long got = where(r, p);
  char a[96], b[96];
  describe(r, want, a, sizeof a);
  describe(r, got, b, sizeof b);
  if (want != got) {
    failed++;
    note("FAIL %s: %s: expected %s, got %s\n", r->phase, what, a, b);
  } else {
    note("ok   %s: %s -> %s\n", r->phase, what, b);
  }
}

/* Allocates blocks of the given sizes, tiling a fresh one-page region, then
 * a filler block for the rest of the page; checks the layout. */
static int build(struct region *r, const char *phase, int n, const size_t *sizes, const char **names) {
  size_t sum = 0;
  memset(r, 0, sizeof *r);
  r->phase = phase;
  r->n = n;
  for (int i = 0; i < n; i++) {
    char *p = need(sizes[i]);
    if (!p) return -1;
    r->ptr[i] = p;
    r->off[i] = sum;
    r->size[i] = sizes[i];
    r->name[i] = names[i];
    sum += sizes[i];
  }
  if (sum + 32 > page) {
    note("%s: layout of %zu bytes does not fit a page of %zu\n", phase, sum, page);
    return -1;
  }
  r->base = p_block(r->ptr[0]);
  if ((uintptr_t)r->base % page != 0) {
    note("%s: precondition: the first block %p is not at a region start (the heap was "
         "not empty, or regions are not page aligned)\n", phase, (void *)r->base);
    return -1;
  }
  for (int i = 1; i < n; i++)
    if (p_block(r->ptr[i]) != r->base + r->off[i]) {
      note("%s: precondition: block %s at %p, expected right after %s at %p\n", phase, names[i],
           r->ptr[i], names[i - 1], (void *)(r->base + r->off[i]));
      return -1;
    }
  r->filler = need(page - sum);
  if (p_block(r->filler) != r->base + sum) {
    note("%s: precondition: the filler (%zu bytes) is at %p, expected %p\n", phase, page - sum,
         r->filler, (void *)(r->base + sum));
    return -1;
  }
  /* The page is now full: a new allocation cannot land in it. */
  void *probe = need(32);
  if (where(r, probe) != -1) {
    note("%s: precondition: the region has room after the filler (probe at offset %ld): "
         "the region is bigger than one page\n", phase, where(r, probe));
    return -1;
  }
  free(probe);
  return 0;
}

/* ---------------------------------------------------------------------- */
/* Phase 1: five holes of 128, 160, 256, 112, 96 bytes in that order.       */
static void phase_policies(void) {
  static const size_t sz[] = {1024, 128, 48, 160, 48, 256, 48, 112, 48, 96, 48};
  static const char *nm[] = {"A", "H1", "U1", "H2", "U2", "H3", "U3", "H4", "U4", "H5", "U5"};
  enum { A, H1, U1, H2, U2, H3, U3, H4, U4, H5, U5 };
  struct region r;
  if (build(&r, "policies", 11, sz, nm)) {
    failed++;
    return;
  }
  for (int i = H1; i <= H5; i += 2) free(r.ptr[i]);
  /* free: H1 128, H2 160, H3 256, H4 112, H5 96 */

  /* 224 fits H3 only: every policy takes it; 32 left -> split (R3 at H3+224).
   * next fit: rover := H3. */
  void *p1 = need(224);
  expect(&r, "224 (fits only the 256 hole)", p1, H3, 0);

  /* 96 fits H1 128, H2 160, H4 112, H5 96:
   * first -> H1 (split, 32 left at H1+96); best -> H5 (exact);
   * worst -> H2 (largest; 64 left at H2+96);
   * next -> first at/after H3: R3 32 too small, H4 112 (16 left: no split). */
  static const int e2[] = {[FIRST] = H1, [NEXT] = H4, [BEST] = H5, [WORST] = H2};
  void *p2 = need(96);
  expect(&r, "96 (fits 128,160,112,96; first/next/best/worst differ)", p2, e2[pol], 0);

  /* 128: first: H1+96 32, H2 160 -> H2 (32 left at H2+128);
   * best: H1 128 exact; worst: H1 128 is the largest left;
   * next: nothing at/after H4 fits (H5 96) -> wraps to the first: H1. */
  static const int e3[] = {[FIRST] = H2, [NEXT] = H1, [BEST] = H1, [WORST] = H1};
  void *p3 = need(128);
  expect(&r, "128 (next fit wraps around)", p3, e3[pol], 0);

  /* free p3: first: H2 merges with its 32-byte tail -> 160 again; others: H1
   * 128 free again. Then 96:
   * first: H2 (160); best: H4 112 (smallest >= 96 of 128,160,112);
   * worst: H1 128 (largest of 128,64,32,112,96);
   * next: rover is H1 -> H1 itself ("at or after"). */
  free(p3);
  static const int e4[] = {[FIRST] = H2, [NEXT] = H1, [BEST] = H4, [WORST] = H1};
  void *p4 = need(96);
  expect(&r, "96 after freeing the 128 (next fit: at the rover)", p4, e4[pol], 0);

  /* 32: first: the 32 left after p2 at H1+96; best: the 32 left after p1 at
   * H3+224 (smallest); worst: H4 112 (largest); next: at/after H1: H1+96
   * (the split remainder of p4). */
  static const int e5[] = {[FIRST] = H1, [NEXT] = H1, [BEST] = H3, [WORST] = H4};
  static const size_t o5[] = {[FIRST] = 96, [NEXT] = 96, [BEST] = 224, [WORST] = 0};
  void *p5 = need(32);
  expect(&r, "32 (lands in a split remainder)", p5, e5[pol], o5[pol]);

  free(p1);
  free(p2);
  free(p4);
  free(p5);
  for (int i = A; i <= U5; i += 2) free(r.ptr[i]);
  free(r.filler);
}

/* ---------------------------------------------------------------------- */
/* Phase 2: ties. Holes T1 64, T2 128, T3 64, T4 128.                       */
static void phase_ties(void) {
  static const size_t sz[] = {64, 48, 128, 48, 64, 48, 128, 48};
  static const char *nm[] = {"T1", "V1", "T2", "V2", "T3", "V3", "T4", "V4"};
  enum { T1, V1, T2, V2, T3, V3, T4, V4 };
  struct region r;
  if (build(&r, "ties", 8, sz, nm)) {
    failed++;
    return;
  }
  for (int i = T1; i <= T4; i += 2) free(r.ptr[i]);
  /* 64: first T1; best: T1/T3 tie -> T1; worst: T2/T4 tie -> T2 (64 left
   * at T2+64); next: the rover is past the region (the probe) -> wraps: T1. */
  static const int e1[] = {[FIRST] = T1, [NEXT] = T1, [BEST] = T1, [WORST] = T2};
  void *q1 = need(64);
  expect(&r, "64 (ties go to the first in list order)", q1, e1[pol], 0);
  /* 64: first: T2 (64 left at T2+64); best: T3 (64, the remaining tie);
   * worst: T4 (128 > T1 64, T2+64 64, T3 64); next: after T1 -> T2. */
  static const int e2[] = {[FIRST] = T2, [NEXT] = T2, [BEST] = T3, [WORST] = T4};
  void *q2 = need(64);
  expect(&r, "64 again", q2, e2[pol], 0);
  /* 64: first: T2+64; best: T2 and T4 128 tie -> T2; worst: all 64 (T1,
   * T2+64, T3, T4+64) -> T1; next: at/after T2 -> T2+64. */
  static const int e3[] = {[FIRST] = T2, [NEXT] = T2, [BEST] = T2, [WORST] = T1};
  static const size_t o3[] = {[FIRST] = 64, [NEXT] = 64, [BEST] = 0, [WORST] = 0};
  void *q3 = need(64);
  expect(&r, "64 a third time", q3, e3[pol], o3[pol]);
  free(q1);
  free(q2);
  free(q3);
  for (int i = V1; i <= V4; i += 2) free(r.ptr[i]);
  free(r.filler);
}

/* ---------------------------------------------------------------------- */
/* Phase 3: split and merge (the same for every policy: one candidate).    */
static void phase_split_merge(void) {
  static const size_t sz[] = {512, 48, 128, 128, 128, 48};
  static const char *nm[] = {"S", "W1", "M1", "M2", "M3", "W2"};
  enum { S, W1, M1, M2, M3, W2 };
  struct region r;
  if (build(&r, "split/merge", 6, sz, nm)) {
    failed++;
    return;
  }
  free(r.ptr[S]);
  /* The only free block is S (512). 128 takes its front, 384 stay free right
   * after it, where the next request of exactly 384 lands. */
  void *a = need(128);
  expect(&r, "128 from the 512 hole (front)", a, S, 0);
  void *b = need(384);
  expect(&r, "384: the split remainder right after it", b, S, 128);
  if (malloc_usable_size(b) != 384 - 16) {
    failed++;
    note("FAIL split/merge: usable size of the 384 block is %zu, expected 368\n", malloc_usable_size(b));
  }
  /* free b then a: a merges with its free next neighbour -> 512 at S. */
  free(b);
  free(a);
  void *c = need(512);
  expect(&r, "512 after freeing both halves (merge with next)", c, S, 0);
  free(c);
  /* free a then b: b merges with its free previous neighbour. */
  a = need(256);
  expect(&r, "256 from the 512 hole", a, S, 0);
  b = need(256);
  expect(&r, "256: the remainder right after it", b, S, 256);
  free(a);
  free(b);
  c = need(512);
  expect(&r, "512 after freeing both halves (merge with previous)", c, S, 0);
  /* M1, M3 then M2: M2 merges with both neighbours -> 384 at M1. */
  free(r.ptr[M1]);
  free(r.ptr[M3]);
  free(r.ptr[M2]);
  void *d = need(384);
  expect(&r, "384 after freeing three neighbours (merge both ways)", d, M1, 0);
  free(d);
  /* No split when less than 32 bytes would remain: a 112-byte block asked
   * of a 128-byte hole takes all of it (usable 112, not 96), and the next
   * 32 does not land in the 16 bytes at its end. */
  void *m1 = need(128);
  expect(&r, "128 in the 384 hole", m1, M1, 0);
  void *e = need(128);
  expect(&r, "128 in the 256 rest", e, M2, 0);
  void *m3 = need(128);
  expect(&r, "128: the 128 rest, exactly", m3, M3, 0);
  free(e);
  void *f = need(112);
  expect(&r, "112 in a 128 hole (16 would remain: no split)", f, M2, 0);
  if (malloc_usable_size(f) != 128 - 16) {
    failed++;
    note("FAIL split/merge: usable size of the unsplit block is %zu, expected 112\n", malloc_usable_size(f));
  }
  void *g = need(32);
  expect(&r, "32 does not land in a 16-byte sliver", g, -1, 0);
  free(g);
  free(f);
  free(m1);
  free(m3);
  free(c);
  free(r.ptr[W1]);
  free(r.ptr[W2]);
  free(r.filler);
}

int main(int argc, char **argv) {
  static const char *names[] = {"first_fit", "next_fit", "best_fit", "worst_fit"};
  if (argc != 2) return 2;
  pol = -1;
  for (int i = 0; i < 4; i++)
    if (!strcmp(argv[1], names[i])) pol = i;
  if (pol < 0) return 2;
  page = (size_t)sysconf(_SC_PAGESIZE);

  phase_policies();
  phase_ties();
  phase_split_merge();

  fputs(msgs, stdout);
  printf("placement %s: %d checks, %d failed\n", names[pol], checks, failed);
  if (failed && write_memory) {
    fflush(stdout);
    fputs("heap at the end:\n", stderr);
    write_memory(stderr);
  }
  return failed ? 1 : 0;
}
