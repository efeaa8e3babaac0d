/* (b) fragmentation scaling.
 *
 * Builds a heap with n free holes that no request can use: 2n blocks are
 * allocated alternately as "holes" (16..240 bytes) and "walls" (16..64
 * bytes); then a 64 KiB block (larger than any free block so far, so in
 * fitalloc it opens a region of its own at the end of the list) which is
 * shrunk in place to 512 bytes with realloc, leaving one large free block
 * after it; then every hole is freed. The timed loop allocates 512..1023
 * bytes (larger than every hole), writes it and frees it, so the heap returns
 * to the same state after each step: each allocation must find the one
 * usable free block among n+1. A linear scan of the list costs O(n) per
 * allocation (the usable block comes last); fitalloc's trees O(log n).
 * The bookkeeping arrays come from mmap, not malloc, so that they leave no
 * free space in the heap. Args: n=100000 iters=1000000 seed=2 */
#include "common.h"
#include <sys/mman.h>

static void *map_array(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        fail("mmap", (long)bytes, 0);
    return p;
}

int main(int argc, char **argv)
{
    long n = arg_long(argc, argv, "n", 100000);
    long iters = arg_long(argc, argv, "iters", 1000000);
    uint64_t rng = (uint64_t)arg_long(argc, argv, "seed", 2);
    unsigned char **p = map_array(sizeof(*p) * (size_t)(2 * n));
    uint32_t *sz = map_array(sizeof(*sz) * (size_t)(2 * n));
    uint64_t check = 0;

    for (long i = 0; i < 2 * n; i++) {
        sz[i] = (uint32_t)((i % 2 == 0) ? rng_range(&rng, 16, 240) : rng_range(&rng, 16, 64));
        p[i] = xmalloc(sz[i]);
        memset(p[i], (int)(i & 0xff), sz[i]);
    }
    unsigned char *anchor = xmalloc(65536);
    memset(anchor, 0x5a, 512);
    anchor = realloc(anchor, 512);
    if (!anchor)
        fail("realloc shrink returned NULL", 512, 0);
    for (long i = 0; i < 2 * n; i += 2)
        free(p[i]);
    maybe_dump_heap();

    /* warm-up (also settles next fit's rover), then the timed loop */
    long warm = iters / 10 + 1;
    double t0 = 0;
    for (long k = -warm; k < iters; k++) {
        if (k == 0)
            t0 = now_s();
        size_t s = (size_t)rng_range(&rng, 512, 1023);
        unsigned char *q = xmalloc(s);
        q[0] = (unsigned char)k;
        q[s - 1] = (unsigned char)(k >> 8);
        check += (uint64_t)q[0] + q[s - 1] + s;
        free(q);
    }
    double t1 = now_s();

    for (long i = 1; i < 2 * n; i += 2) {
        if (p[i][0] != (unsigned char)(i & 0xff) || p[i][sz[i] - 1] != (unsigned char)(i & 0xff))
            fail("wall block changed", i, 0);
        free(p[i]);
    }
    for (int i = 0; i < 512; i++)
        if (anchor[i] != 0x5a)
            fail("anchor changed", i, 0);
    free(anchor);
    munmap(p, sizeof(*p) * (size_t)(2 * n));
    munmap(sz, sizeof(*sz) * (size_t)(2 * n));
    printf("METRIC ns_per_alloc %.3f\n", (t1 - t0) * 1e9 / (double)iters);
    printf("CHECK %016llx\n", (unsigned long long)check);
    return 0;
}
