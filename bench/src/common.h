/* Shared helpers for the fitalloc benchmark workloads (the C files in bench/src).
 *
 * Every workload is deterministic for a given set of parameters: it draws
 * sizes from a fixed-seed generator, writes data into each block and verifies
 * it before freeing, and prints a "CHECK <hex>" line that does not depend on
 * addresses or timing, so the harness can compare it across allocators (a
 * broken allocator cannot look fast). Internal measurements are printed as
 * "METRIC <name> <value>" lines. Parameters are given as name=value
 * arguments. */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* splitmix64: small, fast and good enough for choosing sizes. */
static inline uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* uniform in [lo, hi] */
static inline uint64_t rng_range(uint64_t *s, uint64_t lo, uint64_t hi)
{
    return lo + rng_next(s) % (hi - lo + 1);
}

static inline uint64_t mix64(uint64_t x)
{
    uint64_t s = x;
    return rng_next(&s);
}

static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline void fail(const char *what, long a, long b)
{
    fprintf(stderr, "BENCH FAILURE: %s (%ld, %ld)\n", what, a, b);
    fflush(stderr);
    exit(3);
}

static inline void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p)
        fail("malloc returned NULL", (long)n, 0);
    return p;
}

/* arg_long(argc, argv, "ops", 1000): the value of "ops=N" among the
 * arguments, or the default. Accepts 1e5-style numbers. */
static inline long arg_long(int argc, char **argv, const char *name, long def)
{
    size_t len = strlen(name);
    for (int i = 1; i < argc; i++)
        if (strncmp(argv[i], name, len) == 0 && argv[i][len] == '=')
            return (long)strtod(argv[i] + len + 1, NULL);
    return def;
}

static inline const char *arg_str(int argc, char **argv, const char *name, const char *def)
{
    size_t len = strlen(name);
    for (int i = 1; i < argc; i++)
        if (strncmp(argv[i], name, len) == 0 && argv[i][len] == '=')
            return argv[i] + len + 1;
    return def;
}

/* With BENCH_DUMP=1 and fitalloc preloaded, print the heap (debugging aid). */
static inline void maybe_dump_heap(void)
{
    const char *d = getenv("BENCH_DUMP");
    if (!d || *d != '1')
        return;
    void (*pm)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "print_memory");
    if (pm)
        pm();
    else
        printf("(print_memory not available: not running on fitalloc)\n");
    fflush(stdout);
}

#endif
