/* A small program touching every record kind: malloc, calloc, realloc
 * (in place, moving, shrinking), free, the memalign family, malloc_name,
 * print_memory / write_memory (marks), and a fork child. */
#define _GNU_SOURCE
#include <allocator.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 3;
    void *keep[64] = {0};
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < 64; i++) {
            switch ((i + r) % 7) {
            case 0: keep[i] = malloc(16 + 24 * i); break;
            case 1: keep[i] = calloc(i + 1, 8); break;
            case 2: keep[i] = malloc_name(40 + i, "named block"); break;
            case 3: { void *p = NULL; if (posix_memalign(&p, 64 << (i % 4), 100 + i) == 0) keep[i] = p; break; }
            case 4: keep[i] = aligned_alloc(256, 512); break;
            case 5: keep[i] = realloc(malloc(10), 5000 + i); break;
            default: keep[i] = valloc(300); break;
            }
        }
        for (int i = 0; i < 64; i += 2) { free(keep[i]); keep[i] = NULL; }
        for (int i = 1; i < 64; i += 4) keep[i] = realloc(keep[i], 8 + i);
        print_memory();
        if (r == 1) {
            pid_t c = fork();
            if (c == 0) {
                for (int i = 1; i < 64; i += 8) { free(keep[i]); keep[i] = NULL; }
                void *x = malloc_name(70000, "child big");
                write_memory(stdout);
                free(x);
                exit(0);
            }
            waitpid(c, NULL, 0);
        }
    }
    for (int i = 0; i < 64; i++) free(keep[i]);
    write_memory(stdout);
    return 0;
}
