/*
 * fork() and friends in a threaded program on fitalloc. Usage: fork ROUNDS
 *
 *  fork     3 threads allocate and free all the time; meanwhile main (and, every
 *           fourth round, one of the allocating threads itself) forks ROUNDS
 *           times. Each child: frees a block the parent allocated before the
 *           fork, mallocs/reallocs/frees a few hundred blocks (a few big
 *           enough to map new regions), starts a thread that allocates, forks
 *           a grandchild that allocates, and exits 0. The parent waits for
 *           every child and checks its status. A child that deadlocks is
 *           killed by its own alarm (SIGALRM) and reported as such.
 *  system   system() and popen() while the threads allocate: exit statuses
 *           and the text read back must be right.
 *
 * Any failure prints "fork: FAIL ..." and exits 1.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define DIE(...)                                                                                   \
  do {                                                                                             \
    fprintf(stderr, "fork: FAIL " __VA_ARGS__);                                                    \
    fputc('\n', stderr);                                                                           \
    exit(1);                                                                                       \
  } while (0)

static volatile int stop;
static long forks_from_thread;

static uint64_t rng_next(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* The child's (and grandchild's) work: returns 0 when all went well. */
static int child_work(uint64_t seed) {
  enum { N = 300 };
  static unsigned char *p[N];
  static size_t n[N];
  for (int i = 0; i < N; i++) {
    n[i] = i % 50 == 0 ? (size_t)(1 << 20) + rng_next(&seed) % (1 << 20) : 1 + rng_next(&seed) % 3000;
    p[i] = malloc(n[i]);
    if (!p[i]) return 10;
    memset(p[i], i & 0xFF, n[i]);
  }
  for (int i = 0; i < N; i += 3) {
    size_t m = 1 + rng_next(&seed) % 6000;
    unsigned char *q = realloc(p[i], m);
    if (!q) return 11;
    for (size_t k = 0; k < (m < n[i] ? m : n[i]); k++)
      if (q[k] != (i & 0xFF)) return 12;
    memset(q, i & 0xFF, m);
    p[i] = q;
    n[i] = m;
  }
  for (int i = 0; i < N; i++) {
    for (size_t k = 0; k < n[i]; k++)
      if (p[i][k] != (i & 0xFF)) return 13;
    free(p[i]);
  }
  return 0;
}

static void *child_thread(void *arg) {
  return (void *)(intptr_t)child_work((uint64_t)(uintptr_t)arg);
}

static unsigned char *inherited[64];

/* In the child: everything a freshly forked process may do. */
static void in_child(uint64_t seed, int round) {
  alarm(20); /* a deadlocked child dies of SIGALRM instead of hanging */
  unsigned char *b = inherited[round % 64];
  for (int k = 0; k < 1000; k++)
    if (b[k] != (unsigned char)(round % 64)) _exit(20);
  free(b);
  int rc = child_work(seed);
  if (rc) _exit(rc);
  pthread_t t;
  void *tr;
  if (pthread_create(&t, NULL, child_thread, (void *)(uintptr_t)(seed + 1))) _exit(30);
  pthread_join(t, &tr);
  if (tr) _exit(31);
  pid_t g = fork();
  if (g < 0) _exit(32);
  if (g == 0) {
    alarm(20);
    _exit(child_work(seed + 2));
  }
  int st;
  if (waitpid(g, &st, 0) != g || !WIFEXITED(st) || WEXITSTATUS(st) != 0) _exit(33);
  _exit(0);
}

static void check_child(pid_t pid, int round, const char *who) {
  int st;
  if (waitpid(pid, &st, 0) != pid) DIE("waitpid(%d)", (int)pid);
  if (WIFSIGNALED(st))
    DIE("round %d: child forked by %s killed by signal %d%s", round, who, WTERMSIG(st),
        WTERMSIG(st) == SIGALRM ? " (SIGALRM: it deadlocked for 20 s)" : "");
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
    DIE("round %d: child forked by %s exited with status %d (see in_child: 1x = its own "
        "allocations, 20 = inherited block, 3x = thread/grandchild)",
        round, who, WEXITSTATUS(st));
}

static pthread_mutex_t fork_mu = PTHREAD_MUTEX_INITIALIZER;
static int thread_fork_round = -1;

