/*
 * Stopping every other thread of the process with a signal: the fallback of
 * step 2 of the switch protocol (switch.c) when no client can stop them
 * with ptrace (the C API; a process already traced by a debugger).
 *
 * x86 cross-modifying code is only safe if no other thread executes the
 * bytes being written, so the writer stops them all: it lists
 * /proc/self/task, sends each thread (except itself and the listener, which
 * runs only loader code and blocks all signals) a real-time signal with
 * tgkill, and the handler parks the thread on a futex after recording the
 * interrupted registers (all of them: unwind.c walks the stack from them)
 * from its ucontext. The writer re-scans the task list
 * until no new thread shows up (a thread being created by a not-yet-stopped
 * thread appears in a later scan), with a 500 ms deadline; a thread that does
 * not stop aborts the operation by name: one that blocks the signal is
 * found in /proc before anything is stopped (refused at once, never a
 * frozen program), one stuck in uninterruptible sleep after the deadline.
 *
 * Resuming: the writer bumps the futex word and wakes everybody; each
 * handler returns via rt_sigreturn, which is a serialising instruction (IRET
 * to user mode), so a resumed thread cannot execute stale prefetched bytes.
 * The writer also issues membarrier(PRIVATE_EXPEDITED_SYNC_CORE) when the
 * kernel supports it (switch.c, step 8) for the threads that were not
 * stopped by us.
 *
 * The critical section (between stop and resume) must not call malloc or
 * take any lock a stopped thread might hold: the slot table is mmap'ed
 * before the first signal and the task list is read with getdents64 into a
 * stack buffer (opendir/readdir would malloc).
 *
 * Side effect (documented in hotpatch.h): the handler interrupts blocking
 * system calls. SA_RESTART restarts read/write/accept/futex waits etc., but
 * nanosleep, poll, epoll_wait, select and friends return EINTR.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>
#include <linux/futex.h>

#include "hp_internal.h"

#define STOP_TIMEOUT_NS (500000000LL) /* the others are frozen meanwhile */
#define RESUME_TIMEOUT_NS (1000000000LL)

enum { SLOT_SIGNALLED = 1, SLOT_STOPPED, SLOT_LEFT, SLOT_GONE };

struct slot {
    _Atomic int tid;
    _Atomic int state;
    uint64_t regs[HP_NREGS]; /* DWARF numbering (hp_internal.h) */
};

struct table {
    struct slot *slots;
    size_t cap;
    size_t map_size;
    struct hp_thread *out;
};

static int g_signal;
static _Atomic(struct slot *) g_slots;
static _Atomic size_t g_nslots;
static _Atomic int g_stopping;
static _Atomic uint32_t g_release;
static pid_t g_listener_tid;

int hp_stop_signal(void)
{
    return g_signal;
}

void hp_stop_set_listener(pid_t tid)
{
    g_listener_tid = tid;
}

pid_t hp_stop_listener(void)
{
    return g_listener_tid;
}

static long futex(_Atomic uint32_t *addr, int op, uint32_t val)
{
    return syscall(SYS_futex, (uint32_t *)addr, op, val, NULL, NULL, 0);
}

static pid_t gettid_(void)
{
    return (pid_t)syscall(SYS_gettid);
}

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void nap_us(long us)
{
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
}

/* Async-signal-safe: only atomics, syscall(2) and errno. */
static void stop_handler(int sig, siginfo_t *si, void *uctx)
{
    (void)sig;
    (void)si;
    int saved = errno;
    if (!atomic_load(&g_stopping))
        goto out; /* stale signal from an aborted stop: ignore */
    pid_t me = gettid_();
    struct slot *slots = atomic_load(&g_slots);
    size_t n = atomic_load(&g_nslots);
    for (size_t i = 0; slots && i < n; i++) {
        struct slot *s = &slots[i];
        if (atomic_load(&s->tid) != me)
            continue;
        int expect = SLOT_SIGNALLED;
        ucontext_t *uc = uctx;
        /* Every general register, not just RIP: the stack walk needs the
         * ones the CFI may name (CFA register, saved callee-saved ones). */
        hp_regs_from_gregs(s->regs, uc->uc_mcontext.gregs);
        /* Read the release generation before announcing we are stopped:
         * the writer releases only after it has seen SLOT_STOPPED. */
        uint32_t gen = atomic_load(&g_release);
        if (!atomic_compare_exchange_strong(&s->state, &expect, SLOT_STOPPED))
            break; /* duplicate (queued) signal: already handled */
        while (atomic_load(&g_release) == gen)
            futex(&g_release, FUTEX_WAIT_PRIVATE, gen);
        atomic_store(&s->state, SLOT_LEFT);
        break;
    }
out:
    errno = saved;
}

static void install_handler(void)
{
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = stop_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigfillset(&sa.sa_mask);
    if (sigaction(g_signal, NULL, &old) == 0 && (old.sa_flags & SA_SIGINFO) &&
        old.sa_sigaction == stop_handler)
        return;
    if (sigaction(g_signal, &sa, &old) == 0 && old.sa_handler != SIG_DFL &&
        old.sa_handler != SIG_IGN)
        hp_log("warning: signal %d already had a handler; the loader replaced it "
               "(set HOTPATCH_SIGNAL to another signal)",
               g_signal);
}

