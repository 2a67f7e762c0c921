/*
 * Walking the stacks of stopped threads (the whole-stack consistency check).
 *
 * An x86-64 DWARF CFI unwinder over .eh_frame, found through each loaded
 * object's PT_GNU_EH_FRAME binary-search table (the executable, every shared
 * library, the vDSO), plus the .eh_frame of applied patches (a sorted table
 * built by ehframe_index.c). It runs on the patching thread while every other thread is
 * parked in stop.c's handler, starting from the registers the handler copied
 * out of the signal's ucontext.
 *
 * Two phases, because a parked thread may hold any lock (the dynamic
 * loader's, malloc's):
 *   hp_unwind_prepare  before the stop: dl_iterate_phdr, /proc/self/maps,
 *                      patch tables, memory — may lock and malloc;
 *   hp_unwind_walk     while stopped: no malloc, no locks, no stdio.
 *
 * Every read goes through hp_unwind_read_mem(): process_vm_readv on our own
 * pid, which returns EFAULT for an unmapped address instead of crashing (a
 * corrupt stack or a mapping that vanished between prepare and stop can
 * never take the process down). Where process_vm_readv is forbidden (seccomp), reads
 * are checked against the readable mappings of the /proc/self/maps snapshot
 * instead. Stack reads must in addition lie in the mapping the thread's
 * stack pointer is in, the stack pointer must grow from frame to frame, and
 * the depth is bounded — a walk always ends.
 *
 * Frames without CFI: the kernel's signal frame (detected by __restore_rt's
 * bytes `mov $15,%rax; syscall`: the ucontext sits at the stack pointer);
 * the frame-pointer chain when a pc has no FDE. A CFA or return address
 * given by a DWARF expression (PLT entries) ends the walk as "incomplete",
 * as does the frame-pointer fallback running into nonsense.
 *
 * Files (shared declarations in unwind_internal.h):
 *   unwind.c          safe memory reads, frames without CFI, the walk
 *   cfi.c             DWARF encodings, CIE/FDE parsing, CFA programs (the
 *                     supported CFA rules are listed there)
 *   ehframe_index.c   hp_unwind_prepare/free: loaded objects and their
 *                     eh_frame_hdr tables, patch FDE tables, the maps
 *                     snapshot; FDE lookup
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <ucontext.h>

#include "unwind_internal.h"

#define MAX_DEPTH 512

/* ---- safe memory reads ---------------------------------------------------- */

static const struct map *find_map(const struct hp_unwind *u, uintptr_t a)
{
    size_t lo = 0, hi = u->nmaps;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (a < u->maps[mid].lo)
            hi = mid;
        else if (a >= u->maps[mid].hi)
            lo = mid + 1;
        else
            return &u->maps[mid];
    }
    return NULL;
}

static int fetch_block(struct hp_unwind *u, uintptr_t base, uint8_t *dst)
{
    if (u->vm_ok) {
        struct iovec l = {dst, BLOCK}, r = {(void *)base, BLOCK};
        return process_vm_readv(u->pid, &l, 1, &r, 1, 0) == BLOCK ? 0 : -1;
    }
    const struct map *m = find_map(u, base);
    if (!m || !m->r || base + BLOCK > m->hi)
        return -1;
    memcpy(dst, (const void *)base, BLOCK);
    return 0;
}

/* Copies n bytes at addr; -1 if any of them is not readable. */
int hp_unwind_read_mem(struct hp_unwind *u, uintptr_t addr, void *out, size_t n)
{
    uint8_t *o = out;
    while (n > 0) {
        uintptr_t base = addr & ~(uintptr_t)(BLOCK - 1);
        size_t k = (base / BLOCK) % NBLOCKS; /* direct-mapped */
        if (!u->blk_valid[k] || u->blk_addr[k] != base) {
            u->blk_valid[k] = 0;
            if (fetch_block(u, base, u->blk[k]))
                return -1;
            u->blk_addr[k] = base;
            u->blk_valid[k] = 1;
        }
        size_t off = addr - base, take = BLOCK - off < n ? BLOCK - off : n;
        memcpy(o, u->blk[k] + off, take);
        o += take;
        addr += take;
        n -= take;
    }
    return 0;
}

/* A stack slot: 8 bytes inside the current thread's stack mapping. */
int hp_unwind_read_stack(struct hp_unwind *u, uintptr_t a, uint64_t *v)
{
    if (a < u->stk_lo || a > u->stk_hi - 8 || (a & 7))
        return -1;
    return hp_unwind_read_mem(u, a, v, 8);
}

/* Sets the stack bounds to the mapping holding sp (8 MiB above sp if the
 * mapping appeared after the snapshot; reads stay safe either way). */
