/*
 * The switch: the one place where running code changes.
 *
 * Every apply and revert, entry jump or call site, lazy or consistent,
 * stopped by the client or by our own signal, goes through hp_switch()
 * below, in this order (the steps are labelled in its body):
 *
 *  1. PREPARE (threads run: malloc, locks and logging are fine). The unwind
 *     tables of every loaded object and patch and a /proc/self/maps
 *     snapshot (hp_unwind_prepare), the thread table, the check state, an
 *     open /proc/self/mem, the write batches (step 6) and their buffers.
 *     The caller has already made the spans (old and new bytes of each
 *     entry jump and call site) and the busy ranges.
 *     Everything the stopped section uses is allocated here, because a
 *     stopped thread may hold malloc's or the dynamic loader's lock.
 *  2. STOP every other thread. Preferably by the client: hpctl
 *     ptrace-interrupts each thread and sends its registers, so interrupted
 *     system calls restart transparently (no EINTR) and a thread that
 *     blocks every signal stops like any other. Otherwise (the C API, or a
 *     client that cannot ptrace) by our real-time signal (stop.c).
 *  3. FIRST BYTES: no thread's pc may lie strictly inside a span: it would
 *     resume in the middle of a new instruction. A thread exactly at a
 *     span's start is fine (it executes the new instruction).
 *  4. STACK CHECK: walk every stopped thread's stack (unwind.c) and record
 *     frames in the busy ranges. A consistent switch with a hit, or with a
 *     walk that could not finish, writes nothing and waits (step 10).
 *  5. RE-CHECK: each span still holds what step 1's caller saw (nothing
 *     else rewrote it meanwhile); all of them, before anything is written.
 *  6. WRITE the spans through /proc/self/mem and read them back. Text pages
 *     are never made writable: the kernel writes read-only private pages
 *     for us (FOLL_FORCE). In batches: sorted by address, spans at most 512
 *     bytes apart are one write with the bytes between them, which are
 *     copied from memory right before (into step 1's buffer) and so written
 *     back unchanged; no page without a span is written.
 *  7. UNDO on a failure in 6: the batches written so far, and the one that
 *     failed, get their previous bytes back, newest first, so no
 *     half-switched state remains.
 *  8. SERIALIZE: membarrier(PRIVATE_EXPEDITED_SYNC_CORE), so no core runs
 *     stale prefetched bytes (returning to user mode from a ptrace or
 *     signal stop serialises the stopped threads too).
 *  9. RESUME every thread.
 * 10. REPORT (threads run again): turn what steps 3-7 recorded into
 *     messages and log lines. If the switch must wait, sleep and go back to
 *     step 1: a consistent switch until its timeout, a lazy one only while
 *     a thread sits in the first bytes (up to FIRST_BYTES_RETRIES times).
 *
 * Between 2 and 9 nothing may call malloc/free, stdio streams (printf,
 * fprintf: they lock), strerror, hp_log, or take a lock another thread may
 * hold; the steps record what happened in struct outcome, and step 10
 * formats it. One exception, kept small: the unwinder writes why a walk
 * stopped with snprintf into the caller's buffer (%s, %d and %lx only,
 * which glibc formats without a lock or an allocation). The only system
 * calls there are the client's socket, open/getdents64/close of /proc/self/task
 * (and open/read/close of a thread's stat there, to skip an exiting thread),
 * process_vm_readv (the unwinder), pwrite/read-back on /proc/self/mem and
 * membarrier.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/membarrier.h>

#include "patch_internal.h"

#define FIRST_BYTES_RETRIES 10 /* lazy: a thread in the first bytes leaves them quickly */
#define FIRST_BYTES_WAIT_MS 20
#define MAX_WAIT_MS 50         /* between two stops of a consistent wait */

static int g_mem_fd = -1;
static int g_membarrier_ok;

void hp_text_after_fork(void)
{
    /* /proc/self/mem opened by the parent refers to the parent's memory. */
    if (g_mem_fd >= 0)
        close(g_mem_fd);
    g_mem_fd = -1;
}

