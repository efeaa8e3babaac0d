/*
 * foreign_check.c — malloc_usable_size and realloc of a block of another
 * thread's arena under ALLOCATOR_CHECK=1 (found by review): every usable
 * byte that malloc_usable_size reports may be written, and a realloc that
 * grows a block within its usable size keeps every byte up to the new size
 * writable; neither may leave check mode's canary bytes where the program
 * then writes (the free would report a false buffer overflow).
 * Prints "foreign_check: ok".
 */
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *p, *r;

static void *other(void *arg) {
    (void)arg;
    size_t n = malloc_usable_size(p); /* p belongs to the main thread's arena */
    memset(p, 'x', n);
    size_t u = 108; /* past the 100 bytes asked for, within the usable 112 */
    char *q = realloc(r, u);
    if (!q) {
        printf("realloc failed\n");
        exit(1);
    }
    memset(q, 'y', u);
    r = q;
    return NULL;
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    p = malloc(100);
    char *guard = malloc(100);
    r = malloc(100);
    pthread_t t;
    if (pthread_create(&t, NULL, other, NULL) != 0 || pthread_join(t, NULL) != 0) {
        printf("thread failed\n");
        return 1;
    }
    for (size_t i = 0; i < 100; i++)
        if (p[i] != 'x' || r[i] != 'y') {
            printf("bytes lost at %zu\n", i);
            return 1;
        }
    free(p);
    free(r);
    free(guard);
    printf("foreign_check: ok\n");
    return 0;
}
