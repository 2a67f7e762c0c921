/*
 * Apply / revert / list, and the stack of applied patches.
 *
 * APPLY: parse → find the replaced functions and verify they are the code
 * the patch was built against (size + masked fingerprint) → link the new
 * code into a fresh region → stop all other threads → safety check → write
 * `jmp rel32` at each old entry (after endbr64 if present) → resume.
 *
 * Text is written through /proc/self/mem (pwrite), which the kernel allows
 * for read-only private mappings (FOLL_FORCE) — so text pages are never made
 * writable, let alone writable+executable.
 *
 * Stacking: a function may be redirected by several patches. Each redirect
 * saves the bytes it overwrote (the previous patch's jump, or the original
 * code); revert pops the newest patch and restores exactly those bytes. The
 * fingerprint check always looks at the *original* bytes (the oldest save).
 *
 * The stack check (consistency): with every other thread stopped, each
 * thread's stack is walked (unwind.c) and every frame — the interrupted pc
 * and each return address — is compared with the code being replaced: the
 * whole original function, and the code of older patches for it, or, on
 * revert, the reverted patch's region. Plain operations switch anyway and
 * report who still runs which version; --consistent ones resume, wait and
 * stop again until no frame is there (or the walk cannot be completed), up
 * to a timeout, and then fail naming the function and the thread.
 *
 * All entry points take g_lock: the socket listener and the C API may race.
 */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/membarrier.h>

#include "hotpatch.h"
#include "hp_internal.h"

#define JUMP_LEN 5
#define BUSY_RETRIES 10 /* first-bytes check of a plain operation */
#define BUSY_WAIT_MS 20
#define MAX_HITS 64      /* busy (thread, function) pairs reported */
#define MAX_WAIT_MS 50   /* between two stops of a consistent wait */

static const uint8_t ENDBR64[4] = {0xf3, 0x0f, 0x1e, 0xfa};

struct redirect {
    char *name, *file;
    uintptr_t func;      /* function entry */
    uint64_t size;       /* function size */
    uintptr_t at;        /* where the jump is written (entry or entry+4) */
    uintptr_t target;    /* new code */
    uint64_t target_size;
    uint8_t saved[JUMP_LEN];
    uint8_t written[JUMP_LEN];
};

