/*
 * contract.c — SPEC §6 (behaviour at the edges), one named check per line.
 *
 * Run under LD_PRELOAD=allocator.so (tests/10-contract.sh). Every check prints
 * "ok   <name>" or "FAIL <name>: <detail>"; the last line is
 * "contract: N checks, M failed" and the exit status is 1 if any failed.
 * Checks that could crash the process (a pointer crossing between fitalloc
 * and another heap, an expected abort) run in a forked child.
 *
 * Built with -fno-builtin so that the compiler neither elides malloc/free
 * pairs nor assumes calloc memory is zero.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

/* Using a block after a realloc that failed is the point of some checks. */
#pragma GCC diagnostic ignored "-Wuse-after-free"

/* glibc's internal names: weak, resolved at run time to fitalloc's. */
extern void *__libc_malloc(size_t) __attribute__((weak));
extern void __libc_free(void *) __attribute__((weak));
extern void *__libc_calloc(size_t, size_t) __attribute__((weak));
extern void *__libc_realloc(void *, size_t) __attribute__((weak));
extern void *__libc_memalign(size_t, size_t) __attribute__((weak));
extern void *__libc_valloc(size_t) __attribute__((weak));
extern void *__libc_pvalloc(size_t) __attribute__((weak));
extern int __posix_memalign(void **, size_t, size_t) __attribute__((weak));
extern void cfree(void *) __attribute__((weak));

static int checks, failures;
static size_t page;

static void check(int ok, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void check(int ok, const char *name, const char *fmt, ...) {
    checks++;
    if (ok) {
        printf("ok   %s\n", name);
    } else {
        failures++;
        printf("FAIL %s: ", name);
        va_list ap;
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        printf("\n");
    }
    fflush(stdout);
}

/* Hides a value from the optimiser (and from -Walloc-size-larger-than). */
static size_t opaque(size_t x) {
    volatile size_t v = x;
    return v;
}

static int aligned(const void *p, size_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

static void fill(void *p, size_t n, unsigned seed) {
    unsigned char *c = p;
    for (size_t i = 0; i < n; i++) c[i] = (unsigned char)(seed + i * 7);
}

/* Index of the first byte that differs from fill(seed), or -1. */
static long verify(const void *p, size_t n, unsigned seed) {
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i] != (unsigned char)(seed + i * 7)) return (long)i;
    return -1;
}

/* Index of the first byte that is not `v`, or -1. */
static long all_bytes(const void *p, size_t n, unsigned char v) {
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i] != v) return (long)i;
    return -1;
}

/*
 * Runs fn(arg) in a forked child whose stderr goes to /dev/null. Returns the
 * wait status. The child exits with fn's return value.
 */
static int in_child(int (*fn)(void *), void *arg) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(2);
    }
    if (pid == 0) {
        FILE *null = freopen("/dev/null", "w", stderr);
        (void)null;
        int r = fn(arg);
        fflush(stdout);
        _exit(r);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return status;
}

static const char *describe(int status) {
    static char buf[64];
    if (WIFSIGNALED(status))
        snprintf(buf, sizeof buf, "killed by signal %d", WTERMSIG(status));
    else
        snprintf(buf, sizeof buf, "exit status %d", WEXITSTATUS(status));
    return buf;
}

static int aborted(int status) { return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT; }

/*
 * Two blocks where b directly follows a in memory (b's header starts where
 * a's usable bytes end). Earlier holes may take a or b elsewhere first, so
 * pairs are drawn until one is adjacent; the others are freed.
 */
static int adjacent(void *a, void *b) {
    return (char *)b - 16 == (char *)a + malloc_usable_size(a);
}

static int adjacent_pair(size_t na, size_t nb, void **pa, void **pb) {
    static void *spare[4096];
    int n = 0, ok = 0;
    while (n + 2 <= 4096) {
        void *a = malloc(na), *b = malloc(nb);
        if (!a || !b) break;
        if (adjacent(a, b)) {
            *pa = a;
            *pb = b;
            ok = 1;
            break;
        }
        spare[n++] = a;
        spare[n++] = b;
    }
    while (n > 0) free(spare[--n]);
    return ok;
}

/* ------------------------------------------------------------------------ */

