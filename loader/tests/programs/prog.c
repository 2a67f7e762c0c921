/* Test program for the loader tests: several threads keep running (spinning
 * in a function we patch, sleeping, blocked in read) while the test drives
 * the main thread with one command per stdin line, one reply per stdout line.
 * The test substitutes PATCHME_* markers to make the "new" versions. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hotpatch.h"

int g_value = 42;
static int calls;
static __thread long tls_count;
static atomic_long spins, sleeps, sleep_eintr, read_eintr;
static int pipefd[2];

/* COMPUTE_PRELUDE: functions a patch adds; COMPUTE_EXTRA: what compute
 * adds to its result (stacked levels grow compute and call them). */
COMPUTE_PRELUDE

__attribute__((noipa)) int compute(int x)
{
    calls++;
    return x * COMPUTE_FACTOR + g_value COMPUTE_EXTRA;
}

__attribute__((noipa)) static const char *greet(void)
{
    return GREETING;
}

__attribute__((noipa)) void say(int n)
{
    printf(SAY_FORMAT, n);
    SAY_EXTRA
}

__attribute__((noipa)) long work_unit(long x)
{
    return (x * WORK_FACTOR + 1) ^ (x >> 3);
}

__attribute__((noipa)) long tls_bump(void)
{
    return tls_count += TLS_STEP;
}

static long thread_pointer(void)
{
    long tp;
    __asm__ volatile("mov %%fs:0, %0" : "=r"(tp));
    return tp;
}

/* Where tls_count lives relative to the thread pointer, as this function's
 * code computes it (+ TLS_BIAS): a patched copy gets its TP offset from the
 * loader, so comparing it with main's own answer checks the loader's. */
__attribute__((noipa)) long tls_offset(void)
{
    return (long)((char *)&tls_count - (char *)thread_pointer()) + TLS_BIAS;
}

/* Loops forever at offsets 1..4: the loader must find it busy. */
__attribute__((noipa)) void busy_loop(void)
{
    __asm__ volatile("nop\n1: pause\n jmp 1b\n" BUSY_EXTRA);
}

static void *spinner(void *arg)
{
    (void)arg;
    long x = 1;
    for (;;) {
        x = work_unit(x) & 0xffff;
        atomic_fetch_add(&spins, 1);
    }
    return NULL;
}

static void *sleeper(void *arg)
{
    (void)arg;
    for (;;) {
        struct timespec ts = {0, 1000000};
        if (nanosleep(&ts, NULL) < 0 && errno == EINTR)
            atomic_fetch_add(&sleep_eintr, 1);
        atomic_fetch_add(&sleeps, 1);
    }
    return NULL;
}

static void *reader(void *arg)
{
    (void)arg;
    char c;
    for (;;) {
        ssize_t n = read(pipefd[0], &c, 1);
        if (n < 0 && errno == EINTR)
            atomic_fetch_add(&read_eintr, 1);
    }
    return NULL;
}

/* A forked child (or a daemon: fork, setsid, fork again) that writes
 * "compute(1) loops" to `path` every few milliseconds, with threads of its
 * own, until killed. Returns the pid to report, in the parent. */
static void child_loop(const char *path)
{
    pthread_t t;
    pthread_create(&t, NULL, spinner, NULL);
    pthread_create(&t, NULL, sleeper, NULL);
    for (long loops = 1;; loops++) {
        char tmp[1100], text[64];
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        FILE *f = fopen(tmp, "w");
        if (f) {
            snprintf(text, sizeof text, "%d %ld\n", compute(1), loops);
            fputs(text, f);
            fclose(f);
            rename(tmp, path);
        }
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
}

static int spawn(const char *path, int daemonize)
{
    int fds[2];
    if (pipe(fds))
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        fclose(stdin);
        if (daemonize) {
            setsid();
            if (fork() != 0)
                _exit(0);
            if (chdir("/"))
                _exit(1);
        }
        int me = (int)getpid();
        if (write(fds[1], &me, sizeof me) != sizeof me)
            _exit(1);
        close(fds[1]);
        child_loop(path);
    }
    close(fds[1]);
    int child = -1;
    if (read(fds[0], &child, sizeof child) != sizeof child)
        child = -1;
    close(fds[0]);
    if (daemonize)
        waitpid(pid, NULL, 0);
    return child;
}

