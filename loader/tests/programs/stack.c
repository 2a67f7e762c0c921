/* Test program for the whole-stack consistency check: threads sit inside
 * functions a patch replaces — blocked in read() (through libc), in
 * nanosleep(), at the bottom of a deep recursion — while the test drives
 * the main thread with one command per stdin line, one reply per line.
 * The test prepends #defines for SERVE_FACTOR and NAP_FACTOR, DEEP_FACTOR,
 * and may for LOOP_EXTRA (a statement in serve_loop). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef LOOP_EXTRA
#define LOOP_EXTRA
#endif

/* Functions the tests patch must stay real calls (clang has no noipa). */
#ifdef __clang__
#define KEEP __attribute__((noinline))
#else
#define KEEP __attribute__((noipa))
#endif

static int data_pipe[2], go_pipe[2], deep_pipe[2];
static atomic_int served, naps, deep_done;
static atomic_long last_result, deep_result;
static atomic_int tid_serve, tid_nap, tid_deep;

static unsigned char read_byte(int fd)
{
    unsigned char c = 0;
    while (read(fd, &c, 1) < 0 && errno == EINTR)
        ;
    return c;
}

/* Blocks in read() (libc) on the data pipe: a call that is "running" for as
 * long as the test wants. */
KEEP long serve(void)
{
    long c = read_byte(data_pipe[0]);
    return c * SERVE_FACTOR;
}

/* One request, then park outside serve() until "go". */
KEEP void serve_loop(void)
{
    for (;;) {
        atomic_store(&last_result, serve());
        atomic_fetch_add(&served, 1);
        LOOP_EXTRA
        read_byte(go_pipe[0]);
    }
}

static void *serve_thread(void *arg)
{
    (void)arg;
    atomic_store(&tid_serve, gettid());
    serve_loop();
    return NULL;
}

/* Always (re)sleeping: on the stack of its thread at any moment, below
 * libc's nanosleep. */
KEEP void napper(void)
{
    struct timespec ts = {0, 200000000L * NAP_FACTOR};
    nanosleep(&ts, NULL);
    atomic_fetch_add(&naps, 1);
}

static void *nap_thread(void *arg)
{
    (void)arg;
    atomic_store(&tid_nap, gettid());
    for (;;)
        napper();
    return NULL;
}

/* Recursion that is not turned into a loop (the asm hides the result). */
KEEP long recurse(int depth)
{
    if (depth == 0)
        return read_byte(deep_pipe[0]);
    long r = recurse(depth - 1);
    __asm__ volatile("" : "+r"(r));
    return r + 1;
}

KEEP long deep_entry(int depth)
{
    return recurse(depth) * DEEP_FACTOR;
}

static void *deep_thread(void *arg)
{
    atomic_store(&tid_deep, gettid());
    atomic_store(&deep_result, deep_entry((int)(long)arg));
    atomic_store(&deep_done, 1);
    return NULL;
}

/* Code without any unwind information that sets %rbp to junk and spins
 * (a JIT's code, a hand-written loop): the walker must give up on this
 * thread cleanly, never crash. mode: 0 = rbp 0xdeadbeef000, 1 = rbp 1,
 * 2 = rbp = rsp (a plausible-looking but wrong chain). */
static void *jit_thread(void *arg)
{
    unsigned char *code = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned char *p = code;
    long mode = (long)arg;
    if (mode == 2) {
        *p++ = 0x48, *p++ = 0x89, *p++ = 0xe5; /* mov %rsp,%rbp */
    } else {
        unsigned long v = mode == 0 ? 0xdeadbeef000UL : 1;
        *p++ = 0x48, *p++ = 0xbd; /* movabs $v,%rbp */
        memcpy(p, &v, 8);
        p += 8;
    }
    *p++ = 0xf3, *p++ = 0x90; /* 1: pause */
    *p++ = 0xeb, *p++ = 0xfc; /* jmp 1b */
    mprotect(code, 4096, PROT_READ | PROT_EXEC);
    ((void (*)(void))code)();
    return NULL;
}

static void wait_for(atomic_int *v, int want)
{
    while (atomic_load(v) < want)
        usleep(1000);
}

int main(void)
{
    pthread_t t;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (pipe(data_pipe) || pipe(go_pipe) || pipe(deep_pipe))
        return 1;
    printf("ready %d\n", (int)getpid());
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        if (strcmp(line, "serve") == 0) { /* a thread blocked inside serve() */
            pthread_create(&t, NULL, serve_thread, NULL);
            while (!atomic_load(&tid_serve))
                usleep(1000);
            usleep(20000);
            printf("%d\n", atomic_load(&tid_serve));
        } else if (strncmp(line, "feed ", 5) == 0) { /* complete the running serve() */
            int before = atomic_load(&served);
            unsigned char c = (unsigned char)atoi(line + 5);
            if (write(data_pipe[1], &c, 1) != 1)
                return 1;
            wait_for(&served, before + 1);
            printf("%ld\n", atomic_load(&last_result));
        } else if (strcmp(line, "go") == 0) { /* let it call serve() again */
            if (write(go_pipe[1], "g", 1) != 1)
                return 1;
            usleep(20000);
            printf("ok\n");
        } else if (strcmp(line, "nap") == 0) {
            pthread_create(&t, NULL, nap_thread, NULL);
            while (!atomic_load(&tid_nap))
                usleep(1000);
            printf("%d\n", atomic_load(&tid_nap));
        } else if (strcmp(line, "naps") == 0) {
            printf("%d\n", atomic_load(&naps));
        } else if (strncmp(line, "deep ", 5) == 0) {
            pthread_create(&t, NULL, deep_thread, (void *)(long)atoi(line + 5));
            while (!atomic_load(&tid_deep))
                usleep(1000);
            usleep(50000);
            printf("%d\n", atomic_load(&tid_deep));
        } else if (strcmp(line, "undeep") == 0) {
            if (write(deep_pipe[1], "\1", 1) != 1)
                return 1;
            wait_for(&deep_done, 1);
            printf("%ld\n", atomic_load(&deep_result));
        } else if (strncmp(line, "jit ", 4) == 0) {
            pthread_create(&t, NULL, jit_thread, (void *)(long)atoi(line + 4));
            usleep(20000);
            printf("ok\n");
        } else if (strcmp(line, "ping") == 0) {
            printf("pong\n");
        } else {
            printf("?\n");
        }
    }
    return 0;
}
