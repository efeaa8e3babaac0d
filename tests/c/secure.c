/*
 * secure.c DIR — allocates and frees a little, with ALLOCATOR_* options in
 * its environment (set by tests/15-secure.sh). Run setuid, it must obey none
 * of them (as glibc ignores its malloc settings in such programs): no trace
 * file in DIR, no leak report or statistics on stderr.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    void *keep = malloc(100); /* still in use at exit: a leak report would list it */
    for (int i = 0; i < 1000; i++) {
        char *p = malloc(16 + (size_t)i);
        if (!p) return 1;
        memset(p, 1, 16);
        free(p);
    }
    printf("ran %p\n", keep != NULL ? (void *)1 : NULL);
    return 0;
}
