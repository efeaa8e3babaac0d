/*
 * trace_order.c [ROUNDS | uaf] — traced operations whose records are easy to
 * get out of heap order or to lose:
 * 1. 4 threads each malloc and free, ROUNDS times, a block big enough to
 *    fill a region of its own: every free empties a region whose span can
 *    go straight to another thread's arena, so the free must be recorded
 *    before that arena's allocation at the same address;
 * 2. a thread frees blocks of main's arena that the remote list cannot
 *    take (named, 0 bytes: the name lies where the link would go, so they
 *    are freed under the owner's lock) and shrinks others in place (a
 *    realloc that moves nothing), then main allocates the freed blocks'
 *    addresses again.
 * 3. last, a thread frees a block of main's arena, and main makes no
 *    allocator call after that: the block waits on main's remote list
 *    until the exit handler folds it, and that free must reach the file.
 * Prints "REALLOCS <n>": the in-place reallocs of part 2, which the trace
 * must hold as realloc records, and "LAST <p>": part 3's block, which it
 * must hold freed.
 * With "uaf": 100 mallocs and frees, then part 3 with a write after free
 * into the waiting block's first word (its link), so that the exit
 * handler's fold aborts; the trace must still hold the 200 operations made
 * before.
 */
#define _GNU_SOURCE
#include <allocator.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#pragma weak malloc_name

#define THREADS 4
#define HANDED 500
static long rounds = 50000;
static char *tiny[HANDED], *shrunk[HANDED], *last;

static void *churn(void *arg) {
    size_t n = 6000 + 512 * (size_t)(intptr_t)arg;
    for (long k = 0; k < rounds; k++) {
        char *p = malloc(n);
        if (!p) abort();
        p[0] = 1;
        free(p);
    }
    return NULL;
}

static char *named0(void) {
    return malloc_name ? malloc_name(0, "tiny") : malloc(0);
}

static void *other(void *arg) {
    (void)arg;
    for (int i = 0; i < HANDED; i++) {
        free(tiny[i]);
        if (realloc(shrunk[i], 50) != shrunk[i]) abort();
    }
    return NULL;
}

static void *free_last(void *arg) {
    (void)arg;
    free(last);
    return NULL;
}

static void free_last_then_write(void) {
    pthread_t t;
    last = malloc(64);
    if (!last) abort();
    if (pthread_create(&t, NULL, free_last, NULL) != 0) exit(1);
    pthread_join(t, NULL);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "uaf") == 0) {
        for (int i = 0; i < 100; i++) {
            char *volatile q = malloc(32 + i);
            free(q);
        }
        free_last_then_write();
        memset(last, 0x41, 8); /* the bug: a write after free */
        return 0;
    }
    if (argc > 1) rounds = atol(argv[1]);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        if (pthread_create(&t[i], NULL, churn, (void *)(intptr_t)i) != 0) return 1;
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);

    for (int i = 0; i < HANDED; i++) {
        tiny[i] = named0();
        shrunk[i] = malloc(100);
        if (!tiny[i] || !shrunk[i]) abort();
    }
    if (pthread_create(&t[0], NULL, other, NULL) != 0) return 1;
    pthread_join(t[0], NULL);
    for (int i = 0; i < HANDED; i++) tiny[i] = named0();
    for (int i = 0; i < HANDED; i++) {
        free(tiny[i]);
        free(shrunk[i]);
    }
    printf("REALLOCS %d\n", HANDED);

    last = malloc(64);
    if (!last) abort();
    printf("LAST %p\n", (void *)last);
    fflush(stdout);
    if (pthread_create(&t[0], NULL, free_last, NULL) != 0) return 1;
    pthread_join(t[0], NULL);
    return 0;
}
