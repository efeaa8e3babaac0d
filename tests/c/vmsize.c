/*
 * Memory goes back to the operating system (SPEC §2 "Unmap", and its bound on
 * the span cache: "a test allocates and frees 20 MB blocks 50 times and
 * expects VmSize growth under 10 MB"). Usage: vmsize
 *
 * VmSize and VmRSS come from /proc/self/status (read without malloc). Parts:
 *  same     malloc(20 MB) / free, 50 times; also calloc and a touched block
 *  mixed    50 rounds of 6 blocks of 1..20 MB, freed in a shuffled order
 *  realloc  10 rounds of one block grown by realloc from 1 MB to 20 MB
 *  rss      50 rounds of malloc(20 MB) + memset + free: VmRSS
 *  steady   50 rounds of 10 blocks of up to 20 MB, all freed: the same
 *           VmSize after every round
 *  headers  32 blocks of 16 MB held but never touched by the program, half
 *           of them shrunk by realloc to 1 MB (a free block's header then
 *           lies 1 MB in), each followed by a small allocation (which the
 *           policy may carve from that free block): the allocator writes
 *           only headers there, so VmRSS grows by a few pages per block,
 *           not by a 2 MiB transparent huge page each
 *           (at most 4 MB for the 32; 33-66 MB before this was fixed, on a
 *           kernel that offers transparent huge pages)
 * Limits: from after the first round to after the last, VmSize and VmRSS
 * grow by at most 10 MB; after each part frees everything, VmSize is within
 * 10 MB of its value before the part's first allocation. While a block is
 * held, the numbers must show it (so the measurement itself can fail).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MB (1024L * 1024L)
#define LIMIT_KB (10L * 1024L) /* 10 MB */

static int failed;