void hp_stop_init(void)
{
    const char *env = getenv("HOTPATCH_SIGNAL");
    g_signal = SIGRTMIN + 5;
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (*end == 0 && v > 0 && v <= SIGRTMAX && v != SIGKILL && v != SIGSTOP)
            g_signal = (int)v;
        else
            hp_log("ignoring invalid HOTPATCH_SIGNAL=%s", env);
    }
    install_handler();
}

void hp_stop_after_fork(void)
{
    g_listener_tid = 0;
    atomic_store(&g_stopping, 0);
}

/* Adds any thread not yet in the table and signals it. Returns the number of
 * new threads, or -1 if the table is full. */
static int scan_and_signal(struct table *t, pid_t self, char *err, size_t errlen)
{
    char buf[4096];
    int added = 0;
    pid_t pid = getpid();
    int fd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return hp_fail(err, errlen, "cannot list /proc/self/task: %m");
    for (;;) {
        long n = syscall(SYS_getdents64, fd, buf, sizeof buf);
        if (n <= 0)
            break;
        for (long off = 0; off < n;) {
            struct dirent64 *d = (struct dirent64 *)(buf + off);
            off += d->d_reclen;
            char *end;
            long tid = strtol(d->d_name, &end, 10);
            if (*end || tid <= 0 || tid == self || tid == g_listener_tid)
                continue;
            size_t nslots = atomic_load(&g_nslots), i;
            for (i = 0; i < nslots; i++)
                if (atomic_load(&t->slots[i].tid) == tid)
                    break;
            if (i < nslots)
                continue;
            if (nslots == t->cap) {
                close(fd);
                return hp_fail(err, errlen, "too many threads (more than %zu)", t->cap);
            }
            struct slot *s = &t->slots[nslots];
            atomic_store(&s->state, SLOT_SIGNALLED);
            atomic_store(&s->tid, (int)tid);
            atomic_store(&g_nslots, nslots + 1);
            if (syscall(SYS_tgkill, pid, tid, g_signal) < 0)
                atomic_store(&s->state, SLOT_GONE); /* exited meanwhile */
            added++;
        }
    }
    close(fd);
    return added;
}

static void thread_name(pid_t tid, char *out, size_t len)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/comm", (int)tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, out, len - 1) : -1;
    if (fd >= 0)
        close(fd);
    if (n <= 0)
        n = 0;
    out[n] = 0;
    char *nl = strchr(out, '\n');
    if (nl)
        *nl = 0;
}

static void release_all(struct table *t)
{
    size_t n = atomic_load(&g_nslots);
    /* A thread whose signal is still pending must not stop after we let the
     * others go: flip SIGNALLED slots to LEFT so its handler's CAS fails. */
    for (size_t i = 0; i < n; i++) {
        int expect = SLOT_SIGNALLED;
        atomic_compare_exchange_strong(&t->slots[i].state, &expect, SLOT_LEFT);
    }
    atomic_fetch_add(&g_release, 1);
    futex(&g_release, FUTEX_WAKE_PRIVATE, INT32_MAX);
    /* Wait until every stopped thread has left the handler, so the next stop
     * starts clean. */
    long long deadline = now_ns() + RESUME_TIMEOUT_NS;
    int all_left;
    do {
        all_left = 1;
        for (size_t i = 0; i < n; i++)
            if (atomic_load(&t->slots[i].state) == SLOT_STOPPED)
                all_left = 0;
        if (!all_left)
            nap_us(100);
    } while (!all_left && now_ns() < deadline);
    if (!all_left)
        hp_log("warning: some threads were slow to leave the stop handler");
    atomic_store(&g_stopping, 0);
}

/* The slot table is never unmapped (a late signal handler may still scan
 * it); it is replaced by a bigger one if the process has more threads. */
static struct table g_table;

static int ensure_table(size_t threads, char *err, size_t errlen)
{
    if (g_table.cap >= threads * 2 + 16)
        return 0;
    size_t cap = threads * 4 + 256;
    size_t size = (cap * (sizeof(struct slot) + sizeof(struct hp_thread)) + 4095) & ~4095UL;
    void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return hp_fail(err, errlen, "cannot allocate the thread table: %m");
    g_table.slots = mem;
    g_table.cap = cap;
    g_table.map_size = size;
    g_table.out = (struct hp_thread *)(g_table.slots + cap);
    return 0;
}

size_t hp_count_tasks(void)
{
    char buf[4096];
    size_t count = 0;
    long n;
    int fd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    while (fd >= 0 && (n = syscall(SYS_getdents64, fd, buf, sizeof buf)) > 0)
        for (long off = 0; off < n; off += ((struct dirent64 *)(buf + off))->d_reclen)
            count++;
    if (fd >= 0)
        close(fd);
    return count;
}

/* Does thread tid block our signal? (SigBlk in its status; before any
 * stop, so a thread that can never take the signal fails the operation at
 * once instead of freezing the others until the timeout.) */
