/*
 * Links libfitalloc directly (no LD_PRELOAD): names a few allocations and
 * prints the heap.
 *
 *   make install PREFIX=$HOME/.local
 *   export PKG_CONFIG_PATH=$HOME/.local/lib/pkgconfig
 *   cc named_heap.c $(pkg-config --cflags --libs fitalloc) -o named_heap
 *   ./named_heap
 */
#include <allocator.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
    char *names[3];
    const char *labels[3] = {"config", "parser state", "a very long name that will be cut at 31 bytes"};
    for (int i = 0; i < 3; i++) {
        names[i] = malloc_name(100 * (i + 1), labels[i]);
        if (names[i] == NULL) {
            perror("malloc_name");
            return 1;
        }
        memset(names[i], 'x', 100 * (i + 1));
    }
    free(names[1]); /* a free block between the other two, keeping its name */
    print_memory();
    free(names[0]);
    free(names[2]);
    return 0;
}