static void test_zero_sizes(void) {
    enum { N = 64 };
    void *p[N];
    int ok = 1, distinct = 1, al = 1;
    for (int i = 0; i < N; i++) {
        p[i] = malloc(0);
        if (!p[i]) ok = 0;
        else if (!aligned(p[i], 16)) al = 0;
    }
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            if (p[i] && p[i] == p[j]) distinct = 0;
    check(ok, "malloc(0) returns a pointer", "malloc(0) returned NULL");
    check(distinct, "malloc(0) pointers are unique", "two live malloc(0) blocks share an address");
    check(al, "malloc(0) is 16-byte aligned", "misaligned malloc(0)");
    for (int i = 0; i < N; i++) free(p[i]);
    check(1, "malloc(0) pointers can be freed", "-");

    void *c1 = calloc(0, 8), *c2 = calloc(8, 0), *c3 = calloc(0, 0), *c4 = calloc(0, 8);
    check(c1 && c2 && c3 && c4, "calloc(0, n) / calloc(n, 0) return pointers", "%p %p %p %p", c1,
          c2, c3, c4);
    check(c1 != c2 && c1 != c3 && c1 != c4 && c2 != c3 && c2 != c4 && c3 != c4,
          "calloc(0, n) pointers are unique", "%p %p %p %p", c1, c2, c3, c4);
    free(c1), free(c2), free(c3), free(c4);
    check(1, "calloc(0, n) pointers can be freed", "-");
}

static void test_alignment(void) {
    int bad = 0;
    const char *what = "";
    void *at = NULL;
    void *keep[300];
    int k = 0;
    for (size_t n = 0; n < 3000; n += 1 + n / 16) {
        void *m = malloc(n), *c = calloc(1, n), *a = memalign(8, n);
        if (!m || !aligned(m, 16)) bad++, what = "malloc", at = m;
        if (!c || !aligned(c, 16)) bad++, what = "calloc", at = c;
        if (!a || !aligned(a, 16)) bad++, what = "memalign(8)", at = a;
        free(c);
        if (k < 300) keep[k++] = m; else free(m);
        free(a);
    }
    for (int i = 0; i < k; i += 2) free(keep[i]); /* holes of every size */
    void *r = NULL;
    for (size_t n = 1; n < 200000; n = n * 3 / 2 + 1) {
        void *m = malloc(n);
        if (!m || !aligned(m, 16)) bad++, what = "malloc into holes", at = m;
        free(m);
        r = realloc(r, n);
        if (!r || !aligned(r, 16)) bad++, what = "realloc", at = r;
    }
    free(r);
    for (int i = 1; i < k; i += 2) free(keep[i]);
    size_t big[] = {1 << 20, (1 << 20) + 1, 3 << 20};
    for (int i = 0; i < 3; i++) {
        void *m = malloc(big[i]);
        if (!m || !aligned(m, 16)) bad++, what = "large malloc", at = m;
        free(m);
    }
    check(!bad, "every pointer is 16-byte aligned", "%d bad, last: %s returned %p", bad, what, at);
}

static void test_huge(void) {
    const size_t sizes[] = {(size_t)PTRDIFF_MAX + 1, SIZE_MAX, SIZE_MAX - 1, SIZE_MAX - 15,
                            SIZE_MAX - 4096, (size_t)PTRDIFF_MAX};
    const char *names[] = {"PTRDIFF_MAX+1", "SIZE_MAX", "SIZE_MAX-1", "SIZE_MAX-15",
                           "SIZE_MAX-4096", "PTRDIFF_MAX"};
    char name[96];
    for (int i = 0; i < 6; i++) {
        size_t n = opaque(sizes[i]);
        void *p;
        int e;

#define HUGE_CASE(label, expr)                                                                 \
    do {                                                                                       \
        errno = 0;                                                                             \
        p = (expr);                                                                            \
        e = errno;                                                                             \
        snprintf(name, sizeof name, label "(%s) -> NULL, ENOMEM", names[i]);                   \
        check(p == NULL && e == ENOMEM, name, "returned %p, errno %d (%s)", p, e, strerror(e)); \
        if (p) free(p);                                                                        \
    } while (0)

        HUGE_CASE("malloc", malloc(n));
        HUGE_CASE("calloc(1, n)", calloc(1, n));
        HUGE_CASE("realloc(NULL, n)", realloc(NULL, n));
        HUGE_CASE("reallocarray(NULL, 1, n)", reallocarray(NULL, 1, n));
        HUGE_CASE("memalign(64, n)", memalign(64, n));
        HUGE_CASE("aligned_alloc(4096, n)", aligned_alloc(4096, n));
        HUGE_CASE("valloc", valloc(n));
        HUGE_CASE("pvalloc", pvalloc(n));
#undef HUGE_CASE
    }
}