static long status_kb(const char *key) {
  char buf[8192];
  int fd = open("/proc/self/status", O_RDONLY);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  size_t k = strlen(key);
  for (char *p = buf; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
    if (!strncmp(p, key, k) && p[k] == ':') return atol(p + k + 1);
  return -1;
}
static long vm(void) { return status_kb("VmSize"); }
static long rss(void) { return status_kb("VmRSS"); }

static void check(int ok, const char *fmt, long a, long b) {
  printf("%s ", ok ? "ok  " : "FAIL");
  printf(fmt, a, b);
  printf("\n");
  if (!ok) failed++;
}

static void *xmalloc(size_t n) {
  void *p = malloc(n);
  if (!p) {
    printf("FAIL malloc(%zu) returned NULL\n", n);
    exit(1);
  }
  return p;
}

/* Keeps the compiler from eliding a malloc/memset/free sequence. */
#define USE(p) __asm__ volatile("" : : "r"(p) : "memory")

static uint64_t rng = 0x243F6A8885A308D3ULL;
static uint64_t next(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

/* Checks growth between the first and the last round, and the return to the
 * level before the part. */
static void judge(const char *part, const char *what, long before, long first, long last) {
  char fmt[256];
  snprintf(fmt, sizeof fmt, "%s: %s after round 1 %%ld kB, after the last round %%ld kB (growth under 10 MB)", part, what);
  check(last - first <= LIMIT_KB, fmt, first, last);
  snprintf(fmt, sizeof fmt, "%s: %s before the first allocation %%ld kB, after freeing everything %%ld kB (back within 10 MB)", part, what);
  check(last - before <= LIMIT_KB, fmt, before, last);
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  const size_t big = 20 * MB;

  /* same: 20 MB blocks, 50 times; the block held must show in VmSize. */
  long before = vm(), first = 0, held = 0;
  for (int r = 0; r < 50; r++) {
    char *p = r % 3 == 1 ? calloc(1, big) : xmalloc(big);
    if (!p) exit(1);
    if (r % 3 == 2) memset(p, 0x5A, big);
    USE(p);
    if (r == 0) held = vm();
    free(p);
    if (r == 0) first = vm();
  }
  check(held - before >= 20 * 1024, "same: VmSize with a 20 MB block held grew by %ld kB (>= %ld kB)",
        held - before, 20 * 1024);
  judge("same", "VmSize", before, first, vm());

  /* mixed: six blocks of 1..20 MB per round, freed in a shuffled order */
  before = vm();
  for (int r = 0; r < 50; r++) {
    void *p[6];
    for (int i = 0; i < 6; i++) {
      size_t n = MB + next() % (19 * MB);
      p[i] = xmalloc(n);
      ((char *)p[i])[0] = 1;
      ((char *)p[i])[n - 1] = 1;
      USE(p[i]);
    }
    for (int i = 5; i > 0; i--) {
      int j = (int)(next() % (uint64_t)(i + 1));
      void *t = p[i];
      p[i] = p[j];
      p[j] = t;
    }
    for (int i = 0; i < 6; i++) free(p[i]);
    if (r == 0) first = vm();
  }
  judge("mixed", "VmSize", before, first, vm());

  /* realloc: grow one block from 1 MB to 20 MB in 1 MB steps */
  before = vm();
  for (int r = 0; r < 10; r++) {
    char *p = xmalloc(MB);
    memset(p, 7, 64);
    for (size_t n = 2 * MB; n <= big; n += MB) {
      char *q = realloc(p, n);
      if (!q || q[63] != 7) {
        printf("FAIL realloc to %zu\n", n);
        exit(1);
      }
      p = q;
    }
    free(p);
    if (r == 0) first = vm();
  }
  judge("realloc", "VmSize", before, first, vm());

  /* rss: a touched 20 MB block, 50 times */
  long rbefore = rss(), rfirst = 0, rheld = 0;
  before = vm();
  for (int r = 0; r < 50; r++) {
    char *p = xmalloc(big);
    memset(p, r, big);
    USE(p);
    if (r == 0) rheld = rss();
    free(p);
    if (r == 0) {
      rfirst = rss();
      first = vm();
    }
  }
  /* Up to 8 MiB of the block may be pages the span cache kept resident
   * (SPEC §2's cache, reused without faulting them in again). */
  check(rheld - rbefore >= 11 * 1024, "rss: VmRSS with a touched 20 MB block held grew by %ld kB (>= %ld kB)",
        rheld - rbefore, 11 * 1024);
  judge("rss", "VmRSS", rbefore, rfirst, rss());
  judge("rss", "VmSize", before, first, vm());

  /* steady: the course's free test: 10 blocks of up to 20 MB, all freed,
   * 50 times; VmSize after every round is round 1's: never below it (the
   * course's test subtracts the numbers as unsigned) and above it by at most
   * 128 kB: 16 kB page-map leaves for windows of address space that small
   * regions reach for the first time (see crates/fitalloc/src/registry.rs).
   * Where the kernel places the mappings (ASLR) decides how many: in 150
   * runs per policy (and 500 more under next_fit) VmSize grew 16-36 kB, and
   * 68 kB in about one run in 200 (before and after the span-cache
   * rewrite), which the old 64 kB limit failed. A leak would grow with the
   * 50 rounds, far past this. */
  long steady = 0, worst = 0, below = 0;
  for (int r = 0; r < 50; r++) {
    void *p[10];
    for (int i = 0; i < 10; i++) {
      size_t n = 1 + next() % (20 * MB);
      p[i] = xmalloc(n);
      ((char *)p[i])[n - 1] = 1;
      USE(p[i]);
    }
    for (int i = 0; i < 10; i++) free(p[i]);
    long now = vm();
    if (r == 0) steady = now;
    if (now - steady > worst) worst = now - steady;
    if (steady - now > below) below = steady - now;
  }
  check(worst <= 128, "steady: VmSize after every round at most %ld kB above round 1's (%ld kB)", worst,
        steady);
  check(below <= 8, "steady: VmSize after every round at most %ld kB below round 1's (%ld kB)", below,
        steady);

  /* headers: blocks the program does not touch (see the top) */
  enum { HELD = 32 };
  void *kept[HELD], *small[HELD];
  long hbefore = rss();
  for (int i = 0; i < HELD; i++) {
    kept[i] = xmalloc(16 * MB);
    small[i] = NULL;
    if (i % 2) {
      void *q = realloc(kept[i], MB);
      if (!q) {
        printf("FAIL realloc to 1 MB\n");
        return 1;
      }
      kept[i] = q;
      small[i] = xmalloc(64);
    }
    USE(kept[i]);
  }
  long hgrowth = rss() - hbefore;
  check(hgrowth <= 4 * 1024, "headers: VmRSS with 32 untouched 16 MB blocks held grew by %ld kB (<= %ld kB)",
        hgrowth, 4 * 1024);
  for (int i = 0; i < HELD; i++) {
    free(small[i]);
    free(kept[i]);
  }

  printf("vmsize: %s\n", failed ? "FAILED" : "all ok");
  return failed ? 1 : 0;
}
