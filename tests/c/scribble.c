/*
 * scribble.c MODE — ALLOCATOR_SCRIBBLE (SPEC §4).
 *   on       (run with ALLOCATOR_SCRIBBLE=1) every new allocation's usable
 *            bytes are 0xAA: malloc (fresh and reused memory), malloc_name,
 *            the memalign family, valloc/pvalloc, realloc's new bytes (not the
 *            kept prefix, moved or grown in place); calloc stays zero
 *   off      (run without it, or with =0) fresh memory reads zero, reused
 *            memory is not filled
 *   setenv   (run without it) setenv("ALLOCATOR_SCRIBBLE", "1") inside main
 *            turns it on for the next malloc; "0", unsetenv and putenv turn
 *            it off and on again
 *   unset    (run with ALLOCATOR_SCRIBBLE=1) unsetenv turns it off
 *   calloc-usable (run with ALLOCATOR_CHECK=1) a calloc'd block reads zero
 *            in every usable byte after malloc_usable_size (which drops the
 *            check mode's canary bytes past the request)
 *   refill   (run with no ALLOCATOR_* variable) setenv of another variable,
 *            unsetenv of it, then setenv("ALLOCATOR_SCRIBBLE", "1"): the
 *            environment array keeps its address and length, and scribbling
 *            still takes effect at the next malloc
 * Prints "ok   <name>" / "FAIL <name>: ..." per check and a summary line;
 * exit status 1 if any check failed.
 */
#define _GNU_SOURCE
#include <allocator.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#pragma weak malloc_name

static int checks, failures;

