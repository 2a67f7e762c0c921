/*
 * Apply / revert / list, and the stack of applied patches.
 *
 * APPLY: parse → find the replaced functions and verify they are the code
 * the patch was built against (size + masked fingerprint) → link the new
 * code into a fresh region → (call-site mode) ask the client for the direct
 * calls to them and check each → switch (switch.c: the one protocol that
 * stops the threads, checks, writes and resumes) → push on the stack.
 *
 * Stacking: a function may be redirected by several patches. Each span
 * (entry jump or call site) saves the bytes it overwrote (the previous
 * patch's, or the original code); revert pops the newest patch and restores
 * exactly those bytes. The base check compares with the code that is
 * active: the newest patch's replacement when there is one, so a fix must
 * be built on top of the patch it replaces (one built against the code
 * under it would silently undo that patch's fix, and is refused naming
 * it). A patch may replace or call a function an earlier patch added
 * (patchdefs.c). Reading code looks through every patch's spans
 * (hp_original_bytes).
 *
 * Files (shared declarations in patch_internal.h):
 *   patch.c    the stack of applied patches, locking, list, the C API
 *   apply.c    finding and verifying the replaced functions, apply
 *   revert.c   revert
 *   patchdefs.c  what applied patches define (for patches built on top)
 *   reclaim.c  freeing lazily reverted patches' code once no thread is in it
 *   sites.c    checking the client's call sites, making them spans
 *   client.c   the conversation with hpctl (its stop, its call sites)
 *   switch.c   the switch protocol (numbered steps above hp_switch)
 *   busy.c     the stack check policy and its messages
 *
 * All entry points take g_lock: the socket listener and the C API may race.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hotpatch.h"
#include "patch_internal.h"

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
struct applied *hp_patch_top;

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
    hp_text_after_fork(); /* the parent's /proc/self/mem descriptor */
    hp_shadow_after_fork();
    pthread_mutex_init(&g_lock, NULL);
    hp_membarrier_init();
}

const char *hp_fn_label(const char *name, const char *file, char *buf, size_t len)
{
    if (file && *file)
        snprintf(buf, len, "%s (%s)", name, file);
    else
        snprintf(buf, len, "%s", name);
    return buf;
}

static int by_addr(const void *a, const void *b)
{
    uintptr_t x = (*(const struct span *const *)a)->at, y = (*(const struct span *const *)b)->at;
    return x < y ? -1 : x > y;
}

int hp_saved_build(struct hp_saved *s)
{
    size_t np = 0, total = 0, k = 0, g = 0;
    *s = (struct hp_saved){0};
    for (const struct applied *p = hp_patch_top; p; p = p->prev) {
        np++;
        total += p->nspans;
    }
    s->first = malloc((np + 1) * sizeof *s->first);
    s->by_addr = malloc((total ? total : 1) * sizeof *s->by_addr);
    if (!s->first || !s->by_addr) {
        hp_saved_free(s);
        return -1;
    }
    for (const struct applied *p = hp_patch_top; p; p = p->prev, g++) {
        int sorted = 1;
        s->first[g] = k;
        for (size_t i = 0; i < p->nspans; i++, k++) {
            s->by_addr[k] = &p->spans[i];
            sorted &= i == 0 || s->by_addr[k - 1]->at <= s->by_addr[k]->at;
        }
        if (!sorted)
            qsort(s->by_addr + s->first[g], p->nspans, sizeof *s->by_addr, by_addr);
    }
    s->first[np] = k;
    s->npatches = np;
    return 0;
}

void hp_saved_free(struct hp_saved *s)
{
    free(s->by_addr);
    free(s->first);
    *s = (struct hp_saved){0};
}

void hp_original_bytes(const struct hp_saved *s, uintptr_t addr, size_t len, uint8_t *out)
{
    memcpy(out, (const void *)addr, len);
    for (size_t g = 0; g < s->npatches; g++) { /* newest → oldest: the oldest save wins */
        const struct span *const *sp = s->by_addr + s->first[g];
        size_t lo = 0, hi = s->first[g + 1] - s->first[g];
        while (lo < hi) { /* the first span that may end after addr */
            size_t mid = lo + (hi - lo) / 2;
            if (sp[mid]->at + SPAN_MAX <= addr)
                lo = mid + 1;
            else
                hi = mid;
        }
        for (size_t i = lo; i < s->first[g + 1] - s->first[g] && sp[i]->at < addr + len; i++) {
            uintptr_t from = sp[i]->at > addr ? sp[i]->at : addr;
            uintptr_t to = sp[i]->at + sp[i]->len < addr + len ? sp[i]->at + sp[i]->len : addr + len;
            if (from < to)
                memcpy(out + (from - addr), sp[i]->old + (from - sp[i]->at), to - from);
        }
    }
}