static void test_overflow(void) {
    struct {
        size_t a, b;
        const char *name;
    } cases[] = {
        {SIZE_MAX / 2 + 1, 2, "SIZE_MAX/2+1 x 2"},
        {(size_t)1 << 32, (size_t)1 << 32, "2^32 x 2^32"},
        {SIZE_MAX, SIZE_MAX, "SIZE_MAX x SIZE_MAX"},
        {3, SIZE_MAX / 3 + 1, "3 x (SIZE_MAX/3+1)"},
        {(size_t)1 << 33, (size_t)1 << 31, "2^33 x 2^31"},
    };
    char name[128];
    for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t a = opaque(cases[i].a), b = opaque(cases[i].b);
        errno = 0;
        void *p = calloc(a, b);
        int e = errno;
        snprintf(name, sizeof name, "calloc(%s) overflow -> NULL, ENOMEM", cases[i].name);
        check(p == NULL && e == ENOMEM, name, "returned %p, errno %d", p, e);
        free(p);

        errno = 0;
        p = reallocarray(NULL, a, b);
        e = errno;
        snprintf(name, sizeof name, "reallocarray(NULL, %s) overflow -> NULL, ENOMEM",
                 cases[i].name);
        check(p == NULL && e == ENOMEM, name, "returned %p, errno %d", p, e);
        free(p);

        void *q = malloc(200);
        fill(q, 200, 11);
        size_t u = malloc_usable_size(q);
        errno = 0;
        p = reallocarray(q, a, b);
        e = errno;
        snprintf(name, sizeof name, "reallocarray(p, %s) overflow -> NULL, ENOMEM, p intact",
                 cases[i].name);
        check(p == NULL && e == ENOMEM && verify(q, 200, 11) < 0 && malloc_usable_size(q) == u,
              name, "returned %p, errno %d, bytes %s", p, e,
              verify(q, 200, 11) < 0 ? "kept" : "changed");
        free(q);
    }
    void *q = malloc(100);
    fill(q, 100, 3);
    void *r = reallocarray(q, 10, 100);
    check(r && malloc_usable_size(r) >= 1000 && verify(r, 100, 3) < 0,
          "reallocarray(p, 10, 100) grows and keeps bytes", "returned %p", r);
    free(r);
}

static void test_calloc_zero(void) {
    const size_t sizes[] = {1, 15, 16, 17, 100, 1000, 4000, 4096, 5000, 65536, 100000, 1 << 20,
                            (3 << 20) + 5};
    int bad = 0;
    size_t bad_n = 0;
    long bad_at = -1;
    for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *p = calloc(1, sizes[i]);
        long at = p ? all_bytes(p, sizes[i], 0) : 0;
        if (at >= 0) bad++, bad_n = sizes[i], bad_at = at;
        free(p);
        p = calloc(sizes[i], 1);
        at = p ? all_bytes(p, sizes[i], 0) : 0;
        if (at >= 0) bad++, bad_n = sizes[i], bad_at = at;
        free(p);
    }
    check(!bad, "calloc memory is zero", "%d bad; size %zu: nonzero byte at %ld", bad, bad_n,
          bad_at);

    /* The brief's sequence: malloc, fill, free, calloc the same size. */
    bad = 0;
    int same = 0, total = 0;
    for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        unsigned char *p = malloc(n);
        memset(p, 0xFF, malloc_usable_size(p));
        void *guard = malloc(16); /* keeps the region mapped */
        free(p);
        unsigned char *q = calloc(1, n);
        long at = q ? all_bytes(q, n, 0) : 0;
        if (at >= 0) bad++, bad_n = n, bad_at = at;
        same += q == p;
        total++;
        free(q);
        free(guard);
    }
    printf("     (calloc reused the dirty block %d of %d times)\n", same, total);
    check(!bad, "calloc after malloc/fill/free of the same size is zero",
          "size %zu: nonzero byte at %ld", bad_n, bad_at);

    /*
     * Many dirty blocks, freed together so they merge into one dirty free
     * span, then calloc'ed again: at least one must land in the dirty span
     * (checked), and all must be zero.
     */
    bad = 0;
    int reused = 0;
    for (size_t n = 16; n <= 4000; n = n * 2 + 8) {
        enum { K = 16 };
        unsigned char *d[K];
        for (int j = 0; j < K; j++) {
            d[j] = malloc(n);
            memset(d[j], 0xFF, malloc_usable_size(d[j]));
        }
        void *guard = malloc(16);
        uintptr_t lo = UINTPTR_MAX, hi = 0;
        for (int j = 0; j < K; j++) {
            uintptr_t a = (uintptr_t)d[j];
            if (a < lo) lo = a;
            if (a + n > hi) hi = a + n;
            free(d[j]);
        }
        unsigned char *c[K];
        for (int j = 0; j < K; j++) {
            c[j] = calloc(n, 1);
            long at = c[j] ? all_bytes(c[j], n, 0) : 0;
            if (at >= 0) bad++, bad_n = n, bad_at = at;
            if ((uintptr_t)c[j] >= lo && (uintptr_t)c[j] < hi) reused++;
        }
        for (int j = 0; j < K; j++) free(c[j]);
        free(guard);
    }
    check(reused > 0, "calloc reuses dirty freed memory (precondition of the next check)",
          "no calloc landed in a dirty span");
    check(!bad, "calloc over dirty reused memory is zero", "size %zu: nonzero byte at %ld",
          bad_n, bad_at);
}

