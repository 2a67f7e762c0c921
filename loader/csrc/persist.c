/*
 * Patches that survive restarts: at start-up, before main() and before the
 * listener exists (only this thread runs loader code), re-apply every patch
 * of this build's patch directory, in order, through the same apply as a
 * live one (content hash, signature where the process has a key,
 * functions found and their code checked against what each patch was built
 * from, stacked-patch checks).
 *
 * Layout (hpctl's persist.rs writes it; loader/README.md documents it):
 *   ROOT/<build-id>/series   "<file> <sha256> <patch id>" a line, oldest first
 *   ROOT/<build-id>/<file>   the patch files
 *   ROOT/<build-id>/lock     hpctl holds it exclusively while it changes them
 * ROOT: $HOTPATCH_DIR, else /var/lib/hotpatch for root, else
 * $XDG_STATE_HOME/hotpatch, else $HOME/.local/state/hotpatch.
 *
 * What is read must be owned by us or root and writable by nobody else:
 * whoever can write the directory could make the program run their code.
 * The first patch that cannot be applied stops the re-apply (logged, with
 * the count left out): the ones after it were applied on top of it.
 */
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hp_internal.h"

#define SERIES_MAX (64 * 1024)
#define LOCK_WAIT_MS 2000

struct note_search {
    char *hex;
    size_t len;
    int found;
};

/* The build-id in one PT_NOTE segment of the loaded program. */
static int note_build_id(const uint8_t *p, size_t size, struct note_search *s)
{
    size_t at = 0;
    while (at + sizeof(Elf64_Nhdr) <= size) {
        const Elf64_Nhdr *n = (const Elf64_Nhdr *)(p + at);
        size_t name_at = at + sizeof *n;
        size_t desc_at = name_at + ((n->n_namesz + 3) & ~3u);
        if (desc_at + n->n_descsz > size)
            return 0;
        if (n->n_type == NT_GNU_BUILD_ID && n->n_namesz == 4 &&
            memcmp(p + name_at, "GNU", 4) == 0 && n->n_descsz * 2 < s->len) {
            for (size_t i = 0; i < n->n_descsz; i++)
                snprintf(s->hex + 2 * i, 3, "%02x", p[desc_at + i]);
            return 1;
        }
        at = desc_at + ((n->n_descsz + 3) & ~3u);
    }
    return 0;
}

/* dl_iterate_phdr lists the executable first. */
static int first_object(struct dl_phdr_info *info, size_t size, void *arg)
{
    struct note_search *s = arg;
    (void)size;
    for (int i = 0; i < info->dlpi_phnum && !s->found; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_NOTE)
            s->found = note_build_id((const uint8_t *)(info->dlpi_addr + ph->p_vaddr),
                                     ph->p_memsz, s);
    }
    return 1;
}

static int build_id(char *hex, size_t len)
{
    struct note_search s = {hex, len, 0};
    dl_iterate_phdr(first_object, &s);
    return s.found ? 0 : -1;
}

static const char *set(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* The one rule for ROOT (persist.rs has the same). */
int hp_persist_root(char *out, size_t len)
{
    const char *v;
    int n;
    if ((v = set("HOTPATCH_DIR")))
        n = snprintf(out, len, "%s", v);
    else if (geteuid() == 0)
        n = snprintf(out, len, "/var/lib/hotpatch");
    else if ((v = set("XDG_STATE_HOME")))
        n = snprintf(out, len, "%s/hotpatch", v);
    else if ((v = set("HOME")))
        n = snprintf(out, len, "%s/.local/state/hotpatch", v);
    else
        return -1;
    return n > 0 && (size_t)n < len ? 0 : -1;
}

/* Owned by us or root, writable by nobody else. */
static int trusted(int fd, const char *what, const char *where)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        hp_log("patch directory %s: cannot inspect %s: %m; nothing re-applied", where, what);
        return 0;
    }
    if ((st.st_uid != geteuid() && st.st_uid != 0) || (st.st_mode & 022)) {
        hp_log("patch directory %s: %s is owned by uid %u with mode %03o (must be ours or "
               "root's and writable by nobody else); nothing re-applied",
               where, what, (unsigned)st.st_uid, (unsigned)(st.st_mode & 0777));
        return 0;
    }
    return 1;
}

/* A shared lock, waited for briefly: hpctl holds it only while it changes
 * the series, which it replaces atomically anyway. Returns the fd or -1. */
