/*
 * cli_leak.c MODE — the leak report and the statistics (ALLOCATOR_LEAK_CHECK,
 * ALLOCATOR_STATS). No stdio: the program's only allocations are its own, and
 * it writes what the reports must say to stdout with write(2):
 *
 *   leak   leaks 3 blocks (one named), frees everything else; prints
 *          "LEAK <block start> <block end> <size> '<name>'" per leaked block
 *          and "TOTAL <blocks> <bytes>"
 *   stats  a known number of calls of each function, everything freed at the
 *          end; prints "CALLS malloc=.. free=.. ..." (the report's order) and
 *          "LIVE <bytes>": block bytes in use at once at one point
 */
#define _GNU_SOURCE
#include <allocator.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#pragma weak malloc_name

static void out(const char *s) {
    if (write(1, s, strlen(s)) < 0) _exit(3);
}

/* The block size of a request (ARCHITECTURE.md §3). */
static size_t need(size_t n, int named) {
    size_t b = 16 + (n + 15) / 16 * 16 + (named ? 32 : 0);
    return b < 32 ? 32 : b;
}

static void *volatile sink;

static int leak(void) {
    char line[200];
    void *a = malloc(100);
    void *b = malloc_name(200, "leaked config");
    void *c = calloc(10, 30);
    void *d = malloc(5000);
    void *e = malloc(64);
    e = realloc(e, 4000);
    free(d);
    free(e);
    if (!a || !b || !c) return 1;
    struct { void *p; size_t size; const char *name; } l[3] = {
        {a, need(100, 0), ""}, {b, need(200, 1), "leaked config"}, {c, need(300, 0), ""}};
    size_t total = 0;
    for (int i = 0; i < 3; i++) {
        char *start = (char *)l[i].p - 16;
        snprintf(line, sizeof line, "LEAK %p %p %zu '%s'\n", (void *)start,
                 (void *)(start + l[i].size), l[i].size, l[i].name);
        out(line);
        total += l[i].size;
    }
    snprintf(line, sizeof line, "TOTAL 3 %zu\n", total);
    out(line);
    sink = a;
    return 0;
}

static int stats(void) {
    enum { N = 100 };
    void *p[N];
    unsigned long malloc_n = 0, free_n = 0, calloc_n = 0, realloc_n = 0, reallocarray_n = 0,
                  posix_memalign_n = 0, aligned_alloc_n = 0, memalign_n = 0, valloc_n = 0,
                  pvalloc_n = 0, usable_n = 0, name_n = 0;
    size_t live = 0;
    for (int i = 0; i < N; i++) {
        p[i] = malloc(1000 + i);
        malloc_n++;
        live += need(1000 + i, 0);
    }
    for (int i = 0; i < N; i += 2) {
        free(p[i]);
        free_n++;
    }
    for (int i = 0; i < N; i += 2) {
        p[i] = calloc(3, 7 + i);
        calloc_n++;
    }
    for (int i = 1; i < N; i += 4) {
        p[i] = realloc(p[i], 3000);
        realloc_n++;
    }
    for (int i = 3; i < N; i += 8) {
        p[i] = reallocarray(p[i], 10, 20);
        reallocarray_n++;
    }
    for (int i = 0; i < 10; i += 2) {
        free(p[i]);
        free_n++;
        void *q = NULL;
        if (posix_memalign(&q, 64, 100) != 0) return 1;
        p[i] = q;
        posix_memalign_n++;
    }
    for (int i = 10; i < 16; i += 2) {
        free(p[i]);
        free_n++;
        p[i] = aligned_alloc(256, 512);
        aligned_alloc_n++;
    }
    free(p[16]);
    free_n++;
    p[16] = memalign(128, 10);
    memalign_n++;
    free(p[18]);
    free_n++;
    p[18] = valloc(100);
    valloc_n++;
    free(p[20]);
    free_n++;
    p[20] = pvalloc(100);
    pvalloc_n++;
    for (int i = 0; i < 7; i++) {
        sink = (void *)malloc_usable_size(p[1]);
        usable_n++;
    }
    free(p[22]);
    free_n++;
    p[22] = malloc_name(50, "named");
    name_n++;
    for (int i = 0; i < N; i++) {
        free(p[i]);
        free_n++;
    }
    char line[400];
    snprintf(line, sizeof line,
             "CALLS malloc=%lu free=%lu calloc=%lu realloc=%lu reallocarray=%lu "
             "posix_memalign=%lu aligned_alloc=%lu memalign=%lu valloc=%lu pvalloc=%lu "
             "malloc_usable_size=%lu malloc_name=%lu\nLIVE %zu\n",
             malloc_n, free_n, calloc_n, realloc_n, reallocarray_n, posix_memalign_n,
             aligned_alloc_n, memalign_n, valloc_n, pvalloc_n, usable_n, name_n, live);
    out(line);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || !malloc_name) return 2;
    if (!strcmp(argv[1], "leak")) return leak();
    if (!strcmp(argv[1], "stats")) return stats();
    return 2;
}
