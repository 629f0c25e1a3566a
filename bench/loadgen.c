/*
 * Exec load generator for bench.exec_storm.
 *
 *   loadgen SECONDS WORKERS NARGS ARGBYTES
 *
 * WORKERS processes each run posix_spawn(PROGRAM) + waitpid in a loop until SECONDS have
 * passed, then the parent prints one line: "<execs> <failures> <elapsed seconds>".
 * Every child gets argv = { PROGRAM, MARKER, arg2 .. arg(NARGS-1) } where MARKER comes from
 * the environment variable ACB_MARKER (so the generator's own exec does not carry it) and
 * each extra argument is ARGBYTES long. Children get an empty environment.
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

static void run_worker(struct tally *out, double deadline, char **argv)
{
    char *envp[] = {NULL};
    long execs = 0, failures = 0;
    while (now_s() < deadline) {
        pid_t pid;
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
    out->execs = execs;
    out->failures = failures;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s SECONDS WORKERS NARGS ARGBYTES\n", argv[0]);
        return 2;
    }
    double seconds = atof(argv[1]);
    int workers = atoi(argv[2]), nargs = atoi(argv[3]), argbytes = atoi(argv[4]);
    const char *marker = getenv("ACB_MARKER");
    if (marker == NULL || seconds <= 0 || workers < 1 || workers > MAX_WORKERS || nargs < 2
        || nargs > MAX_ARGS || argbytes < 8) {
        fprintf(stderr, "loadgen: bad arguments or ACB_MARKER unset\n");
        return 2;
    }
    struct tally *tallies = mmap(NULL, sizeof(struct tally) * MAX_WORKERS,
                                 PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (tallies == MAP_FAILED) {
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
            run_worker(&tallies[w], deadline, child_argv);
            _exit(0);
        }
    }
    long execs = 0, failures = 0;
    for (int w = 0; w < workers; w++) {
        int status;
        while (waitpid(pids[w], &status, 0) < 0 && errno == EINTR)
            ;
        execs += tallies[w].execs;
        failures += tallies[w].failures;
    }
    printf("%ld %ld %.6f\n", execs, failures, now_s() - started);
    return 0;
}