/* Threads that live a moment, started one after another for ever: there
 * is always one being created or exiting (with its signals blocked). */
static void *short_lived(void *arg)
{
    (void)arg;
    long x = 1;
    for (int i = 0; i < 200; i++)
        x = work_unit(x) & 0xffff;
    return (void *)x;
}

static void *churn(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_t t;
        if (pthread_create(&t, NULL, short_lived, NULL) == 0)
            pthread_join(t, NULL);
    }
    return NULL;
}

static void *busy(void *arg)
{
    (void)arg;
    busy_loop();
    return NULL;
}

int main(void)
{
    pthread_t t;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (pipe(pipefd))
        return 1;
    pthread_create(&t, NULL, spinner, NULL);
    pthread_create(&t, NULL, spinner, NULL);
    pthread_create(&t, NULL, sleeper, NULL);
    pthread_create(&t, NULL, reader, NULL);
    printf("ready %d\n", (int)getpid());
    char line[1024];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        char err[1024] = "";
        if (strncmp(line, "compute ", 8) == 0)
            printf("%d\n", compute(atoi(line + 8)));
        else if (strcmp(line, "greet") == 0)
            printf("%s\n", greet());
        else if (strcmp(line, "calls") == 0)
            printf("%d\n", calls);
        else if (strcmp(line, "g_value") == 0)
            printf("%d\n", g_value);
        else if (strncmp(line, "say ", 4) == 0) {
            say(atoi(line + 4));
            printf("said\n");
        } else if (strncmp(line, "wu ", 3) == 0)
            printf("%ld\n", work_unit(atol(line + 3)));
        else if (strcmp(line, "spins") == 0)
            printf("%ld\n", atomic_load(&spins));
        else if (strcmp(line, "tlsoff") == 0)
            printf("%ld\n", tls_offset());
        else if (strcmp(line, "tlsown") == 0)
            printf("%ld\n", (long)((char *)&tls_count - (char *)thread_pointer()));
        else if (strcmp(line, "tls") == 0)
            printf("%ld\n", tls_bump());
        else if (strcmp(line, "busy") == 0) {
            pthread_create(&t, NULL, busy, NULL);
            printf("started\n");
        } else if (strcmp(line, "eintr") == 0)
            printf("nanosleep_eintr=%ld/%ld read_eintr=%ld\n", atomic_load(&sleep_eintr),
                   atomic_load(&sleeps), atomic_load(&read_eintr));
        else if (strncmp(line, "apply ", 6) == 0) {
            int rc = hotpatch_apply_file(line + 6, err, sizeof err);
            printf("%d %s\n", rc, err);
        } else if (strcmp(line, "revert") == 0) {
            int rc = hotpatch_revert(err, sizeof err);
            printf("%d %s\n", rc, err);
        } else if (strcmp(line, "list") == 0) {
            char buf[4096];
            int n = hotpatch_list(buf, sizeof buf);
            for (char *p = buf; *p; p++)
                if (*p == '\n')
                    *p = '|';
            printf("%d %s\n", n, buf);
        } else if (strcmp(line, "head") == 0) {
            /* The first 9 bytes of compute, as the CPU sees them now. */
            const volatile unsigned char *c = (const volatile unsigned char *)compute;
            for (int i = 0; i < 9; i++)
                printf("%02x", c[i]);
            printf("\n");
        } else if (strcmp(line, "churn") == 0) {
            for (int i = 0; i < 3; i++)
                pthread_create(&t, NULL, churn, NULL);
            printf("churning\n");
        } else if (strncmp(line, "fork ", 5) == 0) {
            printf("%d\n", spawn(line + 5, 0));
        } else if (strncmp(line, "daemon ", 7) == 0) {
            printf("%d\n", spawn(line + 7, 1));
        } else if (strcmp(line, "quit") == 0)
            break;
        else
            printf("?\n");
    }
    return 0;
}