static void test_free(void) {
    free(NULL);
    check(1, "free(NULL) returns", "-");
    errno = 4242;
    free(NULL);
    check(errno == 4242, "free(NULL) preserves errno", "errno %d", errno);
    void *p = malloc(100), *q = malloc(100);
    errno = EBADF;
    free(p);
    check(errno == EBADF, "free preserves errno", "errno %d", errno);
    void *big = malloc(2 << 20);
    errno = EINTR;
    free(big); /* its own region: released */
    check(errno == EINTR, "free of a lone large block (region released) preserves errno",
          "errno %d", errno);
    errno = ENOMEM;
    free(q);
    check(errno == ENOMEM, "free preserves errno ENOMEM", "errno %d", errno);
    errno = 0;
    free(NULL);
    check(errno == 0, "free(NULL) keeps errno 0", "errno %d", errno);
}

static int child_free(void *p) {
    free(p);
    return 0;
}

static int child_usable(void *p) {
    return malloc_usable_size(p) > 0 ? 0 : 3;
}

static void test_realloc(void) {
    /* realloc(NULL, n) */
    void *p = realloc(NULL, 300);
    check(p && aligned(p, 16) && malloc_usable_size(p) >= 300, "realloc(NULL, 300) is malloc(300)",
          "returned %p", p);
    if (p) memset(p, 1, 300);
    free(p);
    p = realloc(NULL, 0);
    check(p != NULL, "realloc(NULL, 0) is malloc(0) (a pointer)", "returned NULL");
    free(p);

    /* realloc(p, 0) frees p and returns NULL */
    void *keep = malloc(64); /* keeps p's region mapped */
    p = malloc(300);
    void *r = realloc(p, 0);
    check(r == NULL, "realloc(p, 0) returns NULL", "returned %p", r);
    int st = in_child(child_free, p);
    check(aborted(st), "realloc(p, 0) freed p (a second free aborts)", "free(p) in child: %s",
          describe(st));
    free(keep);

    /* shrink in place */
    p = malloc(1000);
    fill(p, 1000, 5);
    r = realloc(p, 100);
    check(r == p, "realloc shrink (1000 -> 100) returns the same pointer", "%p -> %p", p, r);
    check(verify(r, 100, 5) < 0, "realloc shrink keeps the bytes", "byte %ld differs",
          verify(r, 100, 5));
    check(malloc_usable_size(r) >= 100 && malloc_usable_size(r) < 1000,
          "realloc shrink gives the tail back", "usable %zu", malloc_usable_size(r));
    void *r2 = realloc(r, 90);
    check(r2 == r && verify(r2, 90, 5) < 0, "realloc small shrink (100 -> 90) keeps pointer, bytes",
          "%p -> %p", r, r2);
    r = realloc(r2, 90);
    check(r == r2, "realloc to the same size keeps the pointer", "%p -> %p", r2, r);
    free(r);

    /* grow in place into a free next neighbour */
    void *a, *b;
    int ok = adjacent_pair(100, 1000, &a, &b);
    check(ok, "precondition: two adjacent blocks a, b", "no adjacent pair found");
    if (ok) {
        void *guard = malloc(16);
        fill(a, 100, 9);
        free(b);
        r = realloc(a, 600);
        check(r == a, "realloc grows in place into the free next block", "%p -> %p", a, r);
        check(verify(r, 100, 9) < 0, "realloc grow in place keeps the bytes", "byte %ld differs",
              verify(r, 100, 9));
        check(malloc_usable_size(r) >= 600, "realloc grow in place: usable >= 600", "usable %zu",
              malloc_usable_size(r));
        memset((char *)r + 100, 0x77, 500);
        void *r3 = realloc(r, 1100);
        check(r3 == a, "realloc grows in place again into the rest of the free neighbour",
              "%p -> %p", a, r3);
        check(verify(r3, 100, 9) < 0 && all_bytes((char *)r3 + 100, 500, 0x77) < 0,
              "second in-place grow keeps the bytes", "bytes differ");
        free(r3);
        free(guard);
    }

    /* move when the next block is in use */
    ok = adjacent_pair(100, 100, &a, &b);
    check(ok, "precondition: two adjacent blocks a, b (for a move)", "no adjacent pair found");
    if (ok) {
        fill(a, 100, 13);
        r = realloc(a, 5000);
        check(r != NULL && r != a, "realloc moves when the next block is in use", "%p -> %p", a, r);
        check(r && aligned(r, 16) && verify(r, 100, 13) < 0, "realloc move keeps the bytes",
              "byte %ld differs", r ? verify(r, 100, 13) : -2);
        if (r) fill(r, 5000, 17);
        void *big = realloc(r, 3 << 20);
        check(big && verify(big, 5000, 17) < 0, "realloc 5000 -> 3 MiB keeps the bytes",
              "returned %p", big);
        if (big) fill(big, 3 << 20, 19);
        void *big2 = big ? realloc(big, 7 << 20) : NULL;
        check(big2 && verify(big2, 3 << 20, 19) < 0, "realloc 3 MiB -> 7 MiB keeps the bytes",
              "returned %p", big2);
        void *small = big2 ? realloc(big2, 40) : NULL;
        check(small && verify(small, 40, 19) < 0, "realloc 7 MiB -> 40 keeps the bytes",
              "returned %p", small);
        free(small);
        free(b);
    }
}