static void set_stack(struct hp_unwind *u, uintptr_t sp)
{
    const struct map *m = find_map(u, sp);
    u->stk_lo = m ? m->lo : sp;
    u->stk_hi = m ? m->hi : sp + (8u << 20);
}

/* ---- frames without CFI ---------------------------------------------------- */

/* __restore_rt: `mov $15,%rax; syscall` (rt_sigreturn). */
static int is_sigreturn(struct hp_unwind *u, uintptr_t pc)
{
    static const uint8_t pat[9] = {0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05};
    uint8_t b[9];
    return hp_unwind_read_mem(u, pc, b, 9) == 0 && memcmp(b, pat, 9) == 0;
}

/* The handler returned to pc = __restore_rt with sp at the ucontext. */
static int sigframe_step(struct hp_unwind *u, uint64_t *regs, unsigned *valid)
{
    uint64_t g[NGREG];
    uintptr_t at = regs[SP] + offsetof(ucontext_t, uc_mcontext.gregs);
    if (at < u->stk_lo || at + sizeof g > u->stk_hi || hp_unwind_read_mem(u, at, g, sizeof g))
        return -1;
    hp_regs_from_gregs(regs, g);
    *valid = (1u << HP_NREGS) - 1;
    return 0;
}

/* Frame-pointer chain: [rbp] = caller's rbp, [rbp+8] = return address. */
static int fp_step(struct hp_unwind *u, uint64_t *regs, unsigned *valid)
{
    uint64_t fp = regs[FP], ra, prev;
    if (!(*valid & (1u << FP)) || fp < regs[SP] || hp_unwind_read_stack(u, fp, &prev) ||
        hp_unwind_read_stack(u, fp + 8, &ra))
        return -1;
    const struct map *m = find_map(u, ra);
    if (ra && (!m || !m->x))
        return -1;
    regs[FP] = prev;
    regs[SP] = fp + 16;
    regs[RA] = ra;
    *valid = (1u << FP) | (1u << SP) | (1u << RA);
    return 0;
}

/* ---- the walk ---------------------------------------------------------------- */

int hp_unwind_walk(struct hp_unwind *u, const uint64_t *start, hp_frame_cb cb, void *arg,
                   char *why, size_t whylen)
{
    uint64_t regs[HP_NREGS];
    unsigned valid = (1u << HP_NREGS) - 1;
    int exact = 1, guessed = 0; /* pc is an interrupted pc, not a return address */
    memcpy(regs, start, sizeof regs);
    set_stack(u, regs[SP]);
    for (unsigned depth = 0;; depth++) {
        uintptr_t pc = regs[RA], look = exact ? pc : pc - 1;
        const char *reason = NULL;
        if (pc == 0)
            return guessed ? HP_WALK_GUESSED : HP_WALK_DONE;
        if (depth == MAX_DEPTH) {
            snprintf(why, whylen, "deeper than %d frames", MAX_DEPTH);
            return HP_WALK_INCOMPLETE;
        }
        if (cb(arg, look, depth))
            return HP_WALK_STOPPED;
        uint64_t old_sp = regs[SP];
        if (!exact && is_sigreturn(u, pc)) {
            if (sigframe_step(u, regs, &valid)) {
                snprintf(why, whylen, "unreadable signal frame at %#lx", (unsigned long)old_sp);
                return HP_WALK_INCOMPLETE;
            }
            set_stack(u, regs[SP]); /* the handler may have run on sigaltstack */
            exact = 1;
            continue;
        }
        const struct obj *o = hp_ehframe_find_obj(u, look);
        struct fde f;
        int rc;
        if (o && hp_ehframe_find_fde(u, o, look, &f) == 0) {
            rc = hp_cfi_step(u, &f, look, regs, &valid, &reason);
        } else if (fp_step(u, regs, &valid) == 0) {
            rc = 0;
            guessed = 1;
        } else {
            snprintf(why, whylen, "no unwind information for code at %#lx%s%s%s",
                     (unsigned long)pc, o ? " (in " : "", o ? o->name : "", o ? ")" : "");
            return HP_WALK_INCOMPLETE;
        }
        if (rc == 1)
            return guessed ? HP_WALK_GUESSED : HP_WALK_DONE;
        if (rc < 0) {
            snprintf(why, whylen, "%s at %#lx%s%s%s", reason, (unsigned long)pc,
                     o ? " (in " : "", o ? o->name : "", o ? ")" : "");
            return HP_WALK_INCOMPLETE;
        }
        if (regs[SP] <= old_sp) { /* stacks grow down: callers are higher */
            snprintf(why, whylen, "the stack pointer did not grow at %#lx", (unsigned long)pc);
            return HP_WALK_INCOMPLETE;
        }
        exact = 0;
    }
}
