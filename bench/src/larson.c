/* (c) larson: a server that hands its work from thread to thread, after
 * Larson & Krishnan, "Memory allocation for long-running server
 * applications" (ISMM 1998), as in mimalloc-bench's larson; and (mode=private)
 * threads that only malloc and free their own blocks, like glibc's
 * benchtests/bench-malloc-thread.
 *
 * mode=larson: T slot arrays of `chunks` blocks (16..1024 bytes), each
 * first filled by main. Thread i works on array i: it frees a random slot
 * (after checking the block's contents) and allocates a new block of random
 * size into it, again and again; after rounds*chunks such steps it starts a
 * new thread, hands it the array (and the array's random generator) and
 * exits. So blocks allocated by one thread are freed by the next, and
 * threads come and go all the time. After `seconds` of wall time no new
 * thread takes over (as in larson, where main sleeps and then sets a stop
 * flag), except that every array does at least `min_ops` steps.
 *
 * mode=private: T threads, each with its own array of `chunks` blocks
 * (16..32768 bytes with an inverse square distribution, as glibc's
 * benchmark draws them: half are below 32 bytes), no hand-over; each thread does min_ops steps (seconds=0) or runs
 * for `seconds`.
 *
 * Throughput: steps (each one free and one malloc) per second over all
 * threads, from the start of the threads to the end of the last one;
 * METRIC ns_per_op is its inverse (the time column of the table).
 *
 * The checksum covers the first min_ops steps of every array: each array's
 * steps are drawn from its own generator, so what they free does not depend
 * on timing, while a fixed-time run does a timing-dependent number of steps
 * after that (the blocks left at the end are checked, not summed).
 * Args: mode=larson|private threads=2 seconds=1 chunks=5000 rounds=20
 *       min_ops=200000 seed=4141 */
#include "common.h"
#include <pthread.h>
#include <stdatomic.h>

#define MAXT 256

struct array {
    long id;
    unsigned char **slot;
    long ops;             /* steps done */
    uint64_t rng, check;  /* check: over the first min_ops steps */
    char pad[64];
};

static struct array arrays[MAXT];
static long chunks, gen_ops, min_ops;
static int larson;
static double seconds, t_start;
static _Atomic int time_up;
static pthread_mutex_t done_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER;
static int arrays_done;
static pthread_attr_t detached;

/* block layout: [u32 size][u32 array id][u64 tag] ... last byte = tag & 0xff */
static unsigned char *produce(struct array *a)
{
    uint32_t size;
    if (larson) {
        size = (uint32_t)rng_range(&a->rng, 16, 1024);
    } else {
        /* inverse square on [16, 32768], like glibc's get_block_size */
        double u = (double)(rng_next(&a->rng) >> 11) / 9007199254740992.0;
        size = (uint32_t)(1.0 / (1.0 / 16 - u * (1.0 / 16 - 1.0 / 32768)));
    }
    uint64_t tag = rng_next(&a->rng);
    uint32_t id = (uint32_t)a->id;
    unsigned char *p = xmalloc(size);
    memcpy(p, &size, 4);
    memcpy(p + 4, &id, 4);
    memcpy(p + 8, &tag, 8);
    p[size - 1] = (unsigned char)tag;
    return p;
}

static uint64_t consume(struct array *a, unsigned char *p)
{
    uint32_t size, id;
    uint64_t tag;
    memcpy(&size, p, 4);
    memcpy(&id, p + 4, 4);
    memcpy(&tag, p + 8, 8);
    if (id != (uint32_t)a->id || size < 16 || p[size - 1] != (unsigned char)tag)
        fail("block contents changed", (long)size, (long)id);
    free(p);
    return mix64(tag ^ size);
}

static int stop_now(struct array *a)
{
    if (a->ops < min_ops)
        return 0;
    if (!atomic_load_explicit(&time_up, memory_order_relaxed)) {
        if (now_s() - t_start < seconds)
            return 0;
        atomic_store(&time_up, 1);
    }
    return 1;
}

static void *worker(void *arg)
{
    struct array *a = arg;
    for (long k = 0; k < gen_ops || !larson; k++) {
        long victim = (long)(rng_next(&a->rng) % (uint64_t)chunks);
        uint64_t c = consume(a, a->slot[victim]);
        if (a->ops < min_ops)
            a->check += c;
        a->slot[victim] = produce(a);
        a->ops++;
        if ((a->ops & 255) == 0 && stop_now(a))
            goto done;
    }
    if (!stop_now(a)) {
        pthread_t t;
        if (pthread_create(&t, &detached, worker, a) != 0)
            fail("pthread_create (hand-over)", a->id, a->ops);
        return NULL;
    }
done:
    pthread_mutex_lock(&done_mu);
    arrays_done++;
    pthread_cond_signal(&done_cv);
    pthread_mutex_unlock(&done_mu);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *mode = arg_str(argc, argv, "mode", "larson");
    int nthreads = (int)arg_long(argc, argv, "threads", 2);
    larson = strcmp(mode, "larson") == 0;
    if (!larson && strcmp(mode, "private") != 0)
        fail("mode must be larson or private", 0, 0);
    seconds = strtod(arg_str(argc, argv, "seconds", "1"), NULL);
    chunks = arg_long(argc, argv, "chunks", larson ? 5000 : 1024);
    gen_ops = arg_long(argc, argv, "rounds", 20) * chunks;
    min_ops = arg_long(argc, argv, "min_ops", 200000);
    uint64_t seed = (uint64_t)arg_long(argc, argv, "seed", 4141);
    if (nthreads < 1 || nthreads > MAXT || chunks < 1)
        fail("bad thread count or chunks", nthreads, chunks);
    pthread_attr_init(&detached);
    pthread_attr_setdetachstate(&detached, PTHREAD_CREATE_DETACHED);

    for (long i = 0; i < nthreads; i++) {
        struct array *a = &arrays[i];
        a->id = i;
        a->rng = mix64(seed + (uint64_t)i);
        a->slot = xmalloc(sizeof(*a->slot) * (size_t)chunks);
        for (long j = 0; j < chunks; j++)
            a->slot[j] = produce(a);
    }

    t_start = now_s();
    for (long i = 0; i < nthreads; i++) {
        pthread_t t;
        if (pthread_create(&t, &detached, worker, &arrays[i]) != 0)
            fail("pthread_create", i, 0);
    }
    pthread_mutex_lock(&done_mu);
    while (arrays_done < nthreads)
        pthread_cond_wait(&done_cv, &done_mu);
    pthread_mutex_unlock(&done_mu);
    double t1 = now_s();

    long total = 0;
    uint64_t check = 0;
    for (long i = 0; i < nthreads; i++) {
        struct array *a = &arrays[i];
        total += a->ops;
        check += a->check;
        for (long j = 0; j < chunks; j++)
            consume(a, a->slot[j]);
        free(a->slot);
    }
    printf("METRIC mops_per_s %.4f\n", (double)total / (t1 - t_start) / 1e6);
    printf("METRIC ns_per_op %.3f\n", (t1 - t_start) * 1e9 / (double)total);
    printf("CHECK %016llx\n", (unsigned long long)check);
    return 0;
}
