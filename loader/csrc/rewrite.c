/*
 * The switch shared by apply and revert: stop every other thread, run the
 * first-bytes and stack checks (busy.c), write `jmp rel32` (or the saved
 * bytes) at each old entry, resume — retrying, or waiting for a consistent
 * switch, as the options say.
 *
 * Text is written through /proc/self/mem (pwrite), which the kernel allows
 * for read-only private mappings (FOLL_FORCE) — so text pages are never made
 * writable, let alone writable+executable. After the writes,
 * membarrier(PRIVATE_EXPEDITED_SYNC_CORE), when the kernel supports it,
 * serialises the threads that were not stopped by us.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/membarrier.h>

#include "patch_internal.h"

#define BUSY_RETRIES 10 /* first-bytes check of a plain operation */
#define BUSY_WAIT_MS 20
#define MAX_WAIT_MS 50   /* between two stops of a consistent wait */

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

static void sync_cores(void)
{
    if (g_membarrier_ok)
        syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE, 0, 0);
}

static int mem_fd(char *err, size_t errlen)
{
    if (g_mem_fd < 0)
        g_mem_fd = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
    if (g_mem_fd < 0)
        return hp_fail(err, errlen, "cannot open /proc/self/mem for writing code: %m");
    return g_mem_fd;
}

/* Writes code bytes through /proc/self/mem and reads them back. */
static int write_text(uintptr_t at, const uint8_t *bytes, size_t len, char *err, size_t errlen)
{
    int fd = mem_fd(err, errlen);
    if (fd < 0)
        return -1;
    ssize_t n = pwrite(fd, bytes, len, (off_t)at);
    if (n != (ssize_t)len)
        return hp_fail(err, errlen,
                       "writing code at %#lx through /proc/self/mem failed: %s (is "
                       "proc_mem.force_override restricted?)",
                       (unsigned long)at, n < 0 ? strerror(errno) : "short write");
    if (memcmp((const void *)at, bytes, len) != 0)
        return hp_fail(err, errlen, "code at %#lx did not change after writing it",
                       (unsigned long)at);
    return 0;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static long long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

/* The code of every applied patch, for the unwinder. */
static struct hp_code_info *patch_code(size_t *n)
{
    size_t k = 0;
    for (const struct applied *p = hp_patch_top; p; p = p->prev)
        k++;
    struct hp_code_info *ci = calloc(k ? k : 1, sizeof *ci);
    if (!ci)
        return NULL;
    k = 0;
    for (const struct applied *p = hp_patch_top; p; p = p->prev, k++)
        ci[k] = (struct hp_code_info){(uintptr_t)p->region, (uintptr_t)p->region + p->region_size,
                                      p->eh_frame, p->eh_size, p->id};
    *n = k;
    return ci;
}

/* Stops the world, runs the checks, writes JUMP_LEN bytes at each r[i].at
 * (r[i].written, or r[i].saved when restoring = reverting `rev`), resumes.
 * Plain: retries only while a thread executes the first bytes, and lists in
 * `details` the threads still running replaced code. Consistent: retries
 * until no frame is in replaced code, up to o->timeout_ms. */
int hp_rewrite(struct redirect *r, size_t n, const struct applied *rev, const struct hp_opts *o,
               char *err, size_t errlen, char *details, size_t detlen)
{
    int restoring = rev != NULL;
    const char *rev_id = rev ? rev->id : NULL;
    struct hp_site *sites = calloc(n ? n : 1, sizeof *sites);
    struct check *chk = calloc(1, sizeof *chk);
    size_t nci = 0, nr = 0;
    struct hp_code_info *ci = patch_code(&nci);
    struct busy_range *ranges = hp_busy_ranges(r, n, rev, &nr);
    int rc = -1;
    if (details && detlen)
        details[0] = 0;
    if (!sites || !chk || !ci || !ranges) {
        hp_fail(err, errlen, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        sites[i].name = r[i].name;
        sites[i].file = r[i].file;
        sites[i].func_lo = r[i].func;
        sites[i].func_hi = r[i].func + r[i].size;
        sites[i].lo = r[i].at;
        sites[i].hi = r[i].at + JUMP_LEN;
    }
    chk->ranges = ranges;
    chk->nr = nr;
    chk->stop_on_hit = o->consistent;
    if (mem_fd(err, errlen) < 0)
        goto out;
    long long deadline = now_ms() + o->timeout_ms;
    for (int attempt = 0;; attempt++) {
        struct hp_unwind *u = NULL;
        struct hp_stopset set = {0};
        if (hp_unwind_prepare(&u, ci, nci, err, errlen))
            break;
        if (hp_stop_all(&set, err, errlen)) {
            hp_unwind_free(u);
            break;
        }
        /* ---- all other threads stopped: no malloc, no locks below ---- */
        long long t0 = now_us();
        int first_bytes = hp_check_threads(set.threads, set.n, sites, n, err, errlen);
        hp_stack_check(u, &set, chk);
        long long walk_us = now_us() - t0;
        size_t nthreads = set.n;
        int wait = first_bytes || (o->consistent && (chk->nhits || chk->nbad));
        if (wait) {
            hp_resume_all(&set);
            hp_unwind_free(u);
            int give_up = o->consistent ? now_ms() >= deadline : attempt >= BUSY_RETRIES;
            if (give_up) {
                if (o->consistent)
                    hp_consistent_failure(chk, rev_id, o->timeout_ms, err, errlen);
                break; /* plain: err holds the first-bytes reason */
            }
            if (attempt == 0 || !o->consistent)
                hp_log("attempt %d: %s; retrying", attempt + 1,
                       first_bytes ? err : "code to replace is on a stack");
            long ms = o->consistent ? (2L << (attempt < 5 ? attempt : 5)) : BUSY_WAIT_MS;
            sleep_ms(ms < MAX_WAIT_MS ? ms : MAX_WAIT_MS);
            continue;
        }
        size_t done = 0;
        rc = 0;
        for (; done < n; done++) {
            const uint8_t *bytes = restoring ? r[done].saved : r[done].written;
            if (!restoring && memcmp((const void *)r[done].at, r[done].saved, JUMP_LEN) != 0) {
                rc = hp_fail(err, errlen, "code of %s changed while the patch was prepared",
                             r[done].name);
                break;
            }
            if (write_text(r[done].at, bytes, JUMP_LEN, err, errlen)) {
                rc = -1;
                break;
            }
        }
        if (rc) /* undo a partial write so no half-patched state survives */
            while (done-- > 0) {
                char e2[64];
                write_text(r[done].at, restoring ? r[done].written : r[done].saved, JUMP_LEN, e2,
                           sizeof e2);
            }
        sync_cores();
        hp_resume_all(&set);
        hp_unwind_free(u);
        hp_log("stack check: %zu threads, %zu frames, %lld us with threads stopped, attempt %d%s",
               nthreads, chk->frames, walk_us, attempt + 1,
               chk->nguessed ? " (some frames found by the frame-pointer chain)" : "");
        if (rc == 0)
            hp_busy_report(chk, rev_id, details, detlen);
        break;
    }
out:
    free(sites);
    free(chk);
    free(ci);
    free(ranges);
    return rc;
}