void hp_membarrier_init(void)
{
    long cmds = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    g_membarrier_ok = 0;
    if (cmds > 0 && (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE) &&
        syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE, 0, 0) == 0)
        g_membarrier_ok = 1;
}

static int open_mem(char *err, size_t errlen)
{
    if (g_mem_fd < 0)
        g_mem_fd = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
    if (g_mem_fd < 0)
        return hp_fail(err, errlen, "cannot open /proc/self/mem for writing code: %m");
    return 0;
}

static long long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* What happened while the threads were stopped (formatted in step 10). */
enum verdict {
    V_SWITCHED,
    V_FIRST_BYTES, /* tid's pc is inside span */
    V_BUSY,        /* consistent: a frame in a busy range, or a walk unfinished */
    V_CHANGED,     /* re-check: span's bytes are not what was prepared */
    V_WRITE,       /* writing span failed with err_no (0: read back differs) */
    V_NOT_STOPPED, /* thread tid runs although the stop said all were stopped */
    V_STOP,        /* the stop itself failed (message already in err) */
};

struct outcome {
    enum verdict v;
    pid_t tid;
    size_t span;
    int err_no;
    long long stopped_us; /* threads parked: step 2 done → step 9 begins */
    long long walk_us, write_us;
    size_t nthreads;
};

/* The world while stopped: how it was stopped and the threads' registers. */
struct world {
    struct hp_stopset set;
    struct hp_thread *buf; /* for the client's registers */
    size_t cap;
    int by_client;
};

/* Step 2. */
static int stop_world(struct world *w, const struct hp_opts *o, char *err, size_t errlen)
{
    struct hp_client *c = o->client;
    w->by_client = 0;
    if (c && c->can_stop) {
        int rc = hp_client_stop(c, &w->set, w->buf, w->cap);
        if (rc == 0) {
            w->by_client = 1;
            return 0;
        }
        if (rc < 0)
            return hp_fail(err, errlen, "the client could not stop the threads (connection "
                                        "lost or malformed registers); nothing was changed");
        hp_log("the client cannot stop the threads (%s); stopping them with signal %d",
               c->nostop, hp_stop_signal());
    }
    if (hp_stop_all(&w->set, err, errlen) == 0)
        return 0;
    if (c && c->nostop[0]) { /* say why the better stop was not used */
        char first[512];
        snprintf(first, sizeof first, "%s", err);
        hp_fail(err, errlen, "%s; hpctl could not stop the threads either: %s", first, c->nostop);
    }
    return -1;
}

/* Step 9. */
static void resume_world(struct world *w, const struct hp_opts *o)
{
    if (w->by_client)
        hp_client_resume(o->client);
    else
        hp_resume_all(&w->set);
}

/* Step 2, verified: every thread of the process other than us and the
 * listener is in the stopped set (a client's claim is checked, not
 * trusted). getdents64 into a stack buffer: no malloc. */
/* Is thread tid on its way out (exiting, a zombie, or gone)? It runs no
 * more user code, so it needs no stop. A read of /proc/self/task/T/stat:
 * no allocation, no lock. */
static int dying(pid_t tid)
{
    char path[64] = "/proc/self/task/", digits[16], buf[256];
    size_t nd = 0, len = strlen(path);
    for (unsigned v = (unsigned)tid; nd == 0 || v; v /= 10) /* no stdio here */
        digits[nd++] = (char)('0' + v % 10);
    while (nd)
        path[len++] = digits[--nd];
    memcpy(path + len, "/stat", 6);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 1;
    buf[n] = 0;
    const char *paren = strrchr(buf, ')'); /* the state follows "(comm) " */
    return paren && (paren[2] == 'Z' || paren[2] == 'X');
}

static pid_t unstopped_thread(const struct hp_stopset *set)
{
    char buf[4096];
    pid_t self = (pid_t)syscall(SYS_gettid), listener = hp_stop_listener(), missing = 0;
    int fd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    long n;
    while (fd >= 0 && !missing && (n = syscall(SYS_getdents64, fd, buf, sizeof buf)) > 0)
        for (long off = 0; off < n && !missing;) {
            const char *name = buf + off + 19; /* d_name in struct linux_dirent64 */
            off += *(unsigned short *)(buf + off + 16);
            pid_t tid = (pid_t)atoi(name);
            if (tid <= 0 || tid == self || tid == listener)
                continue;
            size_t i = 0;
            while (i < set->n && set->threads[i].tid != tid)
                i++;
            if (i == set->n && !dying(tid))
                missing = tid;
        }
    if (fd >= 0)
        close(fd);
    return missing;
}