struct applied {
    char *id;
    struct redirect *r;
    size_t n;
    void *region;
    size_t region_size;
    uintptr_t eh_frame;   /* the patch's .eh_frame in the region, 0 if none */
    size_t eh_size;
    struct applied *prev; /* older patch */
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct applied *g_top;
static int g_mem_fd = -1;
static int g_membarrier_ok;

void hp_lock(void)
{
    pthread_mutex_lock(&g_lock);
}

void hp_unlock(void)
{
    pthread_mutex_unlock(&g_lock);
}

void hp_patch_after_fork(void)
{
    /* /proc/self/mem opened by the parent refers to the parent's memory. */
    if (g_mem_fd >= 0)
        close(g_mem_fd);
    g_mem_fd = -1;
    pthread_mutex_init(&g_lock, NULL);
    hp_membarrier_init();
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

/* The byte the running program had at `addr` before any patch touched it. */
static uint8_t original_byte(uintptr_t addr)
{
    uint8_t b = *(const volatile uint8_t *)addr;
    for (const struct applied *p = g_top; p; p = p->prev) /* newest → oldest */
        for (size_t i = 0; i < p->n; i++)
            if (addr >= p->r[i].at && addr < p->r[i].at + JUMP_LEN)
                b = p->r[i].saved[addr - p->r[i].at]; /* the oldest save wins */
    return b;
}

/* A function shorter than the jump may still be redirected when the bytes
 * after it, up to the next symbol, are alignment padding: no code lives
 * there, so the jump may spill into it (GCC and Clang align functions to 16
 * bytes at -O2). Padding is NOP (0x90), INT3 (0xcc), zero, or the bytes of
 * the multi-byte NOP forms (66 2e 0f 1f 84/80/44/40 00...). */
static int padding_fits(const struct hp_exe *exe, uintptr_t func, uint64_t size, size_t skip)
{
    static const uint8_t pad[] = {0x90, 0xcc, 0x00, 0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x80, 0x44, 0x40};
    uint64_t need = skip + JUMP_LEN;
    if (hp_exe_room(exe, func) < need)
        return 0;
    for (uint64_t k = size; k < need; k++)
        if (!memchr(pad, original_byte(func + k), sizeof pad))
            return 0;
    return 1;
}

static uint64_t fingerprint_running(uintptr_t func, uint64_t size, const struct hp_func_rec *f)
{
    uint64_t h = HP_FNV_OFFSET_BASIS;
    for (uint64_t i = 0; i < size; i++) {
        int masked = 0;
        for (uint32_t m = 0; m < f->nmasks && !masked; m++)
            masked = i >= f->masks[m].off && i - f->masks[m].off < f->masks[m].len;
        h ^= masked ? 0 : original_byte(func + i);
        h *= HP_FNV_PRIME;
    }
    return h;
}

static const char *fn_label(const char *name, const char *file, char *buf, size_t len)
{
    if (file && *file)
        snprintf(buf, len, "%s (%s)", name, file);
    else
        snprintf(buf, len, "%s", name);
    return buf;
}

/* Finds the running function for a record and checks it is the code the
 * patch was built against. */
static int find_target(const struct hp_exe *exe, const struct hp_func_rec *f, uintptr_t *func,
                       char *err, size_t errlen)
{
    struct hp_symref refs[16];
    char label[600];
    fn_label(f->name, f->file, label, sizeof label);
    int n = hp_exe_lookup(exe, f->file, f->name, 1, refs, 16);
    if (n == 0)
        return hp_fail(err, errlen, "function %s is not in the running program's symbol table",
                       label);
    if (n > 16)
        n = 16;
    int good = -1, ngood = 0;
    uint64_t seen_size = 0;
    for (int i = 0; i < n; i++) {
        seen_size = refs[i].size;
        if (refs[i].size != f->old_size || refs[i].size > HP_MAX_PATCH_SIZE)
            continue;
        if (fingerprint_running(refs[i].addr, refs[i].size, f) == f->fingerprint) {
            good = i;
            ngood++;
        }
    }
    if (ngood > 1)
        return hp_fail(err, errlen,
                       "function %s is ambiguous: %d functions of that name match the patch",
                       label, ngood);
    if (ngood == 0) {
        if (n == 1 && seen_size != f->old_size)
            return hp_fail(err, errlen,
                           "function %s: running code does not match the code this patch was "
                           "built against (size %llu vs %llu) — was the patch built from the "
                           "deployed version?",
                           label, (unsigned long long)seen_size,
                           (unsigned long long)f->old_size);
        return hp_fail(err, errlen,
                       "function %s: running code does not match the code this patch was built "
                       "against (%sfingerprint differs) — was the patch built from the deployed "
                       "version?",
                       label, n > 1 ? "none of the candidates match: " : "");
    }
    *func = refs[good].addr;
    return 0;
}

int hp_check_threads(const struct hp_thread *t, size_t nt, const struct hp_site *s, size_t ns,
                     char *err, size_t errlen)
{
    for (size_t i = 0; i < nt; i++)
        for (size_t k = 0; k < ns; k++)
            if (t[i].rip > s[k].lo && t[i].rip < s[k].hi) {
                char label[600];
                return hp_fail(err, errlen,
                               "function %s is busy: thread %d is executing its first bytes",
                               fn_label(s[k].name, s[k].file, label, sizeof label),
                               (int)t[i].tid);
            }
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

/* ---- the stack check ---------------------------------------------------- */

/* Code no frame may be in for a consistent switch. */
struct busy_range {
    uintptr_t lo, hi;
    const char *name, *file; /* name NULL: "the patch's code" (stubs etc.) */
};

struct hit {
    pid_t tid;
    const struct busy_range *range;
};

/* State of one check, allocated before the stop. */
struct check {
    const struct busy_range *ranges;
    size_t nr;
    struct hit hits[MAX_HITS];
    size_t nhits, total_hits;
    pid_t tid;       /* thread being walked */
    int stop_on_hit; /* consistent: one hit is enough to retry */
    size_t frames;
    pid_t bad_tid;   /* first thread whose walk could not finish */
    size_t nbad, nguessed;
    char bad_why[160];
};

static int frame_cb(void *arg, uintptr_t pc, unsigned depth)
{
    struct check *c = arg;
    (void)depth;
    c->frames++;
    for (size_t k = 0; k < c->nr; k++) {
        const struct busy_range *b = &c->ranges[k];
        if (pc < b->lo || pc >= b->hi)
            continue;
        size_t h;
        for (h = 0; h < c->nhits; h++) /* once per (thread, function) */
            if (c->hits[h].tid == c->tid && c->hits[h].range->name == b->name)
                break;
        if (h == c->nhits) {
            c->total_hits++;
            if (c->nhits < MAX_HITS)
                c->hits[c->nhits++] = (struct hit){c->tid, b};
        }
        return c->stop_on_hit;
    }
    return 0;
}

/* Walks every stopped thread. Runs in the critical section: no malloc. */
static void stack_check(struct hp_unwind *u, const struct hp_stopset *set, struct check *c)
{
    c->nhits = c->total_hits = c->frames = c->nbad = c->nguessed = 0;
    c->bad_tid = 0;
    for (size_t i = 0; i < set->n; i++) {
        char why[160];
        c->tid = set->threads[i].tid;
        int rc = hp_unwind_walk(u, set->threads[i].regs, frame_cb, c, why, sizeof why);
        if (rc == HP_WALK_INCOMPLETE && c->nbad++ == 0) {
            c->bad_tid = c->tid;
            memcpy(c->bad_why, why, sizeof why);
        }
        if (rc == HP_WALK_GUESSED)
            c->nguessed++;
    }
}

static const char *fmt_ms(unsigned ms, char *buf, size_t len)
{
    if (ms % 1000 == 0)
        snprintf(buf, len, "%u s", ms / 1000);
    else
        snprintf(buf, len, "%u ms", ms);
    return buf;
}

static void append(char *buf, size_t len, size_t *used, const char *fmt, ...) HP_PRINTF(4, 5);
static void append(char *buf, size_t len, size_t *used, const char *fmt, ...)
{
    if (!buf || *used >= len)
        return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(buf + *used, len - *used, fmt, ap);
    va_end(ap);
    if (w > 0)
        *used = *used + (size_t)w < len ? *used + (size_t)w : len - 1;
}

/* "thread N is running old f(); ..." lines for the reply and the log. */
static void report(const struct check *c, const char *reverting, char *details, size_t detlen)
{
    size_t used = 0;
    char line[800], label[600];
    if (details && detlen)
        details[0] = 0;
    for (size_t h = 0; h < c->nhits; h++) {
        const struct busy_range *b = c->hits[h].range;
        if (!reverting)
            snprintf(line, sizeof line,
                     "thread %d is running old %s(); it finishes in the old code",
                     (int)c->hits[h].tid, fn_label(b->name, b->file, label, sizeof label));
        else if (b->name)
            snprintf(line, sizeof line,
                     "thread %d is running patch %s's %s(); it finishes in the patch's code, "
                     "which stays mapped",
                     (int)c->hits[h].tid, reverting, fn_label(b->name, b->file, label, sizeof label));
        else
            snprintf(line, sizeof line,
                     "thread %d is inside patch %s's code; it finishes there (the code stays "
                     "mapped)",
                     (int)c->hits[h].tid, reverting);
        hp_log("  %s", line);
        append(details, detlen, &used, "%s\n", line);
    }
    if (c->total_hits > c->nhits)
        append(details, detlen, &used, "(%zu more)\n", c->total_hits - c->nhits);
    if (c->nbad) {
        snprintf(line, sizeof line,
                 "thread %d: stack walk stopped early (%s); its deeper frames were not checked%s",
                 (int)c->bad_tid, c->bad_why, c->nbad > 1 ? " (and other threads)" : "");
        hp_log("  %s", line);
        append(details, detlen, &used, "%s\n", line);
    }
}

/* Why a consistent wait gave up (from the last attempt). */
static int consistent_failure(const struct check *c, const char *reverting, unsigned ms,
                              char *err, size_t errlen)
{
    char t[32], label[600];
    fmt_ms(ms, t, sizeof t);
    if (c->nhits) {
        const struct busy_range *b = c->hits[0].range;
        if (!reverting)
            return hp_fail(err, errlen,
                           "function %s is on the stack of thread %d (it never returned within "
                           "%s): it cannot switch consistently; apply without --consistent to "
                           "switch future calls only",
                           fn_label(b->name, b->file, label, sizeof label),
                           (int)c->hits[0].tid, t);
        return hp_fail(err, errlen,
                       "patch %s's %s%s is on the stack of thread %d (it never returned within "
                       "%s): it cannot be removed consistently; revert without --consistent to "
                       "restore the old code for future calls (the patch's code then stays "
                       "mapped)",
                       reverting, b->name ? fn_label(b->name, b->file, label, sizeof label) : "code",
                       b->name ? "()" : "", (int)c->hits[0].tid, t);
    }
    return hp_fail(err, errlen,
                   "the stack of thread %d could not be walked within %s (%s): consistency "
                   "cannot be proven; %s without --consistent to switch future calls only",
                   (int)c->bad_tid, t, c->bad_why, reverting ? "revert" : "apply");
}

/* The code of every applied patch, for the unwinder. */
static struct hp_code_info *patch_code(size_t *n)
{
    size_t k = 0;
    for (const struct applied *p = g_top; p; p = p->prev)
        k++;
    struct hp_code_info *ci = calloc(k ? k : 1, sizeof *ci);
    if (!ci)
        return NULL;
    k = 0;
    for (const struct applied *p = g_top; p; p = p->prev, k++)
        ci[k] = (struct hp_code_info){(uintptr_t)p->region, (uintptr_t)p->region + p->region_size,
                                      p->eh_frame, p->eh_size, p->id};
    *n = k;
    return ci;
}

/* Where no frame may be: applying, each replaced function's whole original
 * code plus the code older patches run for it; reverting `rev`, its code. */
static struct busy_range *busy_ranges(const struct redirect *r, size_t n,
                                      const struct applied *rev, size_t *nr)
{
    size_t cap = 2 * n + 1, k = 0;
    for (const struct applied *p = g_top; p; p = p->prev)
        cap += p->n;
    struct busy_range *b = calloc(cap, sizeof *b);
    if (!b)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (rev) {
            b[k++] = (struct busy_range){r[i].target, r[i].target + r[i].target_size, r[i].name,
                                         r[i].file};
            continue;
        }
        b[k++] = (struct busy_range){r[i].func, r[i].func + r[i].size, r[i].name, r[i].file};
        for (const struct applied *p = g_top; p; p = p->prev)
            for (size_t j = 0; j < p->n; j++)
                if (p->r[j].func == r[i].func)
                    b[k++] = (struct busy_range){p->r[j].target,
                                                 p->r[j].target + p->r[j].target_size, r[i].name,
                                                 r[i].file};
    }
    if (rev) /* stubs, and anything between the functions */
        b[k++] = (struct busy_range){(uintptr_t)rev->region,
                                     (uintptr_t)rev->region + rev->region_size, NULL, NULL};
    *nr = k;
    return b;
}

/* Stops the world, runs the checks, writes JUMP_LEN bytes at each r[i].at
 * (r[i].written, or r[i].saved when restoring = reverting `rev`), resumes.
 * Plain: retries only while a thread executes the first bytes, and lists in
 * `details` the threads still running replaced code. Consistent: retries
 * until no frame is in replaced code, up to o->timeout_ms. */
static int rewrite(struct redirect *r, size_t n, const struct applied *rev,
                   const struct hp_opts *o, char *err, size_t errlen, char *details,
                   size_t detlen)
{
    int restoring = rev != NULL;
    const char *rev_id = rev ? rev->id : NULL;
    struct hp_site *sites = calloc(n ? n : 1, sizeof *sites);
    struct check *chk = calloc(1, sizeof *chk);
    size_t nci = 0, nr = 0;
    struct hp_code_info *ci = patch_code(&nci);
    struct busy_range *ranges = busy_ranges(r, n, rev, &nr);
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
        stack_check(u, &set, chk);
        long long walk_us = now_us() - t0;
        size_t nthreads = set.n;
        int wait = first_bytes || (o->consistent && (chk->nhits || chk->nbad));
        if (wait) {
            hp_resume_all(&set);
            hp_unwind_free(u);
            int give_up = o->consistent ? now_ms() >= deadline : attempt >= BUSY_RETRIES;
            if (give_up) {
                if (o->consistent)
                    consistent_failure(chk, rev_id, o->timeout_ms, err, errlen);
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
            report(chk, rev_id, details, detlen);
        break;
    }
out:
    free(sites);
    free(chk);
    free(ci);
    free(ranges);
    return rc;
}

static void free_redirects(struct redirect *r, size_t n)
{
    for (size_t i = 0; r && i < n; i++) {
        free(r[i].name);
        free(r[i].file);
    }
    free(r);
}

int hp_apply_mem_locked(const void *data, size_t size, const struct hp_opts *o, char *msg,
                        size_t msglen, char *details, size_t detlen)
{
    struct hp_patchobj po;
    struct hp_linked l;
    const struct hp_exe *exe;
    struct redirect *r = NULL;
    int linked = 0;

    if (hp_patchobj_parse(&po, data, size, msg, msglen))
        goto fail;
    for (const struct applied *p = g_top; p; p = p->prev)
        if (strcmp(p->id, po.patch_id) == 0) {
            hp_fail(msg, msglen, "patch %s is already applied", po.patch_id);
            goto fail;
        }
    if (hp_exe_get(&exe, msg, msglen))
        goto fail;
    r = calloc(po.nfuncs, sizeof *r);
    if (!r) {
        hp_fail(msg, msglen, "out of memory");
        goto fail;
    }
    for (uint32_t i = 0; i < po.nfuncs; i++) {
        const struct hp_func_rec *f = &po.funcs[i];
        char label[600];
        fn_label(f->name, f->file, label, sizeof label);
        if (f->redirect != HP_REDIRECT_ENTRY_JUMP) {
            hp_fail(msg, msglen,
                    "function %s: redirect kind %u is not supported by this loader (only entry "
                    "jumps)",
                    label, f->redirect);
            goto fail;
        }
        uintptr_t func = 0;
        if (find_target(exe, f, &func, msg, msglen))
            goto fail;
        uint8_t head[4];
        for (int k = 0; k < 4 && (uint64_t)k < f->old_size; k++)
            head[k] = original_byte(func + k);
        size_t skip = f->old_size >= 4 && memcmp(head, ENDBR64, 4) == 0 ? 4 : 0;
        if (f->old_size < skip + JUMP_LEN && !padding_fits(exe, func, f->old_size, skip)) {
            hp_fail(msg, msglen,
                    "function %s is too small (%llu bytes) for a %d-byte jump%s and no "
                    "alignment padding follows it; patch its callers instead",
                    label, (unsigned long long)f->old_size, JUMP_LEN,
                    skip ? " after endbr64" : "");
            goto fail;
        }
        for (uint32_t k = 0; k < i; k++)
            if (r[k].func == func) {
                hp_fail(msg, msglen, "function %s is replaced twice by this patch", label);
                goto fail;
            }
        r[i].name = strdup(f->name);
        r[i].file = strdup(f->file);
        r[i].func = func;
        r[i].size = f->old_size;
        r[i].at = func + skip;
        memcpy(r[i].saved, (const void *)r[i].at, JUMP_LEN); /* may be an older patch's jump */
    }
    if (hp_link(&po, exe, &l, msg, msglen))
        goto fail;
    linked = 1;
    for (uint32_t i = 0; i < po.nfuncs; i++) {
        long si = hp_po_find_defined(&po, po.funcs[i].new_sym);
        r[i].target = l.sym_addr[si];
        r[i].target_size = po.syms[si].st_size ? po.syms[si].st_size : 1;
        int64_t rel = (int64_t)(r[i].target - (r[i].at + JUMP_LEN));
        if (rel < INT32_MIN || rel > INT32_MAX) {
            hp_fail(msg, msglen, "internal error: new code for %s is out of jump range",
                    r[i].name);
            goto fail;
        }
        int32_t rel32 = (int32_t)rel;
        r[i].written[0] = 0xe9;
        memcpy(r[i].written + 1, &rel32, 4);
    }
    if (rewrite(r, po.nfuncs, NULL, o, msg, msglen, details, detlen))
        goto fail;

    struct applied *a = calloc(1, sizeof *a);
    char *id = strdup(po.patch_id);
    if (!a || !id) {
        /* Cannot record it: undo, so the stack always matches the code. */
        char e2[128];
        struct hp_opts plain = {0, 0};
        struct applied tmp = {.id = (char *)po.patch_id, .region = l.region.base,
                              .region_size = l.region.size};
        rewrite(r, po.nfuncs, &tmp, &plain, e2, sizeof e2, NULL, 0);
        free(a);
        free(id);
        hp_fail(msg, msglen, "out of memory");
        goto fail;
    }
    a->id = id;
    a->r = r;
    a->n = po.nfuncs;
    a->region = l.region.base;
    a->region_size = l.region.size;
    for (size_t i = 1; i < po.nsh; i++) /* its CFI lets threads in it be unwound */
        if (l.sec_addr[i] && strcmp(hp_po_secname(&po, i), ".eh_frame") == 0) {
            a->eh_frame = l.sec_addr[i];
            a->eh_size = po.sh[i].sh_size;
        }
    a->prev = g_top;
    g_top = a;
    for (size_t i = 0; i < a->n; i++)
        hp_log("  %s%s%s: %#lx -> %#lx", a->r[i].file, *a->r[i].file ? "::" : "", a->r[i].name,
               (unsigned long)a->r[i].func, (unsigned long)a->r[i].target);
    snprintf(msg, msglen, "applied %s: %zu functions%s", a->id, a->n,
             o->consistent ? " (consistent: no thread was running them)" : "");
    hp_log("%s (base %s, region %p%s)", msg, po.base_id, a->region,
           a->eh_frame ? ", with unwind information" : "");
    hp_link_free_tables(&l);
    hp_patchobj_free(&po);
    return 0;
fail:
    hp_log("apply failed: %s", msg);
    if (linked) {
        hp_link_unmap(&l); /* no jump points into it */
        hp_link_free_tables(&l);
    }
    free_redirects(r, po.nfuncs);
    hp_patchobj_free(&po);
    return -1;
}

int hp_revert_locked(const struct hp_opts *o, char *msg, size_t msglen, char *details,
                     size_t detlen)
{
    struct applied *a = g_top;
    if (!a)
        return hp_fail(msg, msglen, "no patch applied");
    for (size_t i = 0; i < a->n; i++)
        if (memcmp((const void *)a->r[i].at, a->r[i].written, JUMP_LEN) != 0) {
            hp_fail(msg, msglen, "cannot revert %s: the jump in %s was modified by someone else",
                    a->id, a->r[i].name);
            hp_log("%s", msg);
            return -1;
        }
    if (rewrite(a->r, a->n, a, o, msg, msglen, details, detlen)) {
        hp_log("revert failed: %s", msg);
        return -1;
    }
    g_top = a->prev;
    if (o->consistent) {
        /* No frame was in the patch's code when the old entries came back,
         * and nothing jumps there any more: it can go. (A pointer the patch
         * code handed out to its own functions or data would dangle; such a
         * patch must be reverted without --consistent.) */
        munmap(a->region, a->region_size);
        hp_log("reverted %s consistently; its code at %p (%zu bytes) is unmapped", a->id,
               a->region, a->region_size);
        snprintf(msg, msglen, "reverted %s (consistent: its code is unmapped)", a->id);
    } else {
        /* A thread may still run in the new code, or return into it. */
        hp_log("reverted %s; its code stays mapped at %p (%zu bytes) in case a thread is still "
               "inside it",
               a->id, a->region, a->region_size);
        snprintf(msg, msglen, "reverted %s", a->id);
    }
    free_redirects(a->r, a->n);
    free(a->id);
    free(a);
    return 0;
}

int hp_list_locked(char *buf, size_t len)
{
    size_t count = 0, used = 0;
    const struct applied *order[4096];
    for (const struct applied *p = g_top; p && count < 4096; p = p->prev)
        order[count++] = p;
    if (len)
        buf[0] = 0;
    for (size_t k = count; k-- > 0;) {
        const struct applied *p = order[k];
        int w = snprintf(buf + used, used < len ? len - used : 0, "%s", p->id);
        used += w > 0 ? (size_t)w : 0;
        for (size_t i = 0; i < p->n; i++) {
            w = snprintf(buf + used, used < len ? len - used : 0, " %s%s%s", p->r[i].file,
                         *p->r[i].file ? HP_LOCAL_SEP : "", p->r[i].name);
            used += w > 0 ? (size_t)w : 0;
        }
        w = snprintf(buf + used, used < len ? len - used : 0, "\n");
        used += w > 0 ? (size_t)w : 0;
    }
    if (len && used >= len)
        buf[len - 1] = 0;
    return (int)count;
}

/* ---- public C API (hotpatch.h) ------------------------------------------ */

HP_API int hotpatch_apply_mem(const void *data, size_t size, char *err, size_t errlen)
{
    char msg[1024];
    void *copy = malloc(size ? size : 1);
    if (!copy)
        return hp_fail(err, errlen, "out of memory");
    memcpy(copy, data, size);
    struct hp_opts plain = {0, 0};
    hp_lock();
    int rc = hp_apply_mem_locked(copy, size, &plain, msg, sizeof msg, NULL, 0);
    hp_unlock();
    free(copy);
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
    return rc;
}

HP_API int hotpatch_apply_file(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0)
        return hp_fail(err, errlen, "cannot open %s: %s", path, strerror(errno));
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > (off_t)HP_MAX_PATCH_SIZE) {
        close(fd);
        return hp_fail(err, errlen, "%s is not a regular file of at most %llu bytes", path,
                       (unsigned long long)HP_MAX_PATCH_SIZE);
    }
    size_t size = (size_t)st.st_size, got = 0;
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) {
        close(fd);
        return hp_fail(err, errlen, "out of memory");
    }
    while (got < size) {
        ssize_t n = read(fd, buf + got, size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    char msg[1024];
    int rc;
    if (got != size) {
        rc = hp_fail(msg, sizeof msg, "cannot read %s", path);
    } else {
        struct hp_opts plain = {0, 0};
        hp_lock();
        rc = hp_apply_mem_locked(buf, size, &plain, msg, sizeof msg, NULL, 0);
        hp_unlock();
    }
    free(buf);
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
    return rc;
}

HP_API int hotpatch_revert(char *err, size_t errlen)
{
    char msg[1024];
    struct hp_opts plain = {0, 0};
    hp_lock();
    int rc = hp_revert_locked(&plain, msg, sizeof msg, NULL, 0);
    hp_unlock();
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
    return rc;
}

HP_API int hotpatch_list(char *buf, size_t buflen)
{
    hp_lock();
    int n = hp_list_locked(buf, buflen);
    hp_unlock();
    return n;
}
