/*
 * print.c MODE [PATH] — print_memory / write_memory (SPEC §5).
 *
 * Each mode makes dumps and writes, after each dump and to the same stream,
 * '#expect ...' lines that tests/c/print_check.py verifies against it.
 *   basic    named, unnamed, free, large and released blocks; realloc keeps
 *            the name; print_memory to stdout
 *   first    print_memory is the program's first stdio output (stdout's
 *            buffer is allocated by fitalloc during the call)
 *   stderr   write_memory(stderr)
 *   file     write_memory to a stream fopen'ed on PATH (the FILE itself is a
 *            fitalloc block and must appear in the dump)
 *   empty    write_memory(stderr) before anything was allocated
 *   threads  print_memory 40 times while 4 threads allocate and free
 * Works under LD_PRELOAD and linked directly against allocator.so.
 */
#define _GNU_SOURCE
#include <allocator.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Under LD_PRELOAD the extensions come from the preloaded library. */
#pragma weak malloc_name
#pragma weak print_memory
#pragma weak write_memory

#define NAME40 "0123456789abcdefghijklmnopqrstuvwxyzABCD"
#define NAME31 "0123456789abcdefghijklmnopqrstu"
#define NAME32 "0123456789abcdefghijklmnopqrstuv"

static void *volatile sink;

/* The whole block of a payload: header (16) + usable + name area if named. */
static size_t block_size(void *p, int named) {
    return malloc_usable_size(p) + 16 + (named ? 32 : 0);
}

static void expect(FILE *out, const char *state, void *p, int named, const char *name) {
    fprintf(out, "#expect %s %p %zu %s\n", state, (void *)((char *)p - 16), block_size(p, named),
            name);
}

static int basic(void) {
    if (!malloc_name || !print_memory || !write_memory) {
        printf("# extensions not found\n");
        return 1;
    }
    printf("# basic\n"); /* stdout's buffer exists before the dumps */
    char *a = malloc_name(100, "alpha");
    char *b = malloc_name(1000, NAME40);
    char *b31 = malloc_name(1, NAME31);
    char *b32 = malloc_name(1, NAME32);
    char *c = malloc(50);
    char *d = malloc_name(10, NULL);
    char *e = malloc_name(10, "");
    char *f = malloc_name(24, "to be freed");
    char *g = malloc_name(24, "guard after the freed one");
    char *w = malloc_name(10, "odd\tbytes\nand\x01" "more");
    char *big = malloc_name(3 << 20, "big");
    char *gone = malloc(2 << 20);
    memset(gone, 1, 2 << 20);
    free(gone);
    free(f);
    print_memory();
    expect(stdout, "USED", a, 1, "alpha");
    expect(stdout, "USED", b, 1, NAME31);
    expect(stdout, "USED", b31, 1, NAME31);
    expect(stdout, "USED", b32, 1, NAME31);
    expect(stdout, "USED", c, 0, "");
    expect(stdout, "USED", d, 0, "");
    printf("#expect USED %p - \n", (void *)(e - 16));
    /* a freed block keeps its name (SPEC §5); its neighbours are in use */
    printf("#expect FREE %p - to be freed\n", (void *)(f - 16));
    expect(stdout, "USED", g, 1, "guard after the freed one");
    printf("#expect-block %p %zu\n", (void *)(w - 16), block_size(w, 1));
    expect(stdout, "USED", big, 1, "big");
    printf("#expect-no-block %p\n", (void *)gone);

    /* realloc keeps the name, in place and when moving */
    char *a2 = realloc(a, 5000);
    char *b2 = realloc(b, 10);
    free(c);
    print_memory();
    expect(stdout, "USED", a2, 1, "alpha");
    expect(stdout, "USED", b2, 1, NAME31);
    printf("#expect-free-covers %p\n", (void *)(c - 16));
    /* the block realloc moved away from is free and keeps its name */
    if (a2 != a)
        printf("#expect FREE %p - alpha\n", (void *)(a - 16));

    free(a2), free(b2), free(b31), free(b32), free(d), free(e), free(g), free(w), free(big);
    print_memory();
    printf("#expect-no-block %p\n", (void *)big);
    fflush(stdout);
    return 0;
}