static void check(int ok, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void check(int ok, const char *name, const char *fmt, ...) {
    checks++;
    if (ok) {
        printf("ok   %s\n", name);
        return;
    }
    failures++;
    printf("FAIL %s: ", name);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

/* Index of the first byte in [from, to) that is not v, or -1. */
static long first_not(const void *p, size_t from, size_t to, unsigned char v) {
    const unsigned char *c = p;
    for (size_t i = from; i < to; i++)
        if (c[i] != v) return (long)i;
    return -1;
}

static int all_aa(const void *p) {
    return p && first_not(p, 0, malloc_usable_size((void *)p), 0xAA) < 0;
}

static int all_zero(const void *p, size_t n) { return p && first_not(p, 0, n, 0) < 0; }

static void expect_aa(const char *name, void *p) {
    size_t u = p ? malloc_usable_size(p) : 0;
    long at = p ? first_not(p, 0, u, 0xAA) : -2;
    check(p && at < 0, name, "%p: usable %zu, byte %ld is %#x", p, u, at,
          at >= 0 ? ((unsigned char *)p)[at] : 0);
}

/* Two blocks where b directly follows a in memory. */
static int adjacent_pair(size_t na, size_t nb, char **pa, char **pb) {
    static void *spare[4096];
    int n = 0, ok = 0;
    while (n + 2 <= 4096) {
        char *a = malloc(na), *b = malloc(nb);
        if (b - 16 == a + malloc_usable_size(a)) {
            *pa = a, *pb = b, ok = 1;
            break;
        }
        spare[n++] = a, spare[n++] = b;
    }
    while (n > 0) free(spare[--n]);
    return ok;
}

/* realloc p (usable filled with 0x11) and check prefix kept, rest 0xAA */
static void check_realloc_scribble(const char *name, char *old_p, size_t new_size, int in_place) {
    size_t u0 = malloc_usable_size(old_p);
    memset(old_p, 0x11, u0);
    char *q = realloc(old_p, new_size);
    char label[160];
    if (in_place) {
        snprintf(label, sizeof label, "%s: same pointer (precondition)", name);
        check(q == old_p, label, "%p -> %p", (void *)old_p, (void *)q);
    }
    size_t u = q ? malloc_usable_size(q) : 0;
    long kept = q ? first_not(q, 0, u0, 0x11) : -2;
    long fresh = q ? first_not(q, u0, u, 0xAA) : -2;
    snprintf(label, sizeof label, "%s: the kept prefix is not scribbled", name);
    check(q && kept < 0, label, "old usable %zu, byte %ld changed", u0, kept);
    snprintf(label, sizeof label, "%s: the new bytes are 0xAA", name);
    check(q && fresh < 0, label, "bytes %zu..%zu, byte %ld is not 0xAA", u0, u, fresh);
    free(q);
}

static void mode_on(void) {
    /* fresh memory first: a large block in a new region, then small ones */
    expect_aa("malloc(3 MiB), fresh region, is all 0xAA", malloc(3 << 20));
    int bad = 0;
    size_t bad_n = 0;
    for (size_t n = 0; n <= 700; n++) {
        void *p = malloc(n);
        if (!all_aa(p)) bad++, bad_n = n;
        free(p);
    }
    check(!bad, "malloc(0..700): every usable byte is 0xAA", "%d bad, e.g. malloc(%zu)", bad, bad_n);

    /* reused dirty memory */
    bad = 0;
    for (size_t n = 16; n <= 20000; n = n * 3 / 2) {
        char *p = malloc(n);
        memset(p, 0x11, malloc_usable_size(p));
        void *guard = malloc(16);
        free(p);
        void *q = malloc(n);
        if (!all_aa(q)) bad++, bad_n = n;
        free(q);
        free(guard);
    }
    check(!bad, "malloc over reused dirty memory is all 0xAA", "%d bad, e.g. malloc(%zu)", bad,
          bad_n);

    if (malloc_name) expect_aa("malloc_name(300) is all 0xAA", malloc_name(300, "scribbled"));
    expect_aa("realloc(NULL, 500) is all 0xAA", realloc(NULL, 500));
    expect_aa("memalign(64, 100) is all 0xAA", memalign(64, 100));
    expect_aa("memalign(4096, 5000) is all 0xAA", memalign(4096, 5000));
    void *pm = NULL;
    int r = posix_memalign(&pm, 256, 300);
    expect_aa("posix_memalign(256, 300) is all 0xAA", r == 0 ? pm : NULL);
    r = posix_memalign(&pm, 8, 40);
    expect_aa("posix_memalign(8, 40) is all 0xAA", r == 0 ? pm : NULL);
    expect_aa("aligned_alloc(1024, 2048) is all 0xAA", aligned_alloc(1024, 2048));
    expect_aa("valloc(100) is all 0xAA", valloc(100));
    expect_aa("pvalloc(100) is all 0xAA", pvalloc(100));

    /* realloc: moved, grown in place, shrunk */
    char *a, *b;
    if (adjacent_pair(100, 100, &a, &b)) {
        check_realloc_scribble("realloc 100 -> 1000 (moves)", a, 1000, 0);
        free(b);
    } else {
        check(0, "adjacent pair for realloc (move)", "none found");
    }
    if (adjacent_pair(100, 2000, &a, &b)) {
        void *guard = malloc(16);
        memset(b, 0x22, 2000);
        free(b);
        check_realloc_scribble("realloc 100 -> 1500 (grows in place)", a, 1500, 1);
        free(guard);
    } else {
        check(0, "adjacent pair for realloc (in place)", "none found");
    }
    char *big = malloc(100);
    check_realloc_scribble("realloc 100 -> 2 MiB (new region)", big, 2 << 20, 0);
    char *ra = malloc(64);
    size_t u = malloc_usable_size(ra);
    memset(ra, 0x11, u);
    char *rb = reallocarray(ra, 100, 10);
    check(rb && first_not(rb, 0, u, 0x11) < 0 &&
              first_not(rb, u, malloc_usable_size(rb), 0xAA) < 0,
          "reallocarray: prefix kept, new bytes 0xAA", "%p", (void *)rb);
    free(rb);
    char *s = malloc(1000);
    memset(s, 0x11, malloc_usable_size(s));
    char *s2 = realloc(s, 100);
    check(s2 && first_not(s2, 0, malloc_usable_size(s2), 0x11) < 0,
          "realloc shrink scribbles nothing", "%p", (void *)s2);
    free(s2);

    /* calloc is still zero, fresh and over dirty memory */
    bad = 0;
    for (size_t n = 1; n <= 100000; n = n * 2 + 1) {
        char *p = malloc(n);
        memset(p, 0x11, malloc_usable_size(p));
        void *guard = malloc(16);
        free(p);
        char *c = calloc(1, n), *c2 = calloc(n, 1);
        if (!all_zero(c, n) || !all_zero(c2, n)) bad++, bad_n = n;
        free(c), free(c2), free(guard);
    }
    check(!bad, "calloc is zero with ALLOCATOR_SCRIBBLE=1", "%d bad, e.g. calloc(%zu)", bad,
          bad_n);
}

static void mode_off(void) {
    char *big = malloc(4 << 20);
    check(all_zero(big, malloc_usable_size(big)), "fresh malloc(4 MiB) reads zero (not scribbled)",
          "first nonzero byte %ld", first_not(big, 0, malloc_usable_size(big), 0));
    char *small = malloc(200);
    check(small && !all_aa(small), "small malloc is not filled with 0xAA", "%p", (void *)small);
    char *al = memalign(4096, 3000);
    check(al && all_zero(al, 3000), "fresh memalign(4096, 3000) reads zero", "-");
    /* reused memory keeps what was there (at least it is not 0xAA) */
    memset(small, 0x11, malloc_usable_size(small));
    void *guard = malloc(16);
    free(small);
    char *again = malloc(200);
    check(again && !all_aa(again), "reused memory is not filled with 0xAA", "%p", (void *)again);
    free(again), free(guard), free(big), free(al);
}

static void mode_setenv(void) {
    char *z = malloc(3 << 20);
    check(all_zero(z, malloc_usable_size(z)), "before setenv: fresh malloc(3 MiB) reads zero", "-");

    setenv("ALLOCATOR_SCRIBBLE", "1", 1);
    expect_aa("after setenv(ALLOCATOR_SCRIBBLE=1): malloc(200) is all 0xAA", malloc(200));
    expect_aa("after setenv(ALLOCATOR_SCRIBBLE=1): malloc(3 MiB) is all 0xAA", malloc(3 << 20));

    setenv("ALLOCATOR_SCRIBBLE", "0", 1);
    char *f = malloc(3 << 20);
    check(all_zero(f, malloc_usable_size(f)), "after setenv(ALLOCATOR_SCRIBBLE=0): fresh malloc reads zero",
          "first nonzero byte %ld", first_not(f, 0, malloc_usable_size(f), 0));
    char *d = malloc(300);
    memset(d, 0x11, malloc_usable_size(d));
    void *guard = malloc(16);
    free(d);
    char *d2 = malloc(300);
    check(!all_aa(d2), "after setenv(ALLOCATOR_SCRIBBLE=0): reused memory is not 0xAA", "-");

    setenv("ALLOCATOR_SCRIBBLE", "1", 1);
    expect_aa("after setenv(ALLOCATOR_SCRIBBLE=1) again: malloc(50) is all 0xAA", malloc(50));

    unsetenv("ALLOCATOR_SCRIBBLE");
    char *g = malloc(3 << 20);
    check(all_zero(g, malloc_usable_size(g)), "after unsetenv: fresh malloc reads zero",
          "first nonzero byte %ld", first_not(g, 0, malloc_usable_size(g), 0));

    static char on[] = "ALLOCATOR_SCRIBBLE=1";
    putenv(on);
    expect_aa("after putenv(ALLOCATOR_SCRIBBLE=1): malloc(70) is all 0xAA", malloc(70));
    static char off[] = "ALLOCATOR_SCRIBBLE=0";
    putenv(off);
    char *h = malloc(3 << 20);
    check(all_zero(h, malloc_usable_size(h)), "after putenv(ALLOCATOR_SCRIBBLE=0): fresh malloc reads zero",
          "first nonzero byte %ld", first_not(h, 0, malloc_usable_size(h), 0));
    (void)d2, (void)guard;
}

static void mode_unset(void) {
    expect_aa("with ALLOCATOR_SCRIBBLE=1 in the environment: malloc(100) is all 0xAA", malloc(100));
    unsetenv("ALLOCATOR_SCRIBBLE");
    char *g = malloc(3 << 20);
    check(all_zero(g, malloc_usable_size(g)), "after unsetenv: fresh malloc reads zero",
          "first nonzero byte %ld", first_not(g, 0, malloc_usable_size(g), 0));
}

static void mode_calloc_usable(void) {
    /* check mode puts canary bytes past each request; malloc_usable_size
     * hands them to the caller, zero for a calloc'd block as without it */
    for (size_t n = 1; n <= 64; n++) {
        unsigned char *z = calloc(1, n);
        size_t u = malloc_usable_size(z);
        char name[96];
        snprintf(name, sizeof name, "calloc(1, %zu): all %zu usable bytes are zero after malloc_usable_size", n, u);
        check(all_zero(z, u), name, "first nonzero byte %ld", first_not(z, 0, u, 0));
        free(z);
    }
}

static void mode_refill(void) {
    /* no ALLOCATOR_* variable anywhere: the fingerprint holds no option */
    setenv("FITALLOC_REFILL_TEST", "1", 1); /* environ moves into the heap */
    free(malloc(100));
    unsetenv("FITALLOC_REFILL_TEST"); /* the array shrinks in place */
    free(malloc(100));
    /* glibc reallocs the array to the size it had (the same pointer) and
     * puts the new entry where the removed one was: the pointer and the
     * NULL at the old length are as they were */
    setenv("ALLOCATOR_SCRIBBLE", "1", 1);
    expect_aa("after unsetenv of another variable, setenv(ALLOCATOR_SCRIBBLE=1): malloc(64) is all 0xAA",
              malloc(64));
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0); /* no stdio buffer in the heap */
    if (argc != 2) return 2;
    if (!strcmp(argv[1], "on")) mode_on();
    else if (!strcmp(argv[1], "off")) mode_off();
    else if (!strcmp(argv[1], "setenv")) mode_setenv();
    else if (!strcmp(argv[1], "unset")) mode_unset();
    else if (!strcmp(argv[1], "refill")) mode_refill();
    else if (!strcmp(argv[1], "calloc-usable")) mode_calloc_usable();
    else return 2;
    printf("scribble %s: %d checks, %d failed\n", argv[1], checks, failures);
    return failures ? 1 : 0;
}
