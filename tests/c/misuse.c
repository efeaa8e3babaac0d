/*
 * misuse.c MODE — commits one misuse (SPEC §6, ARCHITECTURE §4).
 *
 * Before the misuse it prints "ptr 0x..." on stdout: the pointer it is about
 * to pass to free/realloc/malloc_usable_size. fitalloc must then print exactly
 * one line "fitalloc: <what> at <that pointer>" on stderr and abort. If the
 * call returns, the program prints "survived" and exits with status 0 (the
 * test fails on that). The program itself never writes to stderr.
 *
 * Built with -fno-builtin so the compiler keeps every malloc, free and store.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h> /* snprintf only */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#pragma GCC diagnostic ignored "-Wuse-after-free"
#pragma GCC diagnostic ignored "-Wfree-nonheap-object"

/* from allocator.so, preloaded */
void *malloc_name(size_t size, const char *name) __attribute__((weak));

static char static_array[256] __attribute__((aligned(64)));
static void *volatile sink;

/* Output goes through write(2): stdio would allocate and change the heap. */
static void say(const char *s) {
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(1, s, n);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

static void announce(const void *p) {
    char line[64];
    snprintf(line, sizeof line, "ptr %p\n", p);
    say(line);
}

/* The remote cases: a worker thread frees main's block (a free into
 * another thread's arena, which waits on that arena's list while main makes
 * no call), then misuses it from the same thread. */
static char *remote_block;
static const char *remote_what;

static void *remote_worker(void *arg) {
    (void)arg;
    free(remote_block);
    announce(remote_block);
    if (!strcmp(remote_what, "free")) free(remote_block);
    else if (!strcmp(remote_what, "realloc")) sink = realloc(remote_block, 200);
    else if (!strcmp(remote_what, "usable")) sink = (void *)malloc_usable_size(remote_block);
    return NULL;
}

static void remote_misuse(const char *what) {
    pthread_t t;
    remote_block = malloc(100);
    remote_what = what;
    if (pthread_create(&t, NULL, remote_worker, NULL)) exit(2);
    pthread_join(t, NULL);
}

static void survived(void) {
    say("survived\n");
    exit(0);
}

/* Two blocks, b directly after a in memory; spares are freed. */
static void adjacent_pair(size_t na, size_t nb, char **pa, char **pb) {
    static void *spare[4096];
    int n = 0;
    while (n + 2 <= 4096) {
        char *a = malloc(na), *b = malloc(nb);
        if (b - 16 == a + malloc_usable_size(a)) {
            *pa = a;
            *pb = b;
            while (n > 0) free(spare[--n]);
            return;
        }
        spare[n++] = a;
        spare[n++] = b;
    }
    say("no adjacent pair\n");
    exit(3);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        say("usage: misuse MODE\n");
        return 2;
    }
    const char *m = argv[1];
    char stack_array[128] __attribute__((aligned(64)));
    memset(stack_array, 0, sizeof stack_array);
    sink = stack_array;

    /* Something live first, so that small blocks share a mapped region. */
    char *keep = malloc(200);
    memset(keep, 1, 200);
    sink = keep;

    if (!strcmp(m, "double-free")) {
        char *p = malloc(100);
        free(p);
        announce(p);
        free(p);
    } else if (!strcmp(m, "double-free-merged-prev")) {
        /* b merges into free a; then b is freed again */
        char *a, *b;
        adjacent_pair(100, 100, &a, &b);
        char *guard = malloc(32);
        sink = guard;
        free(a);
        free(b);
        announce(b);
        free(b);
    } else if (!strcmp(m, "double-free-merged-next")) {
        /* free b absorbs free c; then b is freed again */
        char *b, *c;
        adjacent_pair(100, 100, &b, &c);
        char *guard = malloc(32);
        sink = guard;
        free(c);
        free(b);
        announce(b);
        free(b);
    } else if (!strcmp(m, "double-free-lone-large")) {
        /* a block alone in its region: the region goes away at the first free */
        char *p = malloc(4 << 20);
        memset(p, 2, 4 << 20);
        free(p);
        announce(p);
        free(p);
    } else if (!strcmp(m, "double-free-lone-small")) {
        /* the only block of the heap: keep is freed, then p alone, twice */
        free(keep);
        char *p = malloc(100);
        free(p);
        announce(p);
        free(p);
    } else if (!strcmp(m, "double-free-region-reused")) {
        /* b is the last block of its region to be freed: the region goes
         * back to the span cache with b's header as it was. A larger
         * request then takes that span (merged with a's) and the region id;
         * b's old header lies in its free tail, still in place when b is
         * freed again (found by review: accepted, then the
         * heap was corrupted, or a crash under best fit) */
        free(keep); /* an empty heap: a and x open a region each */
        char *a = malloc(4000), *x = malloc(3000), *b = malloc(500);
        free(a);
        free(x);
        free(b);
        char *q = malloc(5000); /* a region of two pages: q, then a free tail */
        memset(q, 0x51, 100);
        sink = q;
        if (b < q || b >= q - 16 + 2 * sysconf(_SC_PAGESIZE)) {
            say("precondition: the new region does not cover the freed block\n");
            return 1;
        }
        announce(b);
        free(b);
    } else if (!strncmp(m, "double-free-under-name-", 23)) {
        /* x (a 32-byte block) merges into the named free block before it
         * as its last part: the merged block's name, kept in its last 32
         * bytes, is written over x's stale header */
        if (!malloc_name) exit(2);
        char *p = malloc_name(100, "first");
        char *x = malloc(8);
        char *g = malloc(8);
        sink = g;
        if (x - 16 != p + malloc_usable_size(p) + 32) exit(2); /* p's name area, then x */
        free(p);
        free(x);
        announce(x);
        if (!strcmp(m + 23, "free")) free(x);
        else if (!strcmp(m + 23, "realloc")) sink = realloc(x, 200);
        else return 2;
    } else if (!strncmp(m, "remote-", 7)) {
        remote_misuse(m + 7);
    } else if (!strcmp(m, "realloc-after-free")) {
        char *p = malloc(100);
        free(p);
        announce(p);
        sink = realloc(p, 200);
    } else if (!strcmp(m, "free-stack")) {
        announce(stack_array);
        free(stack_array);
    } else if (!strcmp(m, "free-static")) {
        announce(static_array);
        free(static_array);
    } else if (!strcmp(m, "free-mmap")) {
        char *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        announce(page + 16);
        free(page + 16);
    } else if (!strncmp(m, "into-free-tail-", 15)) {
        /* p + 2000 lies in the free rest of p's region (never returned by
         * malloc, no header ever there) */
        char *p = malloc(100);
        char *q = p + 2000;
        announce(q);
        if (!strcmp(m + 15, "free")) free(q);
        else if (!strcmp(m + 15, "realloc")) sink = realloc(q, 10);
        else if (!strcmp(m + 15, "usable")) sink = (void *)malloc_usable_size(q);
        else return 2;
    } else if (!strcmp(m, "free-interior-16")) {
        char *p = malloc(100);
        memset(p, 0, 100);
        announce(p + 16);
        free(p + 16);
    } else if (!strcmp(m, "free-interior-16-pattern")) {
        char *p = malloc(100);
        for (int i = 0; i < 100; i++) p[i] = (char)(i * 37 + 1);
        announce(p + 16);
        free(p + 16);
    } else if (!strcmp(m, "free-interior-8")) {
        char *p = malloc(100);
        announce(p + 8);
        free(p + 8);
    } else if (!strcmp(m, "free-interior-large")) {
        char *p = malloc(1 << 20);
        memset(p, 0, 1 << 20);
        announce(p + 4096);
        free(p + 4096);
    } else if (!strcmp(m, "realloc-stack")) {
        announce(stack_array);
        sink = realloc(stack_array, 10);
    } else if (!strcmp(m, "realloc-static")) {
        announce(static_array);
        sink = realloc(static_array, 1000);
    } else if (!strcmp(m, "realloc-interior")) {
        char *p = malloc(100);
        memset(p, 0, 100);
        announce(p + 32);
        sink = realloc(p + 32, 1000);
    } else if (!strcmp(m, "corrupt-header")) {
        char *p = malloc(100);
        volatile unsigned char *h = (volatile unsigned char *)p - 16;
        for (int i = 0; i < 16; i++) h[i] = 0x41;
        announce(p);
        free(p);
    } else if (!strcmp(m, "corrupt-header-zero")) {
        char *p = malloc(100);
        volatile unsigned char *h = (volatile unsigned char *)p - 16;
        for (int i = 0; i < 16; i++) h[i] = 0;
        announce(p);
        free(p);
    } else if (!strcmp(m, "corrupt-header-bit")) {
        char *p = malloc(100);
        volatile unsigned char *h = (volatile unsigned char *)p - 16;
        h[8] ^= 1; /* one bit of one field */
        announce(p);
        free(p);
    } else if (!strcmp(m, "corrupt-header-overflow")) {
        /* the previous block's user overruns its usable bytes into p's header */
        char *a, *p;
        adjacent_pair(24, 100, &a, &p);
        memset(a, 'x', malloc_usable_size(a) + 16);
        announce(p);
        free(p);
    } else if (!strcmp(m, "corrupt-prev-mark")) {
        /* the top bit of p's previous-size field set (the block before is
         * in use); the field is outside the keyed check */
        char *a, *p;
        adjacent_pair(24, 100, &a, &p);
        volatile unsigned char *h = (volatile unsigned char *)p - 16;
        h[3] |= 0x80; /* the top bit of the previous block's size field */
        announce(p);
        free(p);
    } else if (!strcmp(m, "corrupt-prev-size")) {
        /* the block before p is free (free would merge with it), and p's
         * previous-size field is one unit off */
        char *a, *p;
        adjacent_pair(100, 100, &a, &p);
        free(a);
        volatile unsigned char *h = (volatile unsigned char *)p - 16;
        h[0] += 1; /* one unit (16 bytes) more */
        announce(p);
        free(p);
    } else if (!strcmp(m, "corrupt-header-realloc")) {
        char *p = malloc(100);
        volatile unsigned char *h = (volatile unsigned char *)p - 16;
        for (int i = 0; i < 16; i++) h[i] = 0x41;
        announce(p);
        sink = realloc(p, 1000);
    } else if (!strcmp(m, "usable-static")) {
        announce(static_array);
        sink = (void *)(uintptr_t)malloc_usable_size(static_array);
    } else if (!strcmp(m, "usable-stack")) {
        announce(stack_array);
        sink = (void *)(uintptr_t)malloc_usable_size(stack_array);
    } else {
        say("unknown mode\n");
        return 2;
    }
    survived();
    return 0;
}