const struct redirect *hp_active_redirect(uintptr_t func, const char **patch_id)
{
    for (const struct applied *p = hp_patch_top; p; p = p->prev)
        for (size_t i = 0; i < p->n; i++)
            if (p->r[i].func == func) {
                if (patch_id)
                    *patch_id = p->id;
                return &p->r[i];
            }
    return NULL;
}

uintptr_t hp_active_code(uintptr_t func)
{
    const struct redirect *r = hp_active_redirect(func, NULL);
    return r ? r->target : func;
}

int hp_patch_code_info(struct hp_code_info **out, size_t *n)
{
    size_t k = hp_retired_code_info(NULL); /* lazily reverted, maybe still running */
    for (const struct applied *p = hp_patch_top; p; p = p->prev)
        k++;
    struct hp_code_info *ci = calloc(k ? k : 1, sizeof *ci);
    if (!ci)
        return -1;
    k = hp_retired_code_info(ci);
    for (const struct applied *p = hp_patch_top; p; p = p->prev, k++)
        ci[k] = (struct hp_code_info){p->text.at, p->text.at + p->text.size,
                                      p->eh_frame, p->eh_size, p->id};
    *out = ci;
    *n = k;
    return 0;
}

void hp_unrecord(struct applied *a)
{
    free(a->defs);
    free(a->target);
    free(a->id);
    free(a);
}

/* Grows *p (n elements of size sz) by k; -1: out of memory. */
static int grow(void **p, size_t n, size_t k, size_t sz)
{
    void *g = realloc(*p, (n + k ? n + k : 1) * sz);
    if (!g)
        return -1;
    *p = g;
    return 0;
}

int hp_parts_add(struct hp_parts *j, const struct redirect *r, size_t nr, const struct span *s,
                 size_t ns, const struct busy_range *b, size_t nb)
{
    if (grow((void **)&j->r, j->nr, nr, sizeof *r) ||
        grow((void **)&j->spans, j->nspans, ns, sizeof *s) ||
        grow((void **)&j->ranges, j->nranges, nb, sizeof *b))
        return -1;
    memcpy(j->r + j->nr, r, nr * sizeof *r);
    for (size_t i = 0; i < ns; i++) {
        j->spans[j->nspans + i] = s[i];
        j->spans[j->nspans + i].func += (uint32_t)j->nr;
    }
    memcpy(j->ranges + j->nranges, b, nb * sizeof *b);
    j->nr += nr;
    j->nspans += ns;
    j->nranges += nb;
    return 0;
}

void hp_parts_free(struct hp_parts *j)
{
    free(j->r);
    free(j->spans);
    free(j->ranges);
    *j = (struct hp_parts){0};
}

void hp_free_redirects(struct redirect *r, size_t n)
{
    (void)n; /* the names live in r's block */
    free(r);
}

int hp_list_locked(char *buf, size_t len)
{
    size_t count = 0, used = 0;
    const struct applied *order[4096];
    for (const struct applied *p = hp_patch_top; p && count < 4096; p = p->prev)
        if (!p->with_prev) /* a patch for several objects: listed once */
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
            w = p->call_sites ? snprintf(buf + used, used < len ? len - used : 0,
                                         HP_LIST_SITES_SEP "%zu", p->r[i].nsites)
                              : 0;
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
    struct hp_opts lazy = {0};
    hp_lock();
    int rc = hp_apply_mem_locked(copy, size, &lazy, msg, sizeof msg, NULL, 0);
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
        struct hp_opts lazy = {0};
        hp_lock();
        rc = hp_apply_mem_locked(buf, size, &lazy, msg, sizeof msg, NULL, 0);
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
    struct hp_opts lazy = {0};
    hp_lock();
    int rc = hp_revert_locked(&lazy, msg, sizeof msg, NULL, 0);
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
