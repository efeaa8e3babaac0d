/*
 * remote_held.c MODE — blocks one thread frees into another thread's arena
 * (a remote free) are not held back (SPEC §6: no memory of an exited thread
 * is lost), and a remote free changes nothing in the block but what the
 * program gave up. Prints "ok ..." and exits 0, or "FAIL ..." and exits 1.
 *
 *   idle    a worker allocates 128 blocks of 1 MiB, touches them and waits
 *           without another allocator call; main frees them all. The
 *           resident size must drop by at least half of them while the
 *           worker still waits (its arena's list is folded by the freeing
 *           thread once it holds a few MiB).
 *   exited  a worker allocates a 3 MiB block (under the size at which the
 *           freeing thread folds) and touches it; main frees it while the
 *           worker lives; the worker exits without another allocator call.
 *           After the join, main's malloc of 3 MiB must get the same address:
 *           the exiting thread folded its list, so the block's region went
 *           back to the span cache, which serves main's new region from it.
 *   small   (check mode) a worker allocates blocks of 0..7 bytes, whose
 *           canary bytes start within the first 8; main frees them while the
 *           worker lives; the worker allocates again (folding its list):
 *           no "buffer overflow" may be reported.
 *   name    a worker names a zero-size block (malloc_name(0, ...)); main
 *           frees it; print_memory must show it FREE with its name (SPEC §5)
 *           (the name lies where a remote-free link would be written).
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* from allocator.so, preloaded */
void *malloc_name(size_t size, const char *name) __attribute__((weak));
void print_memory(void) __attribute__((weak));

#define N 128
#define MIB (1 << 20)

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int stage;
static void *blocks[N];

static void fail(const char *what) {
    printf("FAIL %s\n", what);
    fflush(stdout);
    _exit(1);
}

static void set_stage(int s) {
    pthread_mutex_lock(&mu);
    stage = s;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void wait_stage(int s) {
    pthread_mutex_lock(&mu);
    while (stage < s) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

static long rss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    if (!f) fail("cannot read /proc/self/status");
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
    fclose(f);
    return kb;
}

static void *idle_worker(void *arg) {
    (void)arg;
    for (int i = 0; i < N; i++) {
        blocks[i] = malloc(MIB);
        if (!blocks[i]) fail("malloc");
        memset(blocks[i], i, MIB);
    }
    set_stage(1);
    wait_stage(2); /* no allocator call meanwhile */
    return NULL;
}

#define EXITED_SIZE (3 << 20)

static void *exited_worker(void *arg) {
    (void)arg;
    blocks[0] = malloc(EXITED_SIZE);
    if (!blocks[0]) fail("malloc");
    memset(blocks[0], 1, EXITED_SIZE);
    set_stage(1);
    wait_stage(2);
    return NULL; /* exits without another allocator call */
}

static void *small_worker(void *arg) {
    (void)arg;
    for (int i = 0; i < 8; i++) {
        blocks[i] = malloc((size_t)i);
        if (!blocks[i]) fail("malloc");
    }
    set_stage(1);
    wait_stage(2);
    for (int i = 0; i < 8; i++) free(malloc(16)); /* folds the list */
    return NULL;
}

static void *name_worker(void *arg) {
    (void)arg;
    blocks[0] = malloc_name(0, "zero-size name");
    blocks[1] = malloc(64);
    if (!blocks[0] || !blocks[1]) fail("malloc_name");
    set_stage(1);
    wait_stage(2);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    const char *m = argv[1];
    pthread_t t;
    void *(*worker)(void *) = !strcmp(m, "idle")     ? idle_worker
                              : !strcmp(m, "exited") ? exited_worker
                              : !strcmp(m, "name")   ? name_worker
                              : !strcmp(m, "small")  ? small_worker
                                                     : NULL;
    if (!worker) return 2;
    if (!strcmp(m, "name") && (!malloc_name || !print_memory)) fail("allocator.so is not preloaded");
    if (pthread_create(&t, NULL, worker, NULL)) fail("pthread_create");
    wait_stage(1);
    if (!strcmp(m, "idle")) {
        long before = rss_kb();
        for (int i = 0; i < N; i++) free(blocks[i]);
        long after = rss_kb();
        printf("idle: resident %ld kB with the blocks, %ld kB after main freed them\n", before, after);
        if (before - after < (long)N * 1024 / 2) fail("the freed blocks stay resident while their owner waits");
        set_stage(2);
        pthread_join(t, NULL);
        printf("ok idle\n");
        return 0;
    }
    if (!strcmp(m, "small")) {
        for (int i = 0; i < 8; i++) free(blocks[i]);
        set_stage(2);
        pthread_join(t, NULL);
        printf("ok small\n");
        return 0;
    }
    free(blocks[0]);
    set_stage(2);
    pthread_join(t, NULL);
    if (!strcmp(m, "exited")) {
        void *q = malloc(EXITED_SIZE);
        if (q != blocks[0]) {
            printf("FAIL the block freed into an exited thread's arena was not given back "
                   "(freed %p, new %p)\n", blocks[0], q);
            return 1;
        }
        printf("ok exited\n");
        return 0;
    }
    fflush(stdout);
    print_memory();
    fflush(stdout);
    return 0;
}
