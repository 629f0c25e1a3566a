/*
 * Exec load generator for bench.exec_storm and bench.soak.
 *
 *   loadgen SECONDS WORKERS NARGS ARGBYTES [RATE]
 *
 * WORKERS processes each run posix_spawn(PROGRAM) + waitpid in a loop until SECONDS have
 * passed, then the parent prints one line: "<execs> <failures> <elapsed seconds>".
 * Every child gets argv = { PROGRAM, MARKER, arg2 .. arg(NARGS-1) } where MARKER comes from
 * the environment variable ACB_MARKER (so the generator's own exec does not carry it) and
 * each extra argument is ARGBYTES long. Children get an empty environment.
 *
 * RATE > 0 paces the workers to RATE execs/s in all (each at RATE/WORKERS, on a fixed
 * schedule; a worker more than a second behind it starts afresh instead of bursting).
 * With ACB_NUMBERED=1 every exec's marker is "MARKER-N", N counting from 0 across all
 * workers, so each exec can be found exactly once: the numbers used are 0 .. execs+failures-1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROGRAM "/bin/true"
#define MAX_WORKERS 64
#define MAX_ARGS 256

struct tally {
    long execs;
    long failures;
};

/* Shared by the workers (one anonymous shared mapping). */
struct shared {
    long next_number;
    struct tally tallies[MAX_WORKERS];
};

#define MARKER_MAX 256

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char **build_argv(const char *marker, int nargs, int argbytes, int worker)
{
    char **argv = calloc((size_t)nargs + 1, sizeof(char *));
    if (argv == NULL)
        return NULL;
    argv[0] = PROGRAM;
    argv[1] = (char *)marker;
    for (int i = 2; i < nargs; i++) {
        char *arg = malloc((size_t)argbytes + 1);
        if (arg == NULL)
            return NULL;
        /* Printable, no spaces or quotes: auditd logs it verbatim, not hex-encoded. */
        int len = snprintf(arg, (size_t)argbytes + 1, "w%d-a%d-", worker, i);
        for (int j = len; j < argbytes; j++)
            arg[j] = (char)('a' + (i + j) % 26);
        arg[argbytes] = '\0';
        argv[i] = arg;
    }
    argv[nargs] = NULL;
    return argv;
}

static void sleep_until(double when)
{
    struct timespec ts;
    ts.tv_sec = (time_t)when;
    ts.tv_nsec = (long)((when - (double)ts.tv_sec) * 1e9);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

/* Wait for this worker's next slot (interval 0: flat out). */
static void pace(double *next, double interval)
{
    if (interval <= 0)
        return;
    double now = now_s();
    if (*next > now)
        sleep_until(*next);
    else if (now - *next > 1.0)
        *next = now; /* far behind (machine busy): resume the schedule, do not burst */
    *next += interval;
}

static void run_worker(struct shared *shared, int worker, double deadline, double interval,
                       int numbered, char **argv)
{
    char *envp[] = {NULL};
    const char *marker = argv[1];
    char own_marker[MARKER_MAX];
    long execs = 0, failures = 0;
    double next = now_s();
    if (numbered)
        argv[1] = own_marker;
    while (now_s() < deadline) {
        pid_t pid;
        pace(&next, interval);
        if (now_s() >= deadline)
            break;
        if (numbered) {
            long n = __atomic_fetch_add(&shared->next_number, 1, __ATOMIC_RELAXED);
            snprintf(own_marker, sizeof own_marker, "%s-%ld", marker, n);
        }
        int status;
        if (posix_spawn(&pid, PROGRAM, NULL, NULL, argv, envp) != 0) {
            failures++;
            continue;
        }
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            execs++;
        else
            failures++;
    }
    shared->tallies[worker].execs = execs;
    shared->tallies[worker].failures = failures;
}

int main(int argc, char **argv)
{
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: %s SECONDS WORKERS NARGS ARGBYTES [RATE]\n", argv[0]);
        return 2;
    }
    double seconds = atof(argv[1]);
    int workers = atoi(argv[2]), nargs = atoi(argv[3]), argbytes = atoi(argv[4]);
    double rate = argc == 6 ? atof(argv[5]) : 0.0;
    const char *marker = getenv("ACB_MARKER");
    const char *numbered_env = getenv("ACB_NUMBERED");
    int numbered = numbered_env != NULL && strcmp(numbered_env, "1") == 0;
    if (marker == NULL || seconds <= 0 || workers < 1 || workers > MAX_WORKERS || nargs < 2
        || nargs > MAX_ARGS || argbytes < 8 || rate < 0
        || (numbered && strlen(marker) > MARKER_MAX - 24)) {
        fprintf(stderr, "loadgen: bad arguments or ACB_MARKER unset\n");
        return 2;
    }
    double interval = rate > 0 ? workers / rate : 0.0;
    struct shared *shared = mmap(NULL, sizeof(struct shared), PROT_READ | PROT_WRITE,
                                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    double started = now_s();
    double deadline = started + seconds;
    pid_t pids[MAX_WORKERS];
    for (int w = 0; w < workers; w++) {
        pids[w] = fork();
        if (pids[w] < 0) {
            perror("fork");
            return 1;
        }
        if (pids[w] == 0) {
            char **child_argv = build_argv(marker, nargs, argbytes, w);
            if (child_argv == NULL)
                _exit(1);
            run_worker(shared, w, deadline, interval, numbered, child_argv);
            _exit(0);
        }
    }
    long execs = 0, failures = 0;
    for (int w = 0; w < workers; w++) {
        int status;
        while (waitpid(pids[w], &status, 0) < 0 && errno == EINTR)
            ;
        execs += shared->tallies[w].execs;
        failures += shared->tallies[w].failures;
    }
    printf("%ld %ld %.6f\n", execs, failures, now_s() - started);
    return 0;
}