static void *allocator(void *arg) {
  uint64_t s = 88172645463325252ULL + (uint64_t)(uintptr_t)arg;
  enum { K = 256 };
  unsigned char *p[K] = {0};
  size_t n[K] = {0};
  while (!stop) {
    int i = (int)(rng_next(&s) % K);
    if (p[i]) {
      for (size_t k = 0; k < n[i]; k += 64)
        if (p[i][k] != (unsigned char)i) DIE("allocator thread: block %d corrupted", i);
      free(p[i]);
      p[i] = NULL;
    } else {
      n[i] = rng_next(&s) % 64 == 0 ? 200000 : 1 + rng_next(&s) % 2048;
      p[i] = malloc(n[i]);
      if (!p[i]) DIE("allocator thread: malloc(%zu) failed", n[i]);
      memset(p[i], i, n[i]);
    }
    /* thread 0 forks when main asks it to */
    if ((uintptr_t)arg == 0) {
      pthread_mutex_lock(&fork_mu);
      int r = thread_fork_round;
      thread_fork_round = -1;
      pthread_mutex_unlock(&fork_mu);
      if (r >= 0) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) DIE("fork from a thread");
        if (pid == 0) in_child(s, r);
        check_child(pid, r, "an allocating thread");
        __atomic_add_fetch(&forks_from_thread, 1, __ATOMIC_SEQ_CST);
      }
    }
  }
  for (int i = 0; i < K; i++) free(p[i]);
  return NULL;
}

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 100;
  setvbuf(stdout, NULL, _IOLBF, 0);
  pthread_t t[3];
  for (uintptr_t i = 0; i < 3; i++)
    if (pthread_create(&t[i], NULL, allocator, (void *)i)) DIE("pthread_create");

  int from_main = 0;
  for (int r = 0; r < rounds; r++) {
    for (int k = 0; k < 64; k++) {
      if (!inherited[k]) {
        inherited[k] = malloc(1000 + (size_t)k * 100);
        memset(inherited[k], k, 1000);
      }
    }
    if (r % 4 == 3) { /* ask allocator thread 0 to fork */
      long before = __atomic_load_n(&forks_from_thread, __ATOMIC_SEQ_CST);
      pthread_mutex_lock(&fork_mu);
      thread_fork_round = r;
      pthread_mutex_unlock(&fork_mu);
      for (int w = 0; __atomic_load_n(&forks_from_thread, __ATOMIC_SEQ_CST) == before; w++) {
        if (w > 3000) DIE("round %d: the thread's fork did not finish in 30 s", r);
        usleep(10000);
      }
      continue;
    }
    pid_t pid = fork();
    if (pid < 0) DIE("fork");
    if (pid == 0) in_child(0x9E3779B97F4A7C15ULL * (uint64_t)(r + 1), r);
    check_child(pid, r, "main");
    from_main++;
  }
  printf("ok   fork: %d children forked by main, %ld by an allocating thread, all exited 0\n",
         from_main, forks_from_thread);

  for (int r = 0; r < 20; r++) {
    int st = system("x=$(head -c 100000 /dev/zero | tr '\\0' a); exit $(( ${#x} % 7 + 1 ))");
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 100000 % 7 + 1)
      DIE("system(): status %#x, expected exit %d", st, 100000 % 7 + 1);
    FILE *f = popen("seq 1 5000; echo done", "r");
    if (!f) DIE("popen");
    char line[64];
    long sum = 0, lines = 0;
    int done = 0;
    while (fgets(line, sizeof line, f)) {
      if (!strcmp(line, "done\n")) done = 1;
      else sum += atol(line);
      lines++;
    }
    int pst = pclose(f);
    if (pst != 0 || !done || lines != 5001 || sum != 5000L * 5001 / 2)
      DIE("popen(): %ld lines, sum %ld, done %d, pclose %#x", lines, sum, done, pst);
    FILE *w = popen("wc -c >/dev/null; exit 4", "w");
    if (!w) DIE("popen w");
    for (int k = 0; k < 1000; k++) fputs("some text for the child\n", w);
    pst = pclose(w);
    if (!WIFEXITED(pst) || WEXITSTATUS(pst) != 4) DIE("pclose of a writer: %#x", pst);
  }
  printf("ok   system/popen: 20 rounds of system(), popen(r), popen(w) while threads allocate\n");

  stop = 1;
  for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
  for (int k = 0; k < 64; k++) free(inherited[k]);
  printf("fork: all ok\n");
  return 0;
}
