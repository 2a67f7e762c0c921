/*
 * Patch memory, shared by every patch: patches are packed into a few large
 * chunks near the executable instead of each mapping pages of its own.
 *
 * Two kinds of chunk: text chunks (PROT_READ|PROT_EXEC, never writable:
 * code, stubs, read-only data, GOT slots and .eh_frame of every patch) and
 * data chunks (PROT_READ|PROT_WRITE: a patch's new variables). Text is
 * written through /proc/self/mem (hp_arena_write), like the executable's
 * text, so no page is ever writable and executable. A one-function patch
 * costs the bytes it uses, rounded to ARENA_ALIGN, not three pages.
 *
 * Each chunk keeps its free space as a sorted array of extents. Freeing
 * coalesces and hands whole free pages back to the kernel (MADV_DONTNEED),
 * so reverted patches' memory comes back while the mapping count stays
 * flat. Chunks that become wholly free are unmapped, except the first of
 * each kind (the next patch would map it again).
 *
 * Every entry point runs under hp_lock (apply and revert).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hp_internal.h"

#define PAGE 4096UL
#define CHUNK_MIN (1UL << 20) /* address space only: untouched pages cost nothing */
#define ARENA_ALIGN 16UL

struct ext {
    uintptr_t lo, hi;
};

struct chunk {
    uintptr_t lo, hi;
    int exec;
    struct ext *free; /* sorted, disjoint, non-adjacent */
    size_t nfree, cap;
    struct chunk *next;
};

static struct chunk *g_chunks;

static uintptr_t align_up(uintptr_t v, uintptr_t a)
{
    return (v + a - 1) & ~(a - 1);
}

/* Takes [at, at + size) out of free extent k. */
static int carve(struct chunk *c, size_t k, uintptr_t at, size_t size)
{
    struct ext e = c->free[k];
    int left = at > e.lo, right = at + size < e.hi;
    if (left && right) {
        if (c->nfree == c->cap) {
            size_t cap = c->cap ? 2 * c->cap : 8;
            struct ext *n = realloc(c->free, cap * sizeof *n);
            if (!n)
                return -1;
            c->free = n;
            c->cap = cap;
        }
        memmove(c->free + k + 2, c->free + k + 1, (c->nfree - k - 1) * sizeof *c->free);
        c->free[k] = (struct ext){e.lo, at};
        c->free[k + 1] = (struct ext){at + size, e.hi};
        c->nfree++;
    } else if (left) {
        c->free[k].hi = at;
    } else if (right) {
        c->free[k].lo = at + size;
    } else {
        memmove(c->free + k, c->free + k + 1, (c->nfree - k - 1) * sizeof *c->free);
        c->nfree--;
    }
    return 0;
}

/* Chunks serve every patch, of the executable or of a library: a chunk is
 * used only within reach of the code the patch is for. */
static int fits(const struct chunk *c, int exec, uintptr_t limit, uintptr_t lo, uintptr_t hi)
{
    return c->exec == exec && (!limit || c->hi <= limit) && hp_region_reaches(lo, hi, c->lo, c->hi);
}

/* First fit in the existing chunks; 0 when none has room. */
static uintptr_t first_fit(uintptr_t lo, uintptr_t hi, size_t size, size_t align, int exec,
                           uintptr_t limit)
{
    for (struct chunk *c = g_chunks; c; c = c->next) {
        if (!fits(c, exec, limit, lo, hi))
            continue;
        for (size_t k = 0; k < c->nfree; k++) {
            uintptr_t at = align_up(c->free[k].lo, align);
            if (at + size <= c->free[k].hi && at >= c->free[k].lo)
                return carve(c, k, at, size) ? 0 : at;
        }
    }
    return 0;
}

static struct chunk *new_chunk(uintptr_t lo, uintptr_t hi, size_t size, int exec, uintptr_t limit,
                               char *err, size_t errlen)
{
    struct chunk *c = calloc(1, sizeof *c);
    struct hp_region r;
    size = size < CHUNK_MIN ? CHUNK_MIN : align_up(size, PAGE);
    if (!c || !(c->free = malloc(8 * sizeof *c->free))) {
        free(c);
        hp_fail(err, errlen, "out of memory");
        return NULL;
    }
    int prot = exec ? PROT_READ | PROT_EXEC : PROT_READ | PROT_WRITE;
    if (hp_region_map(lo, hi, size, limit, prot, &r, err, errlen)) {
        free(c->free);
        free(c);
        return NULL;
    }
    c->lo = (uintptr_t)r.base;
    c->hi = c->lo + r.size;
    c->exec = exec;
    c->cap = 8;
    c->nfree = 1;
    c->free[0] = (struct ext){c->lo, c->hi};
    c->next = g_chunks;
    g_chunks = c;
    return c;
}