static int first(void) {
    char *p = malloc_name(64, "first");
    char *q = malloc(300);
    print_memory(); /* the first stdio output of the program */
    expect(stdout, "USED", p, 1, "first");
    expect(stdout, "USED", q, 0, "");
    print_memory(); /* and once more, now that stdout is set up */
    expect(stdout, "USED", p, 1, "first");
    fflush(stdout);
    return 0;
}

static int to_stderr(void) {
    char *p = malloc_name(200, "on stderr");
    write_memory(stderr);
    expect(stderr, "USED", p, 1, "on stderr");
    free(p);
    write_memory(stderr);
    fprintf(stderr, "#expect-no-block %p\n", (void *)p);
    return 0;
}

static int to_file(const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        return 1;
    }
    char *p = malloc_name(200, "to a file");
    write_memory(f);
    expect(f, "USED", p, 1, "to a file");
    /* the FILE is itself a fitalloc block (glibc mallocs it in fopen) */
    fprintf(f, "#expect-block %p -\n", (void *)((char *)f - 16));
    write_memory(f); /* the stream's buffer now exists too */
    expect(f, "USED", p, 1, "to a file");
    fclose(f);
    free(p);
    return 0;
}

static int empty(void) {
    write_memory(stderr);
    fprintf(stderr, "#expect-regions 0\n");
    return 0;
}

static volatile int stop;
static long progress; /* operations done by all workers (atomic) */

static void *worker(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg * 7919u + 1;
    void *slot[64] = {0};
    long ops = 0;
    while (!__atomic_load_n(&stop, __ATOMIC_RELAXED) || ops < 20000) {
        seed = seed * 1103515245u + 12345u;
        unsigned i = (seed >> 8) % 64, size = 1 + (seed >> 16) % 3000;
        switch ((seed >> 4) % 4) {
        case 0:
            free(slot[i]);
            slot[i] = malloc(size);
            break;
        case 1:
            free(slot[i]);
            slot[i] = malloc_name(size, "worker");
            break;
        case 2:
            slot[i] = realloc(slot[i], size);
            break;
        default:
            free(slot[i]);
            slot[i] = calloc(1, size);
        }
        if (slot[i]) memset(slot[i], 0x33, size < 64 ? size : 64);
        ops++;
        __atomic_add_fetch(&progress, 1, __ATOMIC_RELAXED);
    }
    for (int i = 0; i < 64; i++) free(slot[i]);
    return (void *)ops;
}

static int threads(void) {
    enum { T = 4, DUMPS = 40 };
    pthread_t t[T];
    for (long i = 0; i < T; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (int k = 0; k < DUMPS; k++) {
        /* let the workers run between two dumps, so that they interleave */
        long target = __atomic_load_n(&progress, __ATOMIC_RELAXED) + 500;
        while (__atomic_load_n(&progress, __ATOMIC_RELAXED) < target) sched_yield();
        print_memory();
        printf("# dump %d\n", k);
    }
    __atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
    long total = 0;
    for (int i = 0; i < T; i++) {
        void *r;
        pthread_join(t[i], &r);
        total += (long)r;
    }
    print_memory();
    printf("# %ld operations by %d threads\n", total, T);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *m = argv[1];
    if (!strcmp(m, "basic")) return basic();
    if (!strcmp(m, "first")) return first();
    if (!strcmp(m, "stderr")) return to_stderr();
    if (!strcmp(m, "file") && argc == 3) return to_file(argv[2]);
    if (!strcmp(m, "empty")) return empty();
    if (!strcmp(m, "threads")) return threads();
    return 2;
}