static const size_t huge_sizes[] = {SIZE_MAX, (size_t)PTRDIFF_MAX + 1, SIZE_MAX - 15,
                                    (size_t)1 << 62};

static void test_failed_realloc(void) {
    char name[96];
    for (unsigned i = 0; i < sizeof huge_sizes / sizeof huge_sizes[0]; i++) {
        void *p = malloc(100);
        fill(p, 100, 21);
        size_t u = malloc_usable_size(p);
        errno = 0;
        void *r = realloc(p, opaque(huge_sizes[i]));
        int e = errno;
        snprintf(name, sizeof name, "failed realloc(p, %#zx) -> NULL, ENOMEM", huge_sizes[i]);
        check(r == NULL && e == ENOMEM, name, "returned %p, errno %d", r, e);
        snprintf(name, sizeof name, "failed realloc(p, %#zx) leaves the block intact",
                 huge_sizes[i]);
        check(verify(p, 100, 21) < 0 && malloc_usable_size(p) == u, name,
              "byte %ld differs, usable %zu -> %zu", verify(p, 100, 21), u,
              malloc_usable_size(p));
        void *r2 = realloc(p, 5000); /* still a live, working block */
        check(r2 && verify(r2, 100, 21) < 0, "block still reallocs after a failed realloc",
              "returned %p", r2);
        free(r2 ? r2 : p);
    }
}

/*
 * Out of address space for real (RLIMIT_AS): the kernel refuses the mapping.
 * Runs in a child; returns the number of failed checks.
 */
static int child_rlimit(void *arg) {
    (void)arg;
    void *p = malloc(1000);
    fill(p, 1000, 31);
    size_t u = malloc_usable_size(p);
    long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f || fscanf(f, "%ld", &pages) != 1) return 90;
    fclose(f);
    struct rlimit rl = {.rlim_cur = (rlim_t)pages * page + (64 << 20),
                        .rlim_max = (rlim_t)pages * page + (64 << 20)};
    if (setrlimit(RLIMIT_AS, &rl) != 0) return 91;
    int before = failures;
    errno = 0;
    void *m = malloc(1 << 30);
    int e = errno;
    check(m == NULL && e == ENOMEM, "malloc(1 GiB) beyond RLIMIT_AS -> NULL, ENOMEM",
          "returned %p, errno %d", m, e);
    errno = 0;
    void *r = realloc(p, 1 << 30);
    e = errno;
    check(r == NULL && e == ENOMEM, "realloc(p, 1 GiB) beyond RLIMIT_AS -> NULL, ENOMEM",
          "returned %p, errno %d", r, e);
    check(verify(p, 1000, 31) < 0 && malloc_usable_size(p) == u,
          "realloc refused by the kernel leaves the block intact", "byte %ld differs",
          verify(p, 1000, 31));
    void *pm = (void *)0x1234;
    errno = 0;
    int ret = posix_memalign(&pm, 4096, 1 << 30);
    check(ret == ENOMEM && pm == (void *)0x1234 && errno == 0,
          "posix_memalign beyond RLIMIT_AS -> ENOMEM, *memptr and errno untouched",
          "ret %d, memptr %p, errno %d", ret, pm, errno);
    errno = 0;
    void *c = calloc(1 << 15, 1 << 15);
    e = errno;
    check(c == NULL && e == ENOMEM, "calloc(2^15, 2^15) beyond RLIMIT_AS -> NULL, ENOMEM",
          "returned %p, errno %d", c, e);
    void *s = malloc(100);
    check(s != NULL, "small malloc still works after the refusals", "NULL");
    free(s);
    free(p);
    return failures - before;
}

