/* (d) realloc growth of many vectors.
 *
 * `nvec` vectors each get a random final length (log-uniform, 16 B..16 KiB)
 * and grow, interleaved in random order, by small steps (1..32 bytes, a
 * realloc to the exact new length each time) while new bytes are written.
 * At the end every byte of every vector is checked, then all are freed.
 * Args: nvec=10000 seed=4 */
#include "common.h"
#include <math.h>

static inline unsigned char byte_of(long v, size_t j) { return (unsigned char)(v * 131 + (long)j * 7); }

int main(int argc, char **argv)
{
    long nvec = arg_long(argc, argv, "nvec", 10000);
    uint64_t rng = (uint64_t)arg_long(argc, argv, "seed", 4);
    unsigned char **vec = calloc((size_t)nvec, sizeof(*vec));
    size_t *len = calloc((size_t)nvec, sizeof(*len));
    size_t *target = calloc((size_t)nvec, sizeof(*target));
    long *active = calloc((size_t)nvec, sizeof(*active));
    if (!vec || !len || !target || !active)
        fail("calloc", 0, 0);
    for (long v = 0; v < nvec; v++) {
        double u = (double)(rng_next(&rng) >> 11) / 9007199254740992.0;
        target[v] = (size_t)(16.0 * pow(1024.0, u));
        active[v] = v;
    }
    long nactive = nvec, reallocs = 0;

    double t0 = now_s();
    while (nactive > 0) {
        long ai = (long)(rng_next(&rng) % (uint64_t)nactive);
        long v = active[ai];
        size_t step = (size_t)rng_range(&rng, 1, 32);
        size_t nl = len[v] + step;
        if (nl > target[v])
            nl = target[v];
        unsigned char *p = realloc(vec[v], nl);
        if (!p)
            fail("realloc returned NULL", (long)nl, 0);
        for (size_t j = len[v]; j < nl; j++)
            p[j] = byte_of(v, j);
        vec[v] = p;
        len[v] = nl;
        reallocs++;
        if (nl == target[v])
            active[ai] = active[--nactive];
    }
    uint64_t check = 0;
    for (long v = 0; v < nvec; v++) {
        for (size_t j = 0; j < len[v]; j++)
            if (vec[v][j] != byte_of(v, j))
                fail("vector contents changed", v, (long)j);
        check += len[v];
        free(vec[v]);
    }
    double t1 = now_s();
    free(vec);
    free(len);
    free(target);
    free(active);
    printf("METRIC ns_per_realloc %.2f\n", (t1 - t0) * 1e9 / (double)reallocs);
    printf("CHECK %016llx-%ld\n", (unsigned long long)check, reallocs);
    return 0;
}
