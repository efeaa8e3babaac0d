/*
 * harden.c MODE — commits one heap bug of a kind a program may have, then
 * keeps using the heap (issue 9's misuse table, README "Misuse").
 *
 * If nothing stops it, it checks that the heap still behaves (every block it
 * gets afterwards lies in the heap, never at an address the bug wrote, and
 * keeps what is written into it) and prints "done". fitalloc either lets it
 * (the bug was harmless to the allocator) or prints one line
 * "fitalloc: <what> at 0x..." and aborts; tests/16-hardening.sh says which
 * for each mode, in the default mode and with ALLOCATOR_CHECK=1.
 *
 * Built with -fno-builtin so the compiler keeps every malloc, free and store.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdint.h>
#include <stdio.h> /* snprintf only */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* from allocator.so, preloaded */
void print_memory(void) __attribute__((weak));

#pragma GCC diagnostic ignored "-Wuse-after-free"
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#pragma GCC diagnostic ignored "-Warray-bounds"

static char target[256] __attribute__((aligned(64)));
static volatile unsigned char sink;
/* The three blocks of main, freed at the end of keep_going (so that a
 * corrupted neighbour is met by free under every policy). */
static char *a, *b, *c;

static void say(const char *s) {
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(1, s, n);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

static void fail(const char *what) {
    say("FAIL ");
    say(what);
    say("\n");
    exit(1);
}

/* Three blocks of `n` bytes, consecutive in memory (a fresh region). */
static void triple(size_t n, char **a, char **b, char **c) {
    *a = malloc(n);
    *b = malloc(n);
    *c = malloc(n);
    if (!*a || !*b || !*c) fail("malloc");
    if (*b - *a != *c - *b) fail("the three blocks are not consecutive");
}

/* After the bug: allocate and free blocks of `n` bytes many times; each
 * must be a fresh heap block (not the address the bug planted) and keep
 * its contents. */
static void keep_going(size_t n) {
    for (int i = 0; i < 2000; i++) {
        unsigned char *p = malloc(n);
        if (!p) fail("malloc returned NULL");
        if ((char *)p >= target && (char *)p < target + sizeof target)
            fail("malloc returned the address planted in a freed block");
        memset(p, i & 0xff, n);
        for (size_t k = 0; k < n; k++)
            if (p[k] != (unsigned char)(i & 0xff)) fail("a block lost its contents");
        free(p);
    }
    free(a);
    free(c);
    say("done\n");
    exit(0);
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    const char *m = argv[1];
    triple(100, &a, &b, &c);
    if (!strcmp(m, "uaf-link")) {
        /* the first 8 bytes of a freed block: where an in-band free list
         * would keep its link */
        free(b);
        char *planted = target;
        memcpy(b, &planted, sizeof planted);
        keep_going(100);
    } else if (!strcmp(m, "uaf-garbage")) {
        free(b);
        memset(b, 0xff, 16);
        keep_going(100);
    } else if (!strcmp(m, "uaf-byte")) {
        free(b);
        b[60] = 1;
        keep_going(100);
    } else if (!strcmp(m, "free-header-size")) {
        /* an overflow of `a` into the header of the free block after it:
         * its size (bytes 8..11 of the header) becomes huge */
        free(b);
        uint32_t huge = 1u << 24;
        memcpy(b - 8, &huge, sizeof huge);
        keep_going(100);
    } else if (!strcmp(m, "free-header-smash")) {
        free(b);
        memset(b - 16, 0x41, 16);
        keep_going(100);
    } else if (!strcmp(m, "overflow-slack")) {
        char *p = malloc(10);
        p[10] = 'x'; /* one byte past the request, inside the block */
        free(p);
        keep_going(100);
    } else if (!strcmp(m, "overflow-string")) {
        const char *s = "hello, world!"; /* 13 bytes + NUL */
        char *p = malloc(strlen(s));
        strcpy(p, s);
        free(p);
        keep_going(100);
    } else if (!strcmp(m, "read-after-free")) {
        free(b);
        sink = (unsigned char)b[0];
        keep_going(100);
    } else if (!strcmp(m, "write-after-reuse")) {
        free(b);
        /* allocate until a block takes b's place (next and worst fit get
         * there later than first fit) */
        static char *held[100000];
        int n = 0;
        char *d;
        while ((d = malloc(100)) != b && n < 100000) held[n++] = d;
        if (d != b) fail("the freed block was never reused");
        memset(b, 7, 100); /* writes into d: the program's own bug */
        free(d);
        while (n > 0) free(held[--n]);
        keep_going(100);
    } else if (!strncmp(m, "walk-", 5)) {
        /* an overflow of `a` sets the size of the used block after it to
         * 0 (a walk that trusts it steps in place forever) or to 2^24
         * units (it walks out of the region); then a walk over the whole
         * heap meets that header before any call looks at b */
        const char *how = m + 5;
        uint32_t size = !strncmp(how, "zero", 4) ? 0 : 1u << 24;
        const char *walk = strchr(how, '-');
        if (!walk) return 2;
        walk++;
        if (!strcmp(walk, "leak")) {
            setenv("ALLOCATOR_LEAK_CHECK", "1", 1);
            free(malloc(100)); /* the option holds from here on */
        }
        memcpy(b - 8, &size, sizeof size);
        if (!strcmp(walk, "print")) {
            if (!print_memory) fail("print_memory is not preloaded");
            print_memory();
        } else if (!strcmp(walk, "switch")) {
            /* setenv's own realloc still sees the old environment; the
             * malloc after it builds the other policy's index */
            const char *now = getenv("ALLOCATOR_ALGORITHM");
            int best = now && !strcmp(now, "best_fit");
            setenv("ALLOCATOR_ALGORITHM", best ? "first_fit" : "best_fit", 1);
            free(malloc(100));
        } else if (strcmp(walk, "leak")) {
            return 2;
        }
        /* leak: the report at exit walks every region */
        say("done\n");
        return 0;
    }
    say("unknown mode\n");
    return 2;
}