static void test_out_of_memory(void) {
    int st = in_child(child_rlimit, NULL);
    check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "out-of-memory checks (child) all passed", "%s",
          describe(st));
}

static void test_posix_memalign(void) {
    size_t bad_align[] = {0, 1, 2, 3, 4, 12, 24, 40, 48, 96, 4097, ((size_t)1 << 20) + 8};
    char name[96];
    for (unsigned i = 0; i < sizeof bad_align / sizeof bad_align[0]; i++) {
        void *m = (void *)0x1234;
        errno = 7777;
        int r = posix_memalign(&m, opaque(bad_align[i]), 100);
        snprintf(name, sizeof name, "posix_memalign(align %zu) -> EINVAL", bad_align[i]);
        check(r == EINVAL, name, "returned %d", r);
        snprintf(name, sizeof name, "posix_memalign(align %zu) leaves *memptr, errno",
                 bad_align[i]);
        check(m == (void *)0x1234 && errno == 7777, name, "memptr %p, errno %d", m, errno);
        if (r == 0) free(m);
    }
    size_t huge_align[][2] = {{64, SIZE_MAX},
                              {16, SIZE_MAX},
                              {4096, (size_t)PTRDIFF_MAX + 1},
                              {(size_t)1 << 62, 100},
                              {(size_t)1 << 40, 100}};
    for (unsigned i = 0; i < sizeof huge_align / sizeof huge_align[0]; i++) {
        void *m = (void *)0x1234;
        errno = 7777;
        int r = posix_memalign(&m, huge_align[i][0], opaque(huge_align[i][1]));
        snprintf(name, sizeof name, "posix_memalign(%#zx, %#zx) -> ENOMEM, memptr, errno kept",
                 huge_align[i][0], huge_align[i][1]);
        check(r == ENOMEM && m == (void *)0x1234 && errno == 7777, name,
              "returned %d, memptr %p, errno %d", r, m, errno);
        if (r == 0) free(m);
    }
    void *m = NULL;
    errno = 7777;
    int r = posix_memalign(&m, 8, 100);
    check(r == 0 && m && aligned(m, 16) && errno == 7777,
          "posix_memalign(8, 100) succeeds, 16-aligned, errno kept", "ret %d, %p, errno %d", r, m,
          errno);
    free(m);
    m = NULL;
    r = posix_memalign(&m, 64, 0);
    check(r == 0 && m && aligned(m, 64), "posix_memalign(64, 0) succeeds", "ret %d, %p", r, m);
    free(m);
}

static void test_aligned_family(void) {
    enum { MAXA = 20 };
    void *live[3 * (MAXA - 3) * 3];
    int n = 0, bad = 0, badw = 0;
    char what[128] = "";
    for (int lg = 4; lg <= MAXA; lg++) {
        size_t a = (size_t)1 << lg;
        size_t sizes[3] = {1, 100, a + 16};
        for (int s = 0; s < 3; s++) {
            size_t sz = sizes[s];
            void *p1 = NULL;
            int r = posix_memalign(&p1, a, sz);
            void *p2 = aligned_alloc(a, sz);
            void *p3 = memalign(a, sz);
            void *ps[3] = {r == 0 ? p1 : NULL, p2, p3};
            const char *fn[3] = {"posix_memalign", "aligned_alloc", "memalign"};
            for (int k = 0; k < 3; k++) {
                if (!ps[k] || !aligned(ps[k], a) || malloc_usable_size(ps[k]) < sz) {
                    bad++;
                    snprintf(what, sizeof what, "%s(%zu, %zu) = %p usable %zu", fn[k], a, sz,
                             ps[k], ps[k] ? malloc_usable_size(ps[k]) : 0);
                    continue;
                }
                size_t u = malloc_usable_size(ps[k]);
                memset(ps[k], 0x5C, u);
                live[n++] = ps[k];
            }
        }
    }
    /* all were live together; each still holds its bytes */
    for (int i = 0; i < n; i++)
        if (all_bytes(live[i], malloc_usable_size(live[i]), 0x5C) >= 0) badw++;
    for (int i = n - 1; i >= 0; i--) free(live[i]);
    check(!bad, "posix_memalign/aligned_alloc/memalign 16 B .. 1 MiB are aligned, usable >= size",
          "%d bad, last %s", bad, what);
    check(!badw, "aligned blocks are writable and do not overlap", "%d blocks lost their bytes",
          badw);
    /* the gaps they leave behind are reusable */
    void *p = memalign(4096, 100);
    void *q = malloc(50);
    free(p);
    free(q);
    check(p && q, "memalign then malloc work after freeing aligned blocks", "-");
}

