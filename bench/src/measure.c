/* measure RESULT_FILE PROGRAM [ARGS...]
 *
 * Runs PROGRAM as a child and writes "wall_s maxrss_kib user_s sys_s status minor_faults"
 * to RESULT_FILE, from wait4()'s rusage. The harness starts every workload
 * through this small process rather than directly from Python: a child's peak
 * RSS (ru_maxrss) includes the memory of the process it was forked from
 * before exec, and Python's own ~20 MB would hide small workloads.
 * If BENCH_PRELOAD is set, the child gets it as LD_PRELOAD (so this wrapper
 * itself never runs on the allocator under test). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: measure RESULT_FILE PROGRAM [ARGS...]\n");
        return 2;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 2;
    }
    if (pid == 0) {
        const char *pre = getenv("BENCH_PRELOAD");
        if (pre && *pre)
            setenv("LD_PRELOAD", pre, 1);
        unsetenv("BENCH_PRELOAD");
        execvp(argv[2], argv + 2);
        perror(argv[2]);
        _exit(127);
    }
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0) {
        perror("wait4");
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    FILE *f = fopen(argv[1], "w");
    if (!f) {
        perror(argv[1]);
        return 2;
    }
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    fprintf(f, "%.6f %ld %.6f %.6f %d %ld\n",
            (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9, ru.ru_maxrss,
            (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6,
            (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6, code, ru.ru_minflt);
    fclose(f);
    return 0;
}
