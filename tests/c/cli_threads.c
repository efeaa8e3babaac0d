/*
 * cli_threads.c [OPS] — 4 threads allocate (malloc, calloc, realloc,
 * malloc_name) and free, and hand half of their blocks to the next thread
 * through a locked mailbox, which frees them: cross-thread frees. Prints
 * "OPS <n>": the allocation-family calls the threads made (a lower bound for
 * the trace's records).
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
#define BOX 64

struct mailbox {
    pthread_mutex_t lock;
    void *slot[BOX];
    int n;
};

static struct mailbox box[THREADS];
static long per_thread = 5000;
static long counted[THREADS];

static void post(int to, void *p, long *ops) {
    struct mailbox *m = &box[to];
    pthread_mutex_lock(&m->lock);
    if (m->n == BOX) {
        free(m->slot[--m->n]); /* full: free the newest here */
        (*ops)++;
    }
    m->slot[m->n++] = p;
    pthread_mutex_unlock(&m->lock);
}

static void drain(int me, long *ops) {
    struct mailbox *m = &box[me];
    pthread_mutex_lock(&m->lock);
    while (m->n > 0) {
        free(m->slot[--m->n]); /* a block another thread allocated */
        (*ops)++;
    }
    pthread_mutex_unlock(&m->lock);
}

static void *worker(void *arg) {
    int me = (int)(intptr_t)arg;
    uint64_t x = 0x9E3779B97F4A7C15ull * (me + 1);
    void *mine[32] = {0};
    long ops = 0;
    for (long k = 0; k < per_thread; k++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        int i = (int)(x % 32);
        size_t n = 1 + (x >> 20) % 700;
        if (mine[i]) {
            if (x & 1) {
                post((me + 1) % THREADS, mine[i], &ops);
            } else {
                void *q = realloc(mine[i], n);
                ops++;
                if (q) {
                    memset(q, me, n);
                    mine[i] = q;
                    continue;
                }
                free(mine[i]);
                ops++;
            }
            mine[i] = NULL;
        }
        switch ((x >> 40) % 3) {
        case 0: mine[i] = malloc(n); break;
        case 1: mine[i] = calloc(1, n); break;
        default: mine[i] = malloc_name ? malloc_name(n, "worker") : malloc(n);
        }
        ops++;
        if (mine[i]) memset(mine[i], me, n);
        if (k % 16 == 0) drain(me, &ops);
    }
    for (int i = 0; i < 32; i++) {
        if (mine[i]) post((me + 1) % THREADS, mine[i], &ops);
    }
    counted[me] = ops;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) per_thread = atol(argv[1]);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) pthread_mutex_init(&box[i].lock, NULL);
    for (int i = 0; i < THREADS; i++) {
        if (pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i) != 0) return 1;
    }
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    long ops = 0;
    for (int i = 0; i < THREADS; i++) {
        long dummy = 0;
        drain(i, &dummy);
        ops += counted[i] + dummy;
    }
    printf("OPS %ld\n", ops);
    return 0;
}