static void test_valloc(void) {
    void *v1 = valloc(1), *v2 = valloc(5000), *v3 = valloc(0);
    check(v1 && v2 && v3 && aligned(v1, page) && aligned(v2, page) && aligned(v3, page),
          "valloc is page aligned", "%p %p %p", v1, v2, v3);
    if (v1) memset(v1, 1, malloc_usable_size(v1));
    if (v2) memset(v2, 1, 5000);
    free(v1), free(v2), free(v3);
    void *p1 = pvalloc(1), *p2 = pvalloc(page + 1), *p0 = pvalloc(0);
    check(p1 && p2 && p0 && aligned(p1, page) && aligned(p2, page) && aligned(p0, page),
          "pvalloc is page aligned", "%p %p %p", p1, p2, p0);
    size_t u1 = p1 ? malloc_usable_size(p1) : 0, u2 = p2 ? malloc_usable_size(p2) : 0;
    size_t u0 = p0 ? malloc_usable_size(p0) : 0;
    check(u1 >= page && u2 >= 2 * page && u0 >= page,
          "pvalloc usable size >= size rounded to pages", "pvalloc(1): %zu, pvalloc(page+1): %zu, "
          "pvalloc(0): %zu", u1, u2, u0);
    if (p1) memset(p1, 2, u1);
    if (p2) memset(p2, 2, u2);
    if (p0) memset(p0, 2, u0);
    free(p1), free(p2), free(p0);
}

static void test_usable(void) {
    int bad = 0;
    size_t bad_n = 0, bad_u = 0;
    for (size_t n = 0; n <= 2100; n += (n < 300 ? 1 : 37)) {
        void *p = malloc(n);
        void *next = malloc(n); /* a live neighbour whose header would be hit */
        size_t u = malloc_usable_size(p);
        if (u < n) bad++, bad_n = n, bad_u = u;
        memset(p, 0xC3, u);
        memset(next, 0x3C, malloc_usable_size(next));
        free(p);
        free(next);
    }
    check(!bad, "malloc_usable_size >= request (0..2100), all of it writable",
          "malloc(%zu): usable %zu", bad_n, bad_u);
    /* the other allocation functions */
    void *c = calloc(10, 33), *r = realloc(NULL, 777), *m = memalign(256, 333);
    void *n = malloc(4);
    check(malloc_usable_size(c) >= 330 && malloc_usable_size(r) >= 777 &&
              malloc_usable_size(m) >= 333,
          "malloc_usable_size >= request for calloc/realloc/memalign", "%zu %zu %zu",
          malloc_usable_size(c), malloc_usable_size(r), malloc_usable_size(m));
    memset(c, 1, malloc_usable_size(c));
    memset(r, 1, malloc_usable_size(r));
    memset(m, 1, malloc_usable_size(m));
    free(c), free(r), free(m), free(n);
    check(malloc_usable_size(NULL) == 0, "malloc_usable_size(NULL) == 0", "%zu",
          malloc_usable_size(NULL));
}

/* --- glibc aliases: each in a child, since a pointer from another heap crashes. --- */

static int alias_malloc_free(void *arg) {
    (void)arg;
    char *p = __libc_malloc(100);
    if (!p || malloc_usable_size(p) < 100) return 10;
    memset(p, 1, 100);
    free(p);
    return 0;
}
static int alias_free_of_malloc(void *arg) {
    (void)arg;
    char *p = malloc(100);
    memset(p, 1, 100);
    __libc_free(p);
    /* and the block is really free in fitalloc: a second free aborts */
    free(p);
    return 11;
}
static int alias_calloc(void *arg) {
    (void)arg;
    unsigned char *p = __libc_calloc(10, 10);
    if (!p || malloc_usable_size(p) < 100 || all_bytes(p, 100, 0) >= 0) return 12;
    free(p);
    return 0;
}
static int alias_realloc(void *arg) {
    (void)arg;
    char *p = malloc(50);
    fill(p, 50, 1);
    char *q = __libc_realloc(p, 5000);
    if (!q || malloc_usable_size(q) < 5000 || verify(q, 50, 1) >= 0) return 13;
    free(q);
    char *r = __libc_realloc(NULL, 10);
    if (!r || malloc_usable_size(r) < 10) return 14;
    __libc_free(r);
    return 0;
}
static int alias_memalign(void *arg) {
    (void)arg;
    void *p = __libc_memalign(256, 100);
    if (!p || !aligned(p, 256) || malloc_usable_size(p) < 100) return 15;
    free(p);
    return 0;
}
static int alias_others(void *arg) {
    (void)arg;
    void *v = __libc_valloc(10), *pv = __libc_pvalloc(10), *pm = NULL;
    if (!v || !aligned(v, page) || !pv || !aligned(pv, page) || malloc_usable_size(pv) < page)
        return 16;
    if (__posix_memalign(&pm, 128, 10) != 0 || !aligned(pm, 128) || malloc_usable_size(pm) < 10)
        return 17;
    if (__posix_memalign(&pm, 24, 10) != EINVAL) return 18;
    free(v);
    free(pv);
    cfree(pm);
    return 0;
}

