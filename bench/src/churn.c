/* (a) small-object churn, one thread.
 *
 * A working set of `live` blocks (random sizes 8..512 bytes) is built, then
 * `ops` operations each free a random live block (after checking its
 * contents) and allocate a new one of random size in its slot.
 * Args: live=100000 ops=6000000 seed=1 */
#include "common.h"

struct slot {
    unsigned char *p;
    uint32_t size;
    uint64_t tag;
};

static void fill(struct slot *s, uint64_t *rng)
{
    s->size = (uint32_t)rng_range(rng, 8, 512);
    s->tag = rng_next(rng);
    s->p = xmalloc(s->size);
    uint64_t inv = ~s->tag;
    memcpy(s->p, &s->tag, 8);
    if (s->size >= 16)
        memcpy(s->p + s->size - 8, &inv, 8);
    if (s->size >= 24)
        s->p[s->size / 2] = (unsigned char)(s->tag >> 8);
}

static uint64_t drop(struct slot *s)
{
    uint64_t a, b = ~s->tag;
    memcpy(&a, s->p, 8);
    if (s->size >= 16)
        memcpy(&b, s->p + s->size - 8, 8);
    if (a != s->tag || b != ~s->tag ||
        (s->size >= 24 && s->p[s->size / 2] != (unsigned char)(s->tag >> 8)))
        fail("block contents changed", (long)s->size, 0);
    free(s->p);
    return mix64(s->tag ^ s->size);
}

int main(int argc, char **argv)
{
    long live = arg_long(argc, argv, "live", 100000);
    long ops = arg_long(argc, argv, "ops", 6000000);
    uint64_t rng = (uint64_t)arg_long(argc, argv, "seed", 1);
    struct slot *slots = xmalloc(sizeof(struct slot) * (size_t)live);
    uint64_t check = 0;

    double t0 = now_s();
    for (long i = 0; i < live; i++)
        fill(&slots[i], &rng);
    for (long k = 0; k < ops; k++) {
        long i = (long)(rng_next(&rng) % (uint64_t)live);
        check += drop(&slots[i]);
        fill(&slots[i], &rng);
    }
    for (long i = 0; i < live; i++)
        check += drop(&slots[i]);
    double t1 = now_s();
    free(slots);

    printf("METRIC ns_per_op %.2f\n", (t1 - t0) * 1e9 / (double)(ops + live));
    printf("CHECK %016llx\n", (unsigned long long)check);
    return 0;
}