int hp_arena_alloc(uintptr_t lo, uintptr_t hi, size_t size, size_t align, int exec,
                   uintptr_t limit, struct hp_block *out, char *err, size_t errlen)
{
    *out = (struct hp_block){0};
    if (!size)
        return 0;
    size = align_up(size, ARENA_ALIGN);
    align = align < ARENA_ALIGN ? ARENA_ALIGN : align;
    if (align > PAGE || (align & (align - 1)))
        return hp_fail(err, errlen, "patch section alignment %zu is not supported", align);
    uintptr_t at = first_fit(lo, hi, size, align, exec, limit);
    if (!at) {
        if (!new_chunk(lo, hi, size, exec, limit, err, errlen))
            return -1;
        at = first_fit(lo, hi, size, align, exec, limit);
        if (!at)
            return hp_fail(err, errlen, "out of memory");
    }
    *out = (struct hp_block){at, size, exec};
    return 0;
}

/* Gives the whole pages inside [lo, hi) back to the kernel. */
static void release_pages(uintptr_t lo, uintptr_t hi)
{
    uintptr_t a = align_up(lo, PAGE), b = hi & ~(PAGE - 1);
    if (a < b)
        madvise((void *)a, b - a, MADV_DONTNEED);
}

static void drop_chunk_if_empty(struct chunk *c)
{
    int first_of_kind = 1;
    for (struct chunk *o = c->next; o; o = o->next)
        if (o->exec == c->exec)
            first_of_kind = 0; /* chunks are pushed in front: c is newer */
    if (first_of_kind || c->nfree != 1 || c->free[0].lo != c->lo || c->free[0].hi != c->hi)
        return;
    for (struct chunk **pp = &g_chunks; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    munmap((void *)c->lo, c->hi - c->lo);
    free(c->free);
    free(c);
}

void hp_arena_free(struct hp_block *b)
{
    if (!b->size)
        return;
    struct chunk *c = g_chunks;
    while (c && !(b->at >= c->lo && b->at < c->hi))
        c = c->next;
    if (!c) {
        hp_log("internal: freeing %#lx, which no patch chunk holds", (unsigned long)b->at);
        return;
    }
    size_t k = 0; /* first extent after the block */
    while (k < c->nfree && c->free[k].lo < b->at)
        k++;
    uintptr_t lo = b->at, hi = b->at + b->size;
    int join_prev = k > 0 && c->free[k - 1].hi == lo;
    int join_next = k < c->nfree && c->free[k].lo == hi;
    if (join_prev && join_next) {
        c->free[k - 1].hi = c->free[k].hi;
        memmove(c->free + k, c->free + k + 1, (c->nfree - k - 1) * sizeof *c->free);
        c->nfree--;
        k--;
    } else if (join_prev) {
        c->free[--k].hi = hi;
    } else if (join_next) {
        c->free[k].lo = lo;
    } else {
        if (c->nfree == c->cap) {
            struct ext *n = realloc(c->free, 2 * c->cap * sizeof *n);
            if (!n) { /* keep the space used: a leak, never a double use */
                hp_log("out of memory freeing patch memory at %#lx", (unsigned long)lo);
                *b = (struct hp_block){0};
                return;
            }
            c->free = n;
            c->cap *= 2;
        }
        memmove(c->free + k + 1, c->free + k, (c->nfree - k) * sizeof *c->free);
        c->free[k] = (struct ext){lo, hi};
        c->nfree++;
    }
    release_pages(c->free[k].lo, c->free[k].hi);
    *b = (struct hp_block){0};
    drop_chunk_if_empty(c);
}

int hp_arena_write(const struct hp_block *b, const void *src, size_t len, char *err,
                   size_t errlen)
{
    if (len > b->size)
        return hp_fail(err, errlen, "internal: %zu bytes do not fit a %zu-byte block", len,
                       b->size);
    if (!b->exec) {
        memcpy((void *)b->at, src, len);
        return 0;
    }
    /* Text is never writable: write it as a debugger would. */
    int fd = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return hp_fail(err, errlen, "cannot open /proc/self/mem for writing patch code: %m");
    size_t done = 0;
    while (done < len) {
        ssize_t n = pwrite(fd, (const uint8_t *)src + done, len - done, (off_t)(b->at + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            close(fd);
            return hp_fail(err, errlen, "writing patch code through /proc/self/mem failed: %m");
        }
        done += (size_t)n;
    }
    close(fd);
    return 0;
}

size_t hp_arena_chunks(void)
{
    size_t n = 0;
    for (const struct chunk *c = g_chunks; c; c = c->next)
        n++;
    return n;
}
