/* (e) large blocks.
 *
 * `iters` times: allocate a block of 1..32 MiB (random, not page-rounded),
 * touch all of it (memset), check a few bytes, and free the block allocated
 * two iterations earlier (two large blocks are live at a time).
 * Args: iters=200 seed=5 */
#include "common.h"

int main(int argc, char **argv)
{
    long iters = arg_long(argc, argv, "iters", 200);
    uint64_t rng = (uint64_t)arg_long(argc, argv, "seed", 5);
    unsigned char *live[2] = {NULL, NULL};
    size_t lsz[2] = {0, 0};
    uint64_t check = 0;

    double t0 = now_s();
    for (long k = 0; k < iters; k++) {
        int i = (int)(k % 2);
        if (live[i]) {
            size_t s = lsz[i];
            unsigned char b = (unsigned char)(k - 2);
            if (live[i][0] != b || live[i][s / 2] != b || live[i][s - 1] != b)
                fail("large block changed", k, 0);
            check += s;
            free(live[i]);
        }
        size_t s = (size_t)rng_range(&rng, 1 << 20, 32 << 20);
        live[i] = xmalloc(s);
        memset(live[i], (int)(k & 0xff), s);
        lsz[i] = s;
    }
    for (int i = 0; i < 2; i++)
        free(live[i]);
    double t1 = now_s();
    printf("METRIC ms_per_iter %.4f\n", (t1 - t0) * 1e3 / (double)iters);
    printf("CHECK %016llx\n", (unsigned long long)check);
    return 0;
}