static int lock_shared(int dirfd)
{
    int fd = openat(dirfd, "lock", O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -1;
    for (int waited = 0; flock(fd, LOCK_SH | LOCK_NB) < 0 && waited < LOCK_WAIT_MS; waited += 10)
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    return fd;
}

/* Reads a trusted regular file of at most `max` bytes under dirfd. */
static uint8_t *read_file(int dirfd, const char *name, size_t max, size_t *size,
                          const char *where)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0) {
        if (errno != ENOENT || strcmp(name, "series") != 0)
            hp_log("patch directory %s: cannot open %s: %m", where, name);
        return NULL;
    }
    uint8_t *buf = NULL;
    if (!trusted(fd, name, where))
        goto out;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size > max) {
        hp_log("patch directory %s: %s is not a regular file of at most %zu bytes", where, name,
               max);
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (buf && got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (buf && got != (size_t)st.st_size) {
        hp_log("patch directory %s: cannot read %s", where, name);
        free(buf);
        buf = NULL;
    } else if (buf) {
        buf[got] = 0;
        *size = got;
    }
out:
    close(fd);
    return buf;
}

/* Is the patch's own content hash the one the series recorded? (The apply
 * then checks that the file matches its hash.) */
static int hash_recorded(const uint8_t *data, size_t size, const char *want, char *err,
                         size_t errlen)
{
    struct hp_patchobj po;
    char hex[2 * HP_SHA256_SIZE + 1] = "";
    if (hp_patchobj_parse(&po, data, size, err, errlen))
        return -1;
    for (size_t i = 1; i < po.nsh; i++) {
        if (strcmp(hp_po_secname(&po, i), HP_META_SECTION) != 0)
            continue;
        const uint8_t *h = data + po.sh[i].sh_offset + HP_HDR_SHA256;
        for (int k = 0; k < (int)HP_SHA256_SIZE; k++)
            snprintf(hex + 2 * k, 3, "%02x", h[k]);
    }
    hp_patchobj_free(&po);
    if (strcmp(hex, want) != 0)
        return hp_fail(err, errlen,
                       "its content hash %.16s... is not the %.16s... the series recorded", hex,
                       want);
    return 0;
}

/* Re-applies one patch; 0 or -1 with the reason in err. */
static int reapply_one(int dirfd, const char *file, const char *sha, const char *where,
                       char *err, size_t errlen)
{
    size_t size = 0;
    if (file[0] == '.' || strchr(file, '/'))
        return hp_fail(err, errlen, "the series names %s, which is not a file of the directory",
                       file);
    uint8_t *data = read_file(dirfd, file, HP_MAX_PATCH_SIZE, &size, where);
    if (!data)
        return hp_fail(err, errlen, "%s cannot be read (see above)", file);
    int rc = hash_recorded(data, size, sha, err, errlen);
    if (rc == 0) {
        struct hp_opts at_start = {0}; /* one thread: nothing to wait for */
        hp_lock();
        rc = hp_apply_mem_locked(data, size, &at_start, err, errlen, NULL, 0);
        hp_unlock();
    }
    free(data);
    return rc;
}

/* Applies the series in order; stops at the first patch that fails. */
static void reapply_series(int dirfd, char *series, const char *where)
{
    char err[1024];
    int applied = 0, left = 0, failed = 0;
    for (char *save = NULL, *line = strtok_r(series, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        char file[256], sha[2 * HP_SHA256_SIZE + 1], id[256];
        if (line[0] == '#' || line[strspn(line, " \t")] == 0)
            continue;
        if (failed) {
            left++;
            continue;
        }
        if (sscanf(line, "%255s %64s %255s", file, sha, id) != 3) {
            hp_log("patch directory %s: malformed series line \"%.80s\"; stopping", where, line);
            failed = 1;
        } else if (reapply_one(dirfd, file, sha, where, err, sizeof err) == 0) {
            hp_log("start-up: re-applied %s from %s/%s: %s", id, where, file, err);
            applied++;
        } else {
            hp_log("start-up: patch %s from %s/%s NOT applied: %s", id, where, file, err);
            failed = 1;
        }
    }
    if (left)
        hp_log("start-up: %d later patch(es) of %s not applied either (they were applied on "
               "top of the one that failed)",
               left, where);
    else if (applied && !failed)
        hp_log("start-up: %d patch(es) re-applied from %s", applied, where);
}

void hp_persist_reapply(void)
{
    char root[4096], where[4096 + 2 * 64 + 2], id[2 * 64 + 1];
    size_t size = 0;
    if (hp_persist_root(root, sizeof root) < 0 || build_id(id, sizeof id) < 0)
        return; /* no directory to read, or no build to key it by */
    snprintf(where, sizeof where, "%s/%s", root, id);
    int dirfd = open(where, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return; /* nothing was ever persisted for this build */
    if (!trusted(dirfd, "the directory", where)) {
        close(dirfd);
        return;
    }
    int lockfd = lock_shared(dirfd);
    char *series = (char *)read_file(dirfd, "series", SERIES_MAX, &size, where);
    if (series)
        reapply_series(dirfd, series, where);
    free(series);
    if (lockfd >= 0)
        close(lockfd);
    close(dirfd);
}