/* Step 3. */
static int first_bytes(const struct hp_stopset *set, const struct hp_switch *sw,
                       struct outcome *out)
{
    for (size_t i = 0; i < set->n; i++)
        for (size_t k = 0; k < sw->nspans; k++) {
            const struct span *s = &sw->spans[k];
            if (set->threads[i].rip > s->at && set->threads[i].rip < s->at + s->len) {
                *out = (struct outcome){.v = V_FIRST_BYTES, .tid = set->threads[i].tid, .span = k};
                return -1;
            }
        }
    return 0;
}

static int write_bytes(uintptr_t at, const uint8_t *bytes, size_t len)
{
    ssize_t n = pwrite(g_mem_fd, bytes, len, (off_t)at);
    if (n != (ssize_t)len)
        return n < 0 ? errno : EIO;
    return memcmp((const void *)at, bytes, len) == 0 ? 0 : -1;
}

/* Steps 5-7 write the spans in batches: sorted by address, spans at most
 * BATCH_GAP bytes apart go in one pwrite together with the bytes between
 * them, which are copied from memory just before (threads stopped) and so
 * written back unchanged. BATCH_GAP is below the page size: no page without
 * a span is written. */
#define BATCH_GAP 512

struct batch {
    uintptr_t at;
    size_t len;
    size_t first, n; /* its spans: order[first .. first + n) */
    size_t off;      /* its bytes in before[] and after[] */
};

struct batches {
    size_t *order; /* span indexes by address */
    struct batch *b;
    size_t nb;
    uint8_t *before, *after; /* each batch's bytes as found and as written */
};

static int span_order(const void *a, const void *b, void *spans)
{
    uintptr_t x = ((const struct span *)spans)[*(const size_t *)a].at;
    uintptr_t y = ((const struct span *)spans)[*(const size_t *)b].at;
    return x < y ? -1 : x > y;
}

/* Step 1: the batches and their buffers. */
static int plan_batches(const struct hp_switch *sw, struct batches *bt)
{
    size_t n = sw->nspans, bytes = 0;
    bt->order = malloc((n ? n : 1) * sizeof *bt->order);
    bt->b = malloc((n ? n : 1) * sizeof *bt->b);
    if (!bt->order || !bt->b)
        return -1;
    for (size_t k = 0; k < n; k++)
        bt->order[k] = k;
    qsort_r(bt->order, n, sizeof *bt->order, span_order, sw->spans);
    for (size_t k = 0; k < n; k++) {
        const struct span *s = &sw->spans[bt->order[k]];
        struct batch *last = bt->nb ? &bt->b[bt->nb - 1] : NULL;
        if (last && s->at >= last->at + last->len && s->at - (last->at + last->len) <= BATCH_GAP) {
            last->len = s->at + s->len - last->at;
            last->n++;
        } else {
            bt->b[bt->nb++] = (struct batch){.at = s->at, .len = s->len, .first = k, .n = 1};
        }
    }
    for (size_t i = 0; i < bt->nb; i++) {
        bt->b[i].off = bytes;
        bytes += bt->b[i].len;
    }
    bt->before = malloc(bytes ? bytes : 1);
    bt->after = malloc(bytes ? bytes : 1);
    return bt->before && bt->after ? 0 : -1;
}

static void free_batches(struct batches *bt)
{
    free(bt->order);
    free(bt->b);
    free(bt->before);
    free(bt->after);
}

