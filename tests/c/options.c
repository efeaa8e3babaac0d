/*
 * options.c MODE — ALLOCATOR_ALGORITHM and ALLOCATOR_CHECK (SPEC §3, §4).
 *   policy   carves one fresh region into used guards and free holes, then
 *            prints the offsets (from the region start) that two requests get:
 *            "r1 <offset> r2 <offset>"
 *   switch   the same, but switches the environment to one with
 *            ALLOCATOR_ALGORITHM=argv[2] between the two requests
 *   churn    many allocations, with the environment changed now and then
 *            (each change makes fitalloc read its options again): setenv of
 *            an unrelated variable, and environ replaced by fresh copies of
 *            its strings, as a shell does
 *   corrupt  overruns a block into its neighbour's header, then only mallocs:
 *            ALLOCATOR_CHECK=1 must abort at that malloc; without it the
 *            program prints "survived"
 *   checkoff poison|guard
 *            check mode on at start, then an environment without it: a block
 *            freed (poisoned) or handed out (with canary bytes) while it was
 *            on keeps its mark, so a write after free ("poison") or past the
 *            request ("guard") made after check mode went off is still
 *            caught when the block is used again or freed; the program
 *            prints "survived" if not
 * stdout is unbuffered so that stdio never allocates.
 *
 * The region of "policy" (block sizes with header, offsets from its start):
 *
 *    0 A 256 free | 256 g | 288 B 512 free | 800 g | 832 C 192 free | 1024 g |
 * 1056 D 512 free | 1568 g | 1600 E 160 free | 1760 g | 1792 filler to the page end
 *
 * (g: a used 32-byte guard). r1 = malloc(496) needs 512, r2 = malloc(144) 160.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *volatile sink;

/*
 * A new environment with ALLOCATOR_ALGORITHM=name, built without allocating
 * (setenv would malloc, and its blocks would land in the holes).
 */
extern char **environ;
static void switch_policy(const char *name) {
    static char *env[256];
    static char entry[64];
    snprintf(entry, sizeof entry, "ALLOCATOR_ALGORITHM=%s", name);
    int n = 0;
    env[n++] = entry;
    for (char **e = environ; *e && n < 255; e++)
        if (strncmp(*e, "ALLOCATOR_ALGORITHM=", 20) != 0) env[n++] = *e;
    env[n] = NULL;
    environ = env;
}

static int policy(const char *switch_to) {
    struct mallinfo2 mi = mallinfo2();
    if (mi.arena != 0 || mi.ordblks != 0) {
        printf("precondition: the heap is not empty at start (mapped %zu, free blocks %zu)\n",
               mi.arena, mi.ordblks);
        return 1;
    }
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    char *a = malloc(240), *g1 = malloc(16), *b = malloc(496), *g2 = malloc(16);
    char *c = malloc(176), *g3 = malloc(16), *d = malloc(496), *g4 = malloc(16);
    char *e = malloc(144), *g5 = malloc(16);
    char *filler = malloc(page - 1792 - 16);
    char *base = a - 16;
    /* the layout is the one drawn above, in one region */
    char *want[] = {a, g1, b, g2, c, g3, d, g4, e, g5, filler};
    size_t at[] = {0, 256, 288, 800, 832, 1024, 1056, 1568, 1600, 1760, 1792};
    for (int i = 0; i < 11; i++) {
        if (want[i] - 16 != base + at[i]) {
            printf("precondition: block %d at offset %td, expected %zu\n", i, want[i] - 16 - base,
                   at[i]);
            return 1;
        }
    }
    mi = mallinfo2();
    if (mi.arena != page || mi.ordblks != 0) {
        printf("precondition: expected one full region of one page (mapped %zu, free blocks %zu)\n",
               mi.arena, mi.ordblks);
        return 1;
    }
    free(a), free(b), free(c), free(d), free(e);
    char *r1 = malloc(496);
    if (switch_to) switch_policy(switch_to);
    char *r2 = malloc(144);
    printf("r1 %td r2 %td\n", r1 - 16 - base, r2 - 16 - base);
    sink = g1, sink = g2, sink = g3, sink = g4, sink = g5, sink = filler;
    return 0;
}

/*
 * What a shell does before running a command: a new environ array whose
 * entries are fresh copies of the strings (same text, new addresses).
 */
static void copy_environment(void) {
    size_t n = 0;
    while (environ[n]) n++;
    char **env = malloc((n + 1) * sizeof *env);
    for (size_t i = 0; i < n; i++) env[i] = strdup(environ[i]);
    env[n] = NULL;
    environ = env; /* the old copies are leaked, as a shell may */
}

static int churn(void) {
    enum { SLOTS = 256 };
    static void *slot[SLOTS];
    unsigned seed = 12345;
    char value[32];
    for (int i = 0; i < 40000; i++) {
        seed = seed * 1103515245u + 12345u;
        unsigned k = (seed >> 8) % SLOTS, size = (seed >> 16) % 2000;
        if ((seed >> 4) & 1) {
            free(slot[k]);
            slot[k] = malloc(size);
        } else {
            slot[k] = realloc(slot[k], size + 1);
        }
        if (i % 4000 == 0) { /* a new environment: options are read again */
            snprintf(value, sizeof value, "%d", i);
            setenv("FITALLOC_TEST_UNRELATED", value, 1);
        }
        if (i % 4000 == 2000) copy_environment();
    }
    for (int k = 0; k < SLOTS; k++) free(slot[k]);
    printf("churn done\n");
    return 0;
}

/* A new environment without ALLOCATOR_CHECK, built without allocating. */
static void drop_check(void) {
    static char *env[256];
    int n = 0;
    for (char **e = environ; *e && n < 255; e++)
        if (strncmp(*e, "ALLOCATOR_CHECK=", 16) != 0) env[n++] = *e;
    env[n] = NULL;
    environ = env;
}

static int checkoff(const char *what) {
    char *p = malloc(100), *g = malloc(100);
    sink = g;
    if (!strcmp(what, "poison")) {
        free(p);
        drop_check();
        sink = malloc(200); /* options read again: check mode is off */
        p[40] = 'x';        /* a write after free */
        sink = malloc(100); /* first fit takes p's block */
    } else {
        drop_check();
        sink = malloc(200);
        p[100] = 'x'; /* one byte past the request */
        free(p);
    }
    printf("survived\n");
    return 0;
}

static int corrupt(void) {
    char *p = malloc(100), *q = malloc(100);
    sink = q;
    if (q - 16 != p + malloc_usable_size(p)) {
        printf("precondition: blocks not adjacent\n");
        return 1;
    }
    memset(p, 'x', malloc_usable_size(p) + 16); /* q's header is gone */
    sink = malloc(10);
    sink = malloc(5000);
    printf("survived\n");
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 2) return 2;
    if (!strcmp(argv[1], "policy")) return policy(NULL);
    if (!strcmp(argv[1], "switch") && argc == 3) return policy(argv[2]);
    if (!strcmp(argv[1], "churn")) return churn();
    if (!strcmp(argv[1], "corrupt")) return corrupt();
    if (!strcmp(argv[1], "checkoff") && argc == 3) return checkoff(argv[2]);
    return 2;
}
