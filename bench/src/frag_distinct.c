/* (b') fragmentation scaling with n distinct hole sizes.
 *
 * Like frag.c (row b), but the n unusable free blocks all have different
 * sizes, so an index ordered by size really holds n distinct keys (row b's
 * holes come in 15 sizes). The holes are requests of 16, 32, ..., 16n bytes
 * (blocks of 32 B to 16n+16 B in fitalloc) in a shuffled order, each followed
 * by a small "wall" (16..48 bytes) that stays allocated. Then, as in frag.c, a
 * block larger than everything (so in fitalloc a region of its own at the end
 * of the list) is shrunk in place with realloc, leaving one large free block
 * after it, and every hole is freed. The timed loop allocates 16n+64 ..
 * 16n+1087 bytes (larger than every hole), writes it and frees it: each
 * allocation must find the one usable free block among n+1.
 *
 * n distinct multiples of 16 add up to 8n^2 bytes: 80 KB at n=1e2, 800 MB at
 * n=1e4, 80 GB of address space at n=1e5. Only the headers are touched (one
 * or two pages per hole), so the resident size stays near 0.5 GB at n=1e5.
 *
 * The layout must not depend on the policy. Allocated one by one, a wall
 * would go to the first (best, ...) free tail of an earlier region and leave
 * its hole without a neighbour. So the blocks are laid out in groups (at most
 * 4096 holes and about 256 MiB): a group starts with one block of exactly the group's size
 * (one region in fitalloc), shrunk with realloc to the group's first hole;
 * the rest of the region is then the heap's only free block, so every policy
 * carves the group's walls and holes from it in order, and a last "filler"
 * takes what remains (the sizes follow fitalloc's rules: a 16-byte header,
 * multiples of 16). Other allocators just see the same calls; at n=1e4 and
 * 1e5 the requests (160 KB, 1.6 MB) are large allocations for them, so their
 * figures there show their large-allocation path rather than a search. The
 * holes are freed largest first: glibc sorts freed chunks into its large bins
 * by insertion, which is quadratic here in any other order (20 s at n=1e5).
 *
 * On fitalloc the heap is then checked through write_memory (before the
 * timed loop): METRIC holes (free blocks smaller than every request),
 * distinct_hole_sizes and usable_blocks (free blocks that can serve a
 * request) say whether the layout came out as designed; a warning goes to
 * stderr if not. The bookkeeping arrays come from mmap, not malloc.
 * Args: n=100000 iters=300000 seed=12 */
#include "common.h"
#include <sys/mman.h>
#include <unistd.h>

#define GROUP_BYTES ((size_t)256 << 20)
#define HDR 16 /* fitalloc's header; requests here are multiples of 16 */

static void *map_array(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        fail("mmap", (long)bytes, 0);
    return p;
}

static size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

static long nblocks_used;            /* walls, fillers: verified and freed at the end */
static unsigned char **used_p;
static uint32_t *used_sz;

static void keep(unsigned char *p, size_t size)
{
    p[0] = (unsigned char)nblocks_used;
    p[size - 1] = (unsigned char)(nblocks_used >> 8);
    used_p[nblocks_used] = p;
    used_sz[nblocks_used++] = (uint32_t)size;
}

/* Holes first..last-1 (sizes hsz[]) with their walls, as one group. */
static void lay_group(unsigned char **hole, const uint32_t *hsz, long first, long last, uint64_t *rng)
{
    uint32_t wsz[4096];
    size_t bytes = 0;
    long cnt = last - first;
    if (cnt > 4096)
        fail("group too large", cnt, 0);
    for (long i = 0; i < cnt; i++) {
        wsz[i] = (uint32_t)(16 * rng_range(rng, 1, 3));
        bytes += hsz[first + i] + HDR + wsz[i] + HDR;
    }
    size_t region = round_up(bytes, 4096);
    unsigned char *head = xmalloc(region - HDR);
    head = realloc(head, hsz[first]);
    if (!head)
        fail("realloc shrink returned NULL", (long)hsz[first], 0);
    hole[first] = head;
    for (long i = 0; i < cnt; i++) {
        if (i > 0)
            hole[first + i] = xmalloc(hsz[first + i]);
        unsigned char *w = xmalloc(wsz[i]);
        keep(w, wsz[i]);
    }
    size_t rest = region - bytes;
    if (rest >= 2 * HDR) {
        unsigned char *f = xmalloc(rest - HDR);
        keep(f, rest - HDR);
    }
}

/* fitalloc only: the free blocks by size, from write_memory. No malloc may
 * happen here (it would change the heap being looked at): the text goes to
 * stdout (whose buffer is static), redirected to an unlinked file that is
 * then read through mmap. */
struct layout {
    long holes, distinct, usable;
};

static void (*write_memory_fn)(FILE *);