static void test_aliases(void) {
    check(__libc_malloc && __libc_free && __libc_calloc && __libc_realloc && __libc_memalign &&
              __libc_valloc && __libc_pvalloc && __posix_memalign && cfree,
          "glibc aliases resolve", "a weak symbol is NULL");
    if (!(__libc_malloc && __libc_free && __libc_calloc && __libc_realloc && __libc_memalign &&
          __libc_valloc && __libc_pvalloc && __posix_memalign && cfree))
        return;
    int st = in_child(alias_malloc_free, NULL);
    check(WIFEXITED(st) && WEXITSTATUS(st) == 0,
          "__libc_malloc pointer: malloc_usable_size and free accept it", "%s", describe(st));
    st = in_child(alias_free_of_malloc, NULL);
    check(aborted(st), "__libc_free frees a malloc pointer in fitalloc (second free aborts)",
          "%s", describe(st));
    st = in_child(alias_calloc, NULL);
    check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "__libc_calloc: zeroed fitalloc block", "%s",
          describe(st));
    st = in_child(alias_realloc, NULL);
    check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "__libc_realloc: resizes a malloc block", "%s",
          describe(st));
    st = in_child(alias_memalign, NULL);
    check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "__libc_memalign: aligned fitalloc block", "%s",
          describe(st));
    st = in_child(alias_others, NULL);
    check(WIFEXITED(st) && WEXITSTATUS(st) == 0,
          "__libc_valloc/__libc_pvalloc/__posix_memalign/cfree are fitalloc's", "%s",
          describe(st));
    /* and a plain pointer is known to malloc_usable_size (sanity of the method) */
    void *p = malloc(10);
    st = in_child(child_usable, p);
    check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "malloc pointer accepted by malloc_usable_size",
          "%s", describe(st));
    free(p);
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
static void test_stubs(void) {
    int r = mallopt(M_TRIM_THRESHOLD, 1 << 20);
    check(r == 0 || r == 1, "mallopt callable", "returned %d", r);
    r = mallopt(M_MMAP_THRESHOLD, 1 << 20);
    check(r == 0 || r == 1, "mallopt(M_MMAP_THRESHOLD) callable", "returned %d", r);
    r = malloc_trim(0);
    check(r == 0 || r == 1, "malloc_trim callable", "returned %d", r);
    void *p = malloc(100000);
    struct mallinfo2 mi = mallinfo2();
    check(mi.arena >= mi.uordblks, "mallinfo2 callable and consistent", "arena %zu < in use %zu",
          mi.arena, mi.uordblks);
    struct mallinfo m1 = mallinfo();
    check(m1.arena >= 0 && m1.uordblks >= 0, "mallinfo callable", "arena %d uordblks %d",
          m1.arena, m1.uordblks);
    free(p);
    malloc_stats();
    check(1, "malloc_stats callable", "-");
}
#pragma GCC diagnostic pop

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    page = (size_t)sysconf(_SC_PAGESIZE);
    printf("contract: ALLOCATOR_ALGORITHM=%s ALLOCATOR_CHECK=%s\n",
           getenv("ALLOCATOR_ALGORITHM") ? getenv("ALLOCATOR_ALGORITHM") : "(unset)",
           getenv("ALLOCATOR_CHECK") ? getenv("ALLOCATOR_CHECK") : "(unset)");
    test_zero_sizes();
    test_alignment();
    test_huge();
    test_overflow();
    test_calloc_zero();
    test_free();
    test_realloc();
    test_failed_realloc();
    test_out_of_memory();
    test_posix_memalign();
    test_aligned_family();
    test_valloc();
    test_usable();
    test_aliases();
    test_stubs();
    printf("contract: %d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
