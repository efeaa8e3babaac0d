/* (c) threads.
 *
 * mode=pc (producer/consumer ring): T threads; thread i allocates blocks
 * (16..1024 bytes), stamps them and hands them through a lock-free
 * single-producer/single-consumer queue to thread (i+1) % T, which checks
 * and frees them: every free is a cross-thread free (with T=1 the thread
 * hands blocks to itself, the baseline). `ops` blocks per thread.
 *
 * mode=srv (server-like): each thread runs rounds; a round allocates 64
 * short-lived request buffers (16..512 bytes), freed at the end of the round
 * in random order, and 8 "session" objects (64..4096 bytes) that replace
 * random entries of a shared pool; the replaced entry (usually allocated by
 * another thread, in an earlier round) is checked and freed. Sessions
 * outlive their thread's round. `ops` rounds*72 allocations per thread.
 *
 * Every thread does the same work, so T threads do T times the work of one;
 * throughput is allocations (+ frees) per second over all threads.
 * Args: mode=pc|srv threads=2 ops=2000000 */
#include "common.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#define QCAP 1024
#define MAXT 64

struct queue {
    _Atomic uint64_t head; /* written by the consumer */
    char pad1[56];
    _Atomic uint64_t tail; /* written by the producer */
    char pad2[56];
    _Atomic int producer_done;
    char pad3[60];
    unsigned char *slot[QCAP];
};

static struct queue queues[MAXT];
static int nthreads;
static long ops;
static _Atomic uint64_t total_check;

static uint64_t tag_of(long tid, long k) { return mix64(((uint64_t)tid << 40) ^ (uint64_t)k); }

static int q_push(struct queue *q, unsigned char *p)
{
    uint64_t t = atomic_load_explicit(&q->tail, memory_order_relaxed);
    if (t - atomic_load_explicit(&q->head, memory_order_acquire) >= QCAP)
        return 0;
    q->slot[t % QCAP] = p;
    atomic_store_explicit(&q->tail, t + 1, memory_order_release);
    return 1;
}

static unsigned char *q_pop(struct queue *q)
{
    uint64_t h = atomic_load_explicit(&q->head, memory_order_relaxed);
    if (h == atomic_load_explicit(&q->tail, memory_order_acquire))
        return NULL;
    unsigned char *p = q->slot[h % QCAP];
    atomic_store_explicit(&q->head, h + 1, memory_order_release);
    return p;
}

/* block layout: [u32 size][u32 pad][u64 tag] ... last byte = tag & 0xff */
static uint64_t consume(unsigned char *p)
{
    uint32_t size;
    uint64_t tag;
    memcpy(&size, p, 4);
    memcpy(&tag, p + 8, 8);
    if (p[size - 1] != (unsigned char)tag)
        fail("block contents changed", (long)size, 0);
    free(p);
    return tag;
}

static unsigned char *produce(uint64_t *rng, uint64_t tag, uint32_t lo, uint32_t hi)
{
    uint32_t size = (uint32_t)rng_range(rng, lo, hi);
    unsigned char *p = xmalloc(size);
    memcpy(p, &size, 4);
    memcpy(p + 8, &tag, 8);
    p[size - 1] = (unsigned char)tag;
    return p;
}

static void *pc_thread(void *arg)
{
    long tid = (long)arg;
    struct queue *out = &queues[tid];
    struct queue *in = &queues[(tid + nthreads - 1) % nthreads];
    uint64_t rng = 1000 + (uint64_t)tid, check = 0;
    for (long k = 0; k < ops; k++) {
        unsigned char *p = produce(&rng, tag_of(tid, k), 16, 1024);
        while (!q_push(out, p)) {
            unsigned char *q = q_pop(in);
            if (q)
                check += consume(q);
            else
                sched_yield();
        }
        if (k % 2 == 0) { /* consume at about the rate we produce */
            unsigned char *q = q_pop(in);
            if (q)
                check += consume(q);
        }
    }
    atomic_store(&out->producer_done, 1);
    for (;;) {
        unsigned char *q = q_pop(in);
        if (q) {
            check += consume(q);
            continue;
        }
        if (atomic_load(&in->producer_done)) {
            /* the producer finished; drain what is left */
            while ((q = q_pop(in)))
                check += consume(q);
            break;
        }
        sched_yield();
    }
    atomic_fetch_add(&total_check, check);
    return NULL;
}

#define STRIPES 64
#define ROUND_TEMP 64
#define ROUND_SESS 8
static pthread_mutex_t stripe_lock[STRIPES];
static unsigned char **pool;
static long pool_size;

static void *srv_thread(void *arg)
{
    long tid = (long)arg;
    uint64_t rng = 5000 + (uint64_t)tid, check = 0;
    long rounds = ops / (ROUND_TEMP + ROUND_SESS);
    long k = 0;
    unsigned char *temp[ROUND_TEMP];
    for (long r = 0; r < rounds; r++) {
        for (int i = 0; i < ROUND_TEMP; i++) {
            uint64_t tag = tag_of(tid, k++);
            temp[i] = produce(&rng, tag, 16, 512);
        }
        for (int i = 0; i < ROUND_SESS; i++) {
            uint64_t tag = tag_of(tid, k++);
            unsigned char *s = produce(&rng, tag, 64, 4096);
            long idx = (long)(rng_next(&rng) % (uint64_t)pool_size);
            pthread_mutex_t *l = &stripe_lock[idx % STRIPES];
            pthread_mutex_lock(l);
            unsigned char *old = pool[idx];
            pool[idx] = s;
            pthread_mutex_unlock(l);
            if (old)
                check += consume(old);
        }
        /* free the round's buffers in random order */
        for (int i = ROUND_TEMP - 1; i > 0; i--) {
            int j = (int)(rng_next(&rng) % (uint64_t)(i + 1));
            unsigned char *t = temp[i];
            temp[i] = temp[j];
            temp[j] = t;
        }
        for (int i = 0; i < ROUND_TEMP; i++)
            check += consume(temp[i]);
    }
    atomic_fetch_add(&total_check, check);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *mode = arg_str(argc, argv, "mode", "pc");
    nthreads = (int)arg_long(argc, argv, "threads", 2);
    ops = arg_long(argc, argv, "ops", 2000000);
    if (nthreads < 1 || nthreads > MAXT)
        fail("bad thread count", nthreads, 0);
    int srv = strcmp(mode, "srv") == 0;
    void *(*fn)(void *) = srv ? srv_thread : pc_thread;
    if (srv) {
        pool_size = 4096L * nthreads;
        pool = calloc((size_t)pool_size, sizeof(*pool));
        if (!pool)
            fail("calloc", 0, 0);
        for (int i = 0; i < STRIPES; i++)
            pthread_mutex_init(&stripe_lock[i], NULL);
    }

    pthread_t th[MAXT];
    double t0 = now_s();
    for (long i = 0; i < nthreads; i++)
        if (pthread_create(&th[i], NULL, fn, (void *)i) != 0)
            fail("pthread_create", i, 0);
    for (int i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
    if (srv) {
        for (long i = 0; i < pool_size; i++)
            if (pool[i])
                total_check += consume(pool[i]);
        free(pool);
    }
    double t1 = now_s();

    long per_thread = srv ? (ops / (ROUND_TEMP + ROUND_SESS)) * (ROUND_TEMP + ROUND_SESS) : ops;
    printf("METRIC mops_per_s %.4f\n", (double)per_thread * nthreads / (t1 - t0) / 1e6);
    printf("CHECK %016llx\n", (unsigned long long)atomic_load(&total_check));
    return 0;
}