static int probe_layout(size_t min_request, struct layout *out)
{
    if (!write_memory_fn)
        return 0;
    char path[] = "/tmp/frag_distinct.XXXXXX";
    int fd = mkstemp(path), saved = dup(1);
    if (fd < 0 || saved < 0)
        fail("mkstemp/dup", fd, saved);
    unlink(path);
    fflush(stdout);
    dup2(fd, 1);
    write_memory_fn(stdout);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    off_t len = lseek(fd, 0, SEEK_END);
    char *text = len > 0 ? mmap(NULL, (size_t)len, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
    if (text == MAP_FAILED)
        fail("mmap of the heap dump", (long)len, 0);
    size_t units = min_request / 16 + 1;
    unsigned char *seen = map_array(units);
    memset(out, 0, sizeof *out);
    for (char *line = text, *end = text + len; line < end;) {
        char *nl = memchr(line, '\n', (size_t)(end - line));
        nl = nl ? nl : end;
        char *br = memchr(line, ']', (size_t)(nl - line));
        if (br && strncmp(line, "  [BLOCK ", 9) == 0 && nl - br > 8 && memcmp(nl - 1, "'", 1) == 0) {
            char *state;
            unsigned long long size = strtoull(br + 1, &state, 10);
            if (strncmp(state, " [FREE]", 7) == 0) {
                if (size > min_request) {
                    out->usable++;
                } else {
                    out->holes++;
                    if (!seen[size / 16]++)
                        out->distinct++;
                }
            }
        }
        line = nl + 1;
    }
    munmap(text, (size_t)len);
    munmap(seen, units);
    close(fd);
    return 1;
}

int main(int argc, char **argv)
{
    long n = arg_long(argc, argv, "n", 100000);
    long iters = arg_long(argc, argv, "iters", 300000);
    uint64_t rng = (uint64_t)arg_long(argc, argv, "seed", 12);
    unsigned char **hole = map_array(sizeof(*hole) * (size_t)n);
    uint32_t *hsz = map_array(sizeof(*hsz) * (size_t)n);
    used_p = map_array(sizeof(*used_p) * (size_t)(2 * n + 1024));
    used_sz = map_array(sizeof(*used_sz) * (size_t)(2 * n + 1024));
    uint64_t check = 0;
    static char outbuf[1 << 16]; /* no malloc for stdout's buffer */
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
    write_memory_fn = (void (*)(FILE *))dlsym(RTLD_DEFAULT, "write_memory");

    /* hole sizes 16, 32, ..., 16n bytes in a random order */
    for (long i = 0; i < n; i++)
        hsz[i] = (uint32_t)(16 * (i + 1));
    for (long i = n - 1; i > 0; i--) {
        long j = (long)(rng_next(&rng) % (uint64_t)(i + 1));
        uint32_t t = hsz[i];
        hsz[i] = hsz[j];
        hsz[j] = t;
    }
    for (long first = 0; first < n;) {
        long last = first;
        size_t bytes = 0;
        while (last < n && last - first < 4096 && (bytes += hsz[last] + 128) <= GROUP_BYTES)
            last++;
        if (last == first)
            last++;
        lay_group(hole, hsz, first, last, &rng);
        first = last;
    }
    size_t lo = 16 * (size_t)n + 64, hi = 16 * (size_t)n + 1087;
    unsigned char *anchor = xmalloc(2 * hi + 65536);
    memset(anchor, 0x5a, 512);
    anchor = realloc(anchor, 512);
    if (!anchor)
        fail("realloc shrink returned NULL", 512, 0);
    /* largest first (see the top) */
    long *by_size = map_array(sizeof(*by_size) * (size_t)n);
    for (long i = 0; i < n; i++)
        by_size[hsz[i] / 16 - 1] = i;
    for (long k = n - 1; k >= 0; k--)
        free(hole[by_size[k]]);
    munmap(by_size, sizeof(*by_size) * (size_t)n);
    struct layout lay;
    int on_fitalloc = probe_layout(lo, &lay);
    if (on_fitalloc && (lay.holes < n || lay.distinct < n || lay.usable != 1))
        fprintf(stderr, "frag_distinct: warning: layout not as designed: %ld holes, %ld distinct sizes, "
                "%ld usable free blocks (expected %ld, %ld, 1)\n", lay.holes, lay.distinct, lay.usable, n, n);
    maybe_dump_heap();

    /* warm-up (also settles next fit's rover), then the timed loop */
    long warm = iters / 10 + 1;
    double t0 = 0;
    for (long k = -warm; k < iters; k++) {
        if (k == 0)
            t0 = now_s();
        size_t s = (size_t)rng_range(&rng, lo, hi);
        unsigned char *q = xmalloc(s);
        q[0] = (unsigned char)k;
        q[s - 1] = (unsigned char)(k >> 8);
        check += (uint64_t)q[0] + q[s - 1] + s;
        free(q);
    }
    double t1 = now_s();

    for (long i = 0; i < nblocks_used; i++) {
        if (used_p[i][0] != (unsigned char)i || used_p[i][used_sz[i] - 1] != (unsigned char)(i >> 8))
            fail("wall block changed", i, 0);
        free(used_p[i]);
    }
    for (int i = 0; i < 512; i++)
        if (anchor[i] != 0x5a)
            fail("anchor changed", i, 0);
    free(anchor);
    check += (uint64_t)nblocks_used;
    printf("METRIC ns_per_alloc %.3f\n", (t1 - t0) * 1e9 / (double)iters);
    if (on_fitalloc)
        printf("METRIC holes %ld\nMETRIC distinct_hole_sizes %ld\nMETRIC usable_blocks %ld\n", lay.holes,
               lay.distinct, lay.usable);
    printf("CHECK %016llx\n", (unsigned long long)check);
    return 0;
}