/* Steps 5, 6 and 7. */
static int write_spans(const struct hp_switch *sw, const struct batches *bt, struct outcome *out)
{
    for (size_t k = 0; k < sw->nspans; k++) { /* 5 */
        const struct span *s = &sw->spans[k];
        if (memcmp((const void *)s->at, sw->restoring ? s->new : s->old, s->len) != 0) {
            *out = (struct outcome){.v = V_CHANGED, .span = k};
            return -1;
        }
    }
    size_t done = 0;
    for (; done < bt->nb; done++) { /* 6 */
        const struct batch *b = &bt->b[done];
        uint8_t *before = bt->before + b->off, *after = bt->after + b->off;
        memcpy(before, (const void *)b->at, b->len);
        memcpy(after, before, b->len);
        for (size_t j = b->first; j < b->first + b->n; j++) {
            const struct span *s = &sw->spans[bt->order[j]];
            memcpy(after + (s->at - b->at), sw->restoring ? s->old : s->new, s->len);
        }
        int e = write_bytes(b->at, after, b->len);
        if (e) {
            *out = (struct outcome){.v = V_WRITE, .span = bt->order[b->first],
                                    .err_no = e > 0 ? e : 0};
            break;
        }
    }
    if (done == bt->nb)
        return 0;
    for (done++; done-- > 0;) /* 7: the failed batch too (it may be half written) */
        write_bytes(bt->b[done].at, bt->before + bt->b[done].off, bt->b[done].len);
    return -1;
}

/* Step 10: the error line for a switch that did not happen. */
static void explain(const struct outcome *o, const struct hp_switch *sw, char *err, size_t errlen)
{
    char label[600] = "?";
    const struct span *s = o->span < sw->nspans ? &sw->spans[o->span] : NULL;
    const char *what = s && s->is_site ? "a call site of" : "the entry of";
    if (s && s->func < sw->nr)
        hp_fn_label(sw->r[s->func].name, sw->r[s->func].file, label, sizeof label);
    switch (o->v) {
    case V_FIRST_BYTES:
        if (s->is_site)
            hp_fail(err, errlen, "function %s is busy: thread %d is executing a call to it at %#lx",
                    label, (int)o->tid, (unsigned long)s->at);
        else
            hp_fail(err, errlen,
                    "function %s is busy: thread %d is executing its first bytes (at %#lx)", label,
                    (int)o->tid, (unsigned long)s->at);
        break;
    case V_CHANGED:
        hp_fail(err, errlen,
                "the code at %#lx (%s %s) changed while the patch was prepared; nothing was "
                "changed",
                (unsigned long)s->at, what, label);
        break;
    case V_WRITE:
        hp_fail(err, errlen,
                "writing code at %#lx through /proc/self/mem failed: %s (is "
                "proc_mem.force_override restricted?); nothing was changed",
                (unsigned long)s->at, o->err_no ? strerror(o->err_no) : "read back differs");
        break;
    case V_NOT_STOPPED:
        hp_fail(err, errlen,
                "thread %d was not stopped although the stop reported every thread stopped; "
                "nothing was changed",
                (int)o->tid);
        break;
    default:
        break;
    }
}

/* Step 1: room for every thread's registers when the client stops them
 * (twice today's count: threads may start meanwhile). */
static int thread_table(struct hp_thread **out, size_t *cap)
{
    *cap = 2 * hp_count_tasks() + 64;
    *out = calloc(*cap, sizeof **out);
    return *out ? 0 : -1;
}

