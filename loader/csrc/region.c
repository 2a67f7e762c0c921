/*
 * Placing patch memory (arena.c's chunks).
 *
 * Patch code reaches the executable with rel32 (calls, jumps, RIP-relative
 * data) and the executable reaches the patch with the 5-byte `jmp rel32` we
 * write at old function entries, so the whole region must lie within ±2 GiB
 * of the whole executable image. We read /proc/self/maps, list the free gaps,
 * and pick:
 *   1. the highest fitting address below the image (closest to it), else
 *   2. the highest fitting address above it (farthest from [heap], so brk
 *      keeps room to grow).
 * A non-PIE executable sits low (0x400000): "below" has no room above
 * LOWEST_ADDR, so the region lands above it (above the heap start), still
 * within 2 GiB of it and so below 2 GiB — which patch code with absolute
 * 32-bit relocations to its own data requires; the caller then passes that
 * as `limit` and we never place the region higher.
 * mmap(MAP_FIXED_NOREPLACE) makes the race with other threads mapping memory
 * harmless: if somebody took the spot, we re-read the maps and try again.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hp_internal.h"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

#define PAGE 4096UL
#define REACH (2UL << 30)         /* 2 GiB */
#define MARGIN (64UL << 20)       /* stay well inside rel32 reach */
#define LOWEST_ADDR (16UL << 20)  /* never map near NULL */

/* Reads a whole /proc file (no size in stat) into a malloc'd buffer. */
static char *read_proc(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (cap - len < 4096) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    if (buf)
        buf[len] = 0;
    return buf;
}

/* Finds the best address for `size` bytes, or 0. */
static uintptr_t choose(const char *maps, uintptr_t lo, uintptr_t hi, size_t size,
                        uintptr_t limit)
{
    /* Window where the region's start may lie. */
    uintptr_t win_lo = hi > REACH - MARGIN ? hi - (REACH - MARGIN) : 0;
    if (win_lo < LOWEST_ADDR)
        win_lo = LOWEST_ADDR;
    uintptr_t win_hi = lo + (REACH - MARGIN) - size; /* last allowed start */
    if (limit) {
        if (limit < size + LOWEST_ADDR)
            return 0;
        if (win_hi > limit - size)
            win_hi = limit - size;
    }
    uintptr_t best_below = 0, best_above = 0;
    uintptr_t prev_end = 0;
    const char *p = maps;
    for (;;) {
        unsigned long a = 0, b = 0;
        int last = (*p == 0);
        if (!last && sscanf(p, "%lx-%lx", &a, &b) != 2)
            last = 1;
        if (last)
            a = 0x800000000000UL; /* end of the user address space */
        /* Free gap [prev_end, a). */
        uintptr_t gs = prev_end, ge = a;
        if (ge > gs && ge - gs >= size + 2 * PAGE) {
            uintptr_t top = ge - PAGE; /* one guard page below the next mapping */
            if (top <= lo) {
                uintptr_t start = (top - size) & ~(PAGE - 1);
                if (start >= gs + PAGE && start >= win_lo && start <= win_hi && start > best_below)
                    best_below = start;
            } else if (gs >= hi) {
                uintptr_t cap_top = top < win_hi + size ? top : win_hi + size;
                if (cap_top > size) {
                    uintptr_t start = (cap_top - size) & ~(PAGE - 1);
                    if (start >= gs + PAGE && start >= win_lo && start > best_above)
                        best_above = start;
                }
            }
        }
        if (last)
            break;
        if (b > prev_end)
            prev_end = b;
        const char *nl = strchr(p, '\n');
        if (!nl)
            p += strlen(p);
        else
            p = nl + 1;
    }
    return best_below ? best_below : best_above;
}

int hp_region_reaches(uintptr_t lo, uintptr_t hi, uintptr_t a, uintptr_t b)
{
    uintptr_t win_lo = hi > REACH - MARGIN ? hi - (REACH - MARGIN) : 0;
    return a >= win_lo && b <= lo + (REACH - MARGIN);
}

int hp_region_map(uintptr_t lo, uintptr_t hi, size_t size, uintptr_t limit, int prot,
                  struct hp_region *out, char *err, size_t errlen)
{
    size = (size + PAGE - 1) & ~(PAGE - 1);
    if (hi - lo + size > REACH - 2 * MARGIN)
        return hp_fail(err, errlen, "executable image too large to place a patch within 2 GiB");
    for (int attempt = 0; attempt < 8; attempt++) {
        char *maps = read_proc("/proc/self/maps");
        if (!maps)
            return hp_fail(err, errlen, "cannot read /proc/self/maps");
        uintptr_t at = choose(maps, lo, hi, size, limit);
        free(maps);
        if (!at)
            return hp_fail(err, errlen,
                           "no free address range of %zu bytes within 2 GiB of the executable%s",
                           size,
                           limit ? " and below 2 GiB (the patch has absolute 32-bit relocations "
                                   "to its own data: a -fno-pie build)"
                                 : "");
        void *p = mmap((void *)at, size, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        if (p == (void *)at) {
            out->base = p;
            out->size = size;
            return 0;
        }
        if (p != MAP_FAILED)
            munmap(p, size); /* kernel without NOREPLACE treated it as a hint */
        else if (errno != EEXIST)
            return hp_fail(err, errlen, "cannot map the patch region: %m");
    }
    return hp_fail(err, errlen, "cannot map the patch region: address space keeps changing");
}