static int blocks_signal(pid_t tid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/self/task/%d/status", (int)tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0)
        close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    const char *blk = strstr(buf, "\nSigBlk:");
    if (!blk)
        return 0;
    unsigned long long mask = strtoull(blk + 8, NULL, 16);
    return (mask >> (g_signal - 1)) & 1;
}

#define BLOCK_SCANS 8      /* a thread blocking the signal in every scan is refused */
#define BLOCK_SCAN_NS 5000000LL
#define BLOCK_MAX 16

/* The threads blocking our signal now, at most BLOCK_MAX. */
static size_t scan_blocked(pid_t self, pid_t *out)
{
    char buf[4096];
    int fd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    long n;
    size_t k = 0;
    while (fd >= 0 && k < BLOCK_MAX && (n = syscall(SYS_getdents64, fd, buf, sizeof buf)) > 0)
        for (long off = 0; off < n && k < BLOCK_MAX;) {
            struct dirent64 *d = (struct dirent64 *)(buf + off);
            off += d->d_reclen;
            pid_t tid = (pid_t)atoi(d->d_name);
            if (tid > 0 && tid != self && tid != g_listener_tid && blocks_signal(tid))
                out[k++] = tid;
        }
    if (fd >= 0)
        close(fd);
    return k;
}

/* Refuses when a thread keeps our signal blocked. Blocking it for a moment
 * is normal (glibc blocks every signal around clone in pthread_create, so
 * a program that starts threads all the time always has one): only a
 * thread found blocking it in every one of BLOCK_SCANS scans, 5 ms apart,
 * is refused. The threads still run here. */
static int refuse_blocked(pid_t self, char *err, size_t errlen)
{
    pid_t keep[BLOCK_MAX], now[BLOCK_MAX];
    size_t nkeep = scan_blocked(self, keep);
    for (int scan = 1; scan < BLOCK_SCANS && nkeep; scan++) {
        struct timespec ts = {0, BLOCK_SCAN_NS};
        nanosleep(&ts, NULL);
        size_t nnow = scan_blocked(self, now), k = 0;
        for (size_t i = 0; i < nkeep; i++)
            for (size_t j = 0; j < nnow; j++)
                if (keep[i] == now[j]) {
                    keep[k++] = keep[i];
                    break;
                }
        nkeep = k;
    }
    if (!nkeep)
        return 0;
    char name[32];
    thread_name(keep[0], name, sizeof name);
    return hp_fail(err, errlen,
                   "thread %d (%s) blocks signal %d, so the loader cannot stop it with its "
                   "signal (nothing was stopped or changed)",
                   (int)keep[0], name, g_signal);
}

int hp_stop_all(struct hp_stopset *set, char *err, size_t errlen)
{
    pid_t self = gettid_();
    struct table *t = &g_table;
    install_handler();
    if (refuse_blocked(self, err, errlen))
        return -1;
    if (ensure_table(hp_count_tasks(), err, errlen))
        return -1;
    atomic_store(&g_nslots, 0);
    atomic_store(&g_slots, t->slots);
    atomic_store(&g_stopping, 1);

    long long deadline = now_ns() + STOP_TIMEOUT_NS;
    for (;;) {
        int added = scan_and_signal(t, self, err, errlen);
        if (added < 0) {
            release_all(t);
            return -1;
        }
        /* Wait for everybody signalled so far. */
        size_t n = atomic_load(&g_nslots);
        for (size_t i = 0; i < n; i++) {
            struct slot *s = &t->slots[i];
            while (atomic_load(&s->state) == SLOT_SIGNALLED) {
                if (syscall(SYS_tgkill, getpid(), s->tid, 0) < 0 && errno == ESRCH) {
                    atomic_store(&s->state, SLOT_GONE);
                    break;
                }
                if (now_ns() > deadline) {
                    char name[32];
                    int tid = s->tid;
                    release_all(t);
                    thread_name(tid, name, sizeof name);
                    return hp_fail(err, errlen,
                                   "thread %d (%s) did not stop within 500 ms (uninterruptible "
                                   "sleep?); every thread was let go and nothing was changed",
                                   tid, name);
                }
                nap_us(50);
            }
        }
        if (added == 0)
            break; /* stable: every thread we know of is stopped or gone */
    }
    size_t n = atomic_load(&g_nslots), k = 0;
    for (size_t i = 0; i < n; i++) {
        struct slot *s = &t->slots[i];
        if (atomic_load(&s->state) != SLOT_STOPPED)
            continue;
        t->out[k].tid = s->tid;
        memcpy(t->out[k].regs, s->regs, sizeof s->regs);
        t->out[k].rip = s->regs[HP_REG_RA];
        t->out[k].rsp = s->regs[7];
        t->out[k].rbp = s->regs[6];
        k++;
    }
    set->threads = t->out;
    set->n = k;
    set->priv = t;
    return 0;
}

void hp_resume_all(struct hp_stopset *set)
{
    struct table *t = set->priv;
    if (!t)
        return;
    release_all(t);
    set->priv = NULL;
    set->threads = NULL;
    set->n = 0;
}