int hp_switch(const struct hp_switch *sw, char *err, size_t errlen, char *details, size_t detlen)
{
    const struct hp_opts *o = sw->opts;
    /* ---- 1. PREPARE ---- */
    struct check *chk = calloc(1, sizeof *chk);
    size_t nci = 0;
    struct hp_code_info *ci = NULL;
    struct world w = {.cap = 0};
    struct batches bt = {0};
    int rc = -1;
    if (details && detlen)
        details[0] = 0;
    if (!chk || hp_patch_code_info(&ci, &nci) || thread_table(&w.buf, &w.cap) ||
        plan_batches(sw, &bt)) {
        hp_fail(err, errlen, "out of memory");
        goto out;
    }
    chk->ranges = sw->ranges;
    chk->nr = sw->nranges;
    chk->stop_on_hit = o->consistent;
    int probing = hp_reclaim_prepare(chk) == 0; /* reverted patches' code still in use? */
    if (open_mem(err, errlen))
        goto out;
    long long deadline = now_us() + (long long)o->timeout_ms * 1000;
    for (int attempt = 0;; attempt++) {
        struct hp_unwind *u = NULL;
        struct outcome res = {.v = V_SWITCHED};
        if (hp_unwind_prepare(&u, ci, nci, err, errlen))
            break;
        /* ---- 2. STOP (only for a client still there to hear the outcome) ---- */
        if (o->client && hp_client_gone(o->client)) {
            hp_fail(err, errlen, "the client went away before the switch; nothing was changed");
            hp_unwind_free(u);
            break;
        }
        if (stop_world(&w, o, err, errlen)) {
            hp_unwind_free(u);
            break;
        }
        long long t0 = now_us();
        pid_t missing = unstopped_thread(&w.set);
        if (missing)
            res = (struct outcome){.v = V_NOT_STOPPED, .tid = missing};
        /* ---- 3. FIRST BYTES ---- */
        if (res.v == V_SWITCHED)
            first_bytes(&w.set, sw, &res);
        /* ---- 4. STACK CHECK (also after a first-bytes hit when consistent:
         * "on the stack of thread T" is the better reason to wait) ---- */
        long long t1 = now_us();
        if (res.v == V_SWITCHED || (res.v == V_FIRST_BYTES && o->consistent)) {
            hp_stack_check(u, &w.set, chk);
            if (o->consistent && (chk->nhits || chk->nbad))
                res.v = V_BUSY;
        }
        /* ---- 5, 6, 7. RE-CHECK, WRITE, UNDO ---- */
        long long t2 = now_us();
        if (res.v == V_SWITCHED)
            write_spans(sw, &bt, &res);
        /* ---- 8. SERIALIZE ---- */
        if (res.v == V_SWITCHED && g_membarrier_ok)
            syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE, 0, 0);
        res.stopped_us = now_us() - t0;
        res.walk_us = t2 - t1;
        res.write_us = now_us() - t2;
        res.nthreads = w.set.n;
        /* ---- 9. RESUME ---- */
        resume_world(&w, o);
        hp_unwind_free(u);
        /* ---- 10. REPORT ---- */
        hp_log("switch attempt %d: %zu threads stopped by %s; %lld us inside (walk %lld us, %zu "
               "frames; write %lld us)%s",
               attempt + 1, res.nthreads, w.by_client ? "the client" : "signal", res.stopped_us,
               res.walk_us, chk->frames, res.write_us,
               chk->nguessed ? " (some by the frame-pointer chain)" : "");
        if (res.v == V_SWITCHED) {
            hp_busy_report(chk, sw->reverting, details, detlen);
            /* A lazy walk with busy hits went on past them: it saw every
             * frame too (stop_on_hit is for consistent waits only). */
            hp_reclaim_finish(chk, probing && (!o->consistent || !chk->nhits));
            rc = 0;
            break;
        }
        /* A thread that started between the stop and the check: stop again. */
        int waiting = res.v == V_BUSY || res.v == V_FIRST_BYTES || res.v == V_NOT_STOPPED;
        if (!waiting) {
            explain(&res, sw, err, errlen);
            break;
        }
        int give_up = o->consistent ? now_us() >= deadline : attempt >= FIRST_BYTES_RETRIES;
        if (give_up) {
            if (res.v == V_BUSY)
                hp_consistent_failure(chk, sw->reverting, o->timeout_ms, err, errlen);
            else
                explain(&res, sw, err, errlen);
            break;
        }
        if (attempt == 0)
            hp_log("attempt 1: %s; retrying",
                   res.v == V_BUSY          ? "code to replace is on a stack"
                   : res.v == V_NOT_STOPPED ? "a thread started during the stop"
                                            : "a thread is in the first bytes");
        long ms = o->consistent ? (2L << (attempt < 5 ? attempt : 5)) : FIRST_BYTES_WAIT_MS;
        sleep_ms(ms < MAX_WAIT_MS ? ms : MAX_WAIT_MS);
    }
out:
    free_batches(&bt);
    if (chk && chk->nprobes)
        hp_reclaim_finish(chk, 0); /* frees the probes only */
    free(chk);
    free(ci);
    free(w.buf);
    return rc;
}
