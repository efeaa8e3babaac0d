/*
 * cli_layout.c SEED [OPS] — a deterministic random mix of malloc, free,
 * realloc (grow, shrink, to 0), calloc, posix_memalign / aligned_alloc /
 * memalign / valloc and malloc_name on up to 300 live blocks, then
 * write_memory(stderr) (mark 1); then OPS/4 more operations and a second
 * write_memory(stderr) (mark 2); the blocks still live are then freed.
 *
 * Run under `fitalloc run --trace T`: the dumps are what
 * `fitalloc replay T --at-mark N --layout` must reproduce.
 * Nothing else is printed before the dumps, so the dumps are the only
 * stderr output.
 */
#define _GNU_SOURCE
#include <allocator.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#pragma weak malloc_name
#pragma weak write_memory

#define SLOTS 300

static uint64_t state;

static uint64_t rnd(void) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

/* Mostly small sizes, sometimes a few KiB, rarely tens of KiB. */
static size_t size(void) {
    uint64_t r = rnd() % 100;
    if (r < 70) return rnd() % 256;
    if (r < 95) return 256 + rnd() % 4096;
    return 4096 + rnd() % 40000;
}

static void *slot[SLOTS];

static void fill(void *p, size_t n) {
    if (p && n) memset(p, 0x5c, n);
}

static void step(void) {
    int i = (int)(rnd() % SLOTS);
    void *p = slot[i];
    uint64_t op = rnd() % 100;
    if (p && op < 40) {
        free(p);
        slot[i] = NULL;
        return;
    }
    if (p && op < 60) {
        size_t n = op < 57 ? size() : 0;
        void *q = realloc(p, n);
        if (n == 0) {
            slot[i] = NULL; /* realloc(p, 0) frees p (glibc behaviour) */
            free(q);
        } else if (q) {
            slot[i] = q;
            fill(q, n);
        }
        return;
    }
    if (p) {
        free(p);
    }
    size_t n = size();
    char name[32];
    switch (rnd() % 8) {
    case 0: {
        size_t count = 1 + rnd() % 8;
        p = calloc(count, n / 8 + 1);
        n = count * (n / 8 + 1);
        break;
    }
    case 1: {
        void *q = NULL;
        size_t a = (size_t)32 << (rnd() % 6);
        if (posix_memalign(&q, a, n) != 0) q = NULL;
        p = q;
        break;
    }
    case 2:
        p = aligned_alloc(64, (n + 63) / 64 * 64);
        break;
    case 3:
        p = rnd() % 4 ? memalign(128, n) : valloc(n);
        break;
    case 4:
        snprintf(name, sizeof name, "block %d of %llu", i, (unsigned long long)(rnd() % 1000));
        p = malloc_name ? malloc_name(n, name) : malloc(n);
        break;
    default:
        p = malloc(n);
    }
    fill(p, n);
    slot[i] = p;
}

int main(int argc, char **argv) {
    if (argc < 2 || !write_memory) {
        fputs("usage: cli_layout SEED [OPS] (under LD_PRELOAD=allocator.so)\n", stderr);
        return 2;
    }
    state = strtoull(argv[1], NULL, 10) * 0x9E3779B97F4A7C15ull + 1;
    long ops = argc > 2 ? atol(argv[2]) : 4000;
    for (long k = 0; k < ops; k++) step();
    write_memory(stderr);
    for (long k = 0; k < ops / 4; k++) step();
    write_memory(stderr);
    for (int i = 0; i < SLOTS; i++) free(slot[i]);
    return 0;
}
