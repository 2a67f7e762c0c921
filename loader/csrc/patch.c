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
 * Files (shared declarations in patch_internal.h):
 *   patch.c    the stack of applied patches, locking, list, the C API
 *   apply.c    finding and verifying the replaced functions, apply
 *   revert.c   revert
 *   rewrite.c  the switch: stop, check, write the jumps, resume; text writes
 *   busy.c     the first-bytes check and the stack check policy
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

void hp_free_redirects(struct redirect *r, size_t n)
{
    for (size_t i = 0; r && i < n; i++) {
        free(r[i].name);
        free(r[i].file);
    }
    free(r);
}

int hp_list_locked(char *buf, size_t len)
{
    size_t count = 0, used = 0;
    const struct applied *order[4096];
    for (const struct applied *p = hp_patch_top; p && count < 4096; p = p->prev)
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
