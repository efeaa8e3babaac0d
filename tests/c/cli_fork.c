/*
 * cli_fork.c — a parent allocates 100 blocks and forks. The child frees 40 of
 * the parent's blocks and reallocs 10 more (operations on pointers its own
 * trace never returned), allocates and frees blocks of its own, forks a
 * grandchild that does the same on the child's blocks, and exits. The parent
 * waits and frees its blocks. With ALLOCATOR_TRACE=T: T (parent), T.PID
 * (child), T.PID (grandchild). Prints "CHILD <pid> <foreign ops>" for each
 * descendant (to stdout, before forking... via write after fork).
 */
#define _GNU_SOURCE
#include <allocator.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#pragma weak malloc_name

static void say(const char *who, int foreign) {
    char line[64];
    snprintf(line, sizeof line, "%s %d %d\n", who, (int)getpid(), foreign);
    if (write(1, line, strlen(line)) < 0) _exit(3);
}

/* Works on blocks it did not allocate, then on its own; returns the number
 * of operations on the inherited blocks. */
static int descendant(void **inherited, int n) {
    int foreign = 0;
    for (int i = 0; i < n && i < 40; i++) {
        free(inherited[i]);
        inherited[i] = NULL;
        foreign++;
    }
    for (int i = 40; i < n && i < 50; i++) {
        inherited[i] = realloc(inherited[i], 5000);
        foreign++;
    }
    void *own[50];
    for (int i = 0; i < 50; i++) own[i] = malloc_name ? malloc_name(64 + i, "child") : malloc(64);
    for (int i = 0; i < 50; i += 2) free(own[i]);
    for (int i = 1; i < 50; i += 2) own[i] = realloc(own[i], 300);
    for (int i = 1; i < 50; i += 2) free(own[i]);
    return foreign;
}

int main(void) {
    void *b[100];
    for (int i = 0; i < 100; i++) {
        b[i] = malloc(32 + 8 * i);
        memset(b[i], 1, 32 + 8 * i);
    }
    pid_t c = fork();
    if (c < 0) return 1;
    if (c == 0) {
        int foreign = descendant(b, 100);
        void *mine[60];
        for (int i = 0; i < 60; i++) mine[i] = malloc(100);
        pid_t g = fork();
        if (g == 0) {
            say("GRANDCHILD", descendant(mine, 60));
            exit(0);
        }
        int st;
        waitpid(g, &st, 0);
        for (int i = 0; i < 60; i++) free(mine[i]);
        say("CHILD", foreign);
        exit(WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1);
    }
    int st;
    waitpid(c, &st, 0);
    for (int i = 0; i < 100; i++) free(b[i]);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}
