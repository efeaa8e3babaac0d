/*
 * fitalloc — extensions beyond the C allocation family.
 *
 * Link with -lfitalloc (or run under LD_PRELOAD=allocator.so and declare
 * these functions weak). All functions are thread safe.
 */
#ifndef FITALLOC_ALLOCATOR_H
#define FITALLOC_ALLOCATOR_H

#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * malloc_name: like malloc(size), and records `name` with the block. The
 * first 31 bytes of the name are kept; print_memory and the leak report show
 * it. A NULL name gives an unnamed block. Returns NULL with errno = ENOMEM
 * when out of memory. The block is freed with free() as usual; realloc keeps
 * the name.
 */
void *malloc_name(size_t size, const char *name);

/*
 * print_memory: writes the whole heap to stdout, one line per region and per
 * block in list order:
 *
 *   -- Current Memory State --
 *   [REGION 0x7f3a1c000000-0x7f3a1c002000] 8192
 *     [BLOCK 0x7f3a1c000000-0x7f3a1c000050] 80 [USED] 'name'
 *     [BLOCK 0x7f3a1c000050-0x7f3a1c002000] 8112 [FREE] ''
 *
 * Sizes are whole blocks: the 16-byte header, the request rounded up to 16,
 * and for a named block its 32-byte name area (the 80-byte block above is
 * malloc_name(32, "name")); at least 32. The text is a snapshot taken under
 * the heap lock, written through stdio (and flushed) afterwards.
 */
void print_memory(void);

/* write_memory: the same text as print_memory, to the stream `fp`. */
void write_memory(FILE *fp);

#ifdef __cplusplus
}
#endif

#endif /* FITALLOC_ALLOCATOR_H */
