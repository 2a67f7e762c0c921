/*
 * Walking the stacks of stopped threads (the whole-stack consistency check).
 *
 * An x86-64 DWARF CFI unwinder over .eh_frame, found through each loaded
 * object's PT_GNU_EH_FRAME binary-search table (the executable, every shared
 * library, the vDSO), plus the .eh_frame of applied patches (a sorted table
 * built here). It runs on the patching thread while every other thread is
 * parked in stop.c's handler, starting from the registers the handler copied
 * out of the signal's ucontext.
 *
 * Two phases, because a parked thread may hold any lock (the dynamic
 * loader's, malloc's):
 *   hp_unwind_prepare  before the stop: dl_iterate_phdr, /proc/self/maps,
 *                      patch tables, memory — may lock and malloc;
 *   hp_unwind_walk     while stopped: no malloc, no locks, no stdio.
 *
 * Every read goes through read_mem(): process_vm_readv on our own pid, which
 * returns EFAULT for an unmapped address instead of crashing (a corrupt
 * stack or a mapping that vanished between prepare and stop can never take
 * the process down). Where process_vm_readv is forbidden (seccomp), reads
 * are checked against the readable mappings of the /proc/self/maps snapshot
 * instead. Stack reads must in addition lie in the mapping the thread's
 * stack pointer is in, the stack pointer must grow from frame to frame, and
 * the depth is bounded — a walk always ends.
 *
 * Supported: the CFA rules GCC and Clang emit (def_cfa*, offset*, val_offset*,
 * register, restore*, remember/restore_state, same_value, undefined,
 * advance_loc*, set_loc, GNU_args_size, nop); the kernel's signal frame
 * (detected by __restore_rt's bytes `mov $15,%rax; syscall`: the ucontext
 * sits at the stack pointer); the frame-pointer chain when a pc has no FDE.
 * A CFA or return address given by a DWARF expression (PLT entries) ends the
 * walk as "incomplete", as does the frame-pointer fallback running into
 * nonsense.
 */
#include <errno.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <ucontext.h>
#include <unistd.h>

#include "hp_internal.h"

#define MAX_DEPTH 512
#define MAX_STATES 8      /* DW_CFA_remember_state nesting */
#define MAX_CFI_STEPS 4096 /* instructions interpreted per frame */
#define RA HP_REG_RA
#define SP 7
#define FP 6

/* ---- prepared state ------------------------------------------------------ */

struct obj {
    uintptr_t lo, hi;         /* executable range */
    uintptr_t hdr;            /* PT_GNU_EH_FRAME (0: none) */
    uintptr_t table;          /* binary-search table inside hdr (0: none) */
    size_t count;             /* its entries */
    uintptr_t *patch_tab;     /* patches: sorted (pc, fde) pairs */
    char name[48];
};

struct map {
    uintptr_t lo, hi;
    char r, w, x;
};

#define NBLOCKS 8
#define BLOCK 256 /* divides the page size: a block never straddles pages */

struct hp_unwind {
    struct obj *objs;
    size_t nobjs, capobjs;
    struct map *maps;
    size_t nmaps;
    int vm_ok; /* process_vm_readv works on ourselves */
    pid_t pid;
    /* read cache, reset per walk (stacks change between stops) */
    uintptr_t blk_addr[NBLOCKS];
    int blk_valid[NBLOCKS];
    unsigned blk_next;
    uint8_t blk[NBLOCKS][BLOCK];
    /* stack bounds of the walk in progress */
    uintptr_t stk_lo, stk_hi;
};

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
static int read_mem(struct hp_unwind *u, uintptr_t addr, void *out, size_t n)
{
    uint8_t *o = out;
    while (n > 0) {
        uintptr_t base = addr & ~(uintptr_t)(BLOCK - 1);
        int k;
        for (k = 0; k < NBLOCKS; k++)
            if (u->blk_valid[k] && u->blk_addr[k] == base)
                break;
        if (k == NBLOCKS) {
            k = (int)(u->blk_next++ % NBLOCKS);
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
static int read_stack(struct hp_unwind *u, uintptr_t a, uint64_t *v)
{
    if (a < u->stk_lo || a > u->stk_hi - 8 || (a & 7))
        return -1;
    return read_mem(u, a, v, 8);
}

/* Sets the stack bounds to the mapping holding sp (8 MiB above sp if the
 * mapping appeared after the snapshot; reads stay safe either way). */
static void set_stack(struct hp_unwind *u, uintptr_t sp)
{
    const struct map *m = find_map(u, sp);
    u->stk_lo = m ? m->lo : sp;
    u->stk_hi = m ? m->hi : sp + (8u << 20);
}

/* ---- DWARF encodings ------------------------------------------------------ */

/* A cursor over CFI bytes [p, end), every byte read through read_mem. */
struct cur {
    struct hp_unwind *u;
    uintptr_t p, end;
    int bad;
};

static uint64_t c_fixed(struct cur *c, size_t n)
{
    uint64_t v = 0;
    if (c->bad || c->p + n > c->end || read_mem(c->u, c->p, &v, n)) {
        c->bad = 1;
        return 0;
    }
    c->p += n;
    return v; /* little-endian */
}

static uint64_t c_uleb(struct cur *c)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        uint8_t b = (uint8_t)c_fixed(c, 1);
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80) || c->bad)
            return v;
    }
    c->bad = 1;
    return 0;
}

static int64_t c_sleb(struct cur *c)
{
    int64_t v = 0;
    unsigned shift = 0;
    uint8_t b;
    do {
        b = (uint8_t)c_fixed(c, 1);
        if (shift < 64)
            v |= (int64_t)((uint64_t)(b & 0x7f) << shift);
        shift += 7;
    } while ((b & 0x80) && !c->bad && shift < 70);
    if (shift < 64 && (b & 0x40))
        v |= -((int64_t)1 << shift);
    return v;
}

/* DW_EH_PE_* pointer; `abs_only` for pc_range (value without the base). */
static uintptr_t c_ptr(struct cur *c, uint8_t enc, int abs_only)
{
    uintptr_t at = c->p;
    uint64_t v;
    if (enc == 0xff)
        return 0; /* omit */
    switch (enc & 0x0f) {
    case 0x00: v = c_fixed(c, 8); break;
    case 0x01: v = c_uleb(c); break;
    case 0x02: v = c_fixed(c, 2); break;
    case 0x03: v = c_fixed(c, 4); break;
    case 0x04: v = c_fixed(c, 8); break;
    case 0x09: v = (uint64_t)c_sleb(c); break;
    case 0x0a: v = (uint64_t)(int64_t)(int16_t)c_fixed(c, 2); break;
    case 0x0b: v = (uint64_t)(int64_t)(int32_t)c_fixed(c, 4); break;
    case 0x0c: v = c_fixed(c, 8); break;
    default: c->bad = 1; return 0;
    }
    if (abs_only)
        return v;
    switch (enc & 0x70) {
    case 0x00: break;
    case 0x10: v += at; break; /* pcrel */
    default: c->bad = 1; return 0; /* textrel/datarel/funcrel: not in .eh_frame FDEs */
    }
    if (enc & 0x80) /* indirect */
        v = c_fixed(&(struct cur){c->u, v, v + 8, 0}, 8);
    return v;
}

/* ---- CIE / FDE ------------------------------------------------------------ */

struct cie {
    uint64_t code_align;
    int64_t data_align;
    unsigned ra_reg;
    uint8_t fde_enc;
    int has_aug; /* 'z' */
    int signal;  /* 'S' */
    uintptr_t insn, insn_end;
};

struct fde {
    uintptr_t pc_lo, pc_hi;
    uintptr_t insn, insn_end;
    struct cie cie;
};

/* Reads an entry's length; sets *body to after it. 0 = terminator/bad. */
static uint64_t entry_len(struct hp_unwind *u, uintptr_t at, uintptr_t *body)
{
    struct cur c = {u, at, at + 12, 0};
    uint64_t len = c_fixed(&c, 4);
    if (len == 0xffffffffu)
        len = c_fixed(&c, 8);
    *body = c.p;
    return c.bad || len > (1u << 24) ? 0 : len;
}

static int parse_cie(struct hp_unwind *u, uintptr_t at, struct cie *ci)
{
    uintptr_t body;
    uint64_t len = entry_len(u, at, &body);
    if (!len)
        return -1;
    struct cur c = {u, body, body + len, 0};
    if (c_fixed(&c, 4) != 0) /* CIE id */
        return -1;
    unsigned ver = (unsigned)c_fixed(&c, 1);
    char aug[8];
    size_t na = 0;
    for (;;) {
        char ch = (char)c_fixed(&c, 1);
        if (c.bad || ch == 0)
            break;
        if (na + 1 >= sizeof aug)
            return -1;
        aug[na++] = ch;
    }
    aug[na] = 0;
    if (strstr(aug, "eh"))
        c_fixed(&c, 8);
    ci->code_align = c_uleb(&c);
    ci->data_align = c_sleb(&c);
    ci->ra_reg = ver == 1 ? (unsigned)c_fixed(&c, 1) : (unsigned)c_uleb(&c);
    ci->fde_enc = 0; /* absptr */
    ci->has_aug = aug[0] == 'z';
    ci->signal = 0;
    if (ci->has_aug) {
        uint64_t alen = c_uleb(&c);
        uintptr_t aend = c.p + alen;
        for (const char *a = aug + 1; *a && !c.bad; a++) {
            if (*a == 'L')
                c_fixed(&c, 1);
            else if (*a == 'R')
                ci->fde_enc = (uint8_t)c_fixed(&c, 1);
            else if (*a == 'P')
                c_ptr(&c, (uint8_t)c_fixed(&c, 1) & 0x7f, 0); /* value unused */
            else if (*a == 'S')
                ci->signal = 1;
            else
                break; /* unknown: the length lets us skip the rest */
        }
        c.p = aend;
    }
    ci->insn = c.p;
    ci->insn_end = body + len;
    return c.bad || ci->ra_reg >= HP_NREGS || ci->code_align == 0 ? -1 : 0;
}

static int parse_fde(struct hp_unwind *u, uintptr_t at, struct fde *f)
{
    uintptr_t body;
    uint64_t len = entry_len(u, at, &body);
    if (!len)
        return -1;
    struct cur c = {u, body, body + len, 0};
    uint32_t cie_off = (uint32_t)c_fixed(&c, 4);
    if (c.bad || cie_off == 0 || parse_cie(u, body - cie_off, &f->cie))
        return -1;
    f->pc_lo = c_ptr(&c, f->cie.fde_enc, 0);
    f->pc_hi = f->pc_lo + c_ptr(&c, f->cie.fde_enc & 0x0f, 1);
    if (f->cie.has_aug)
        c.p += c_uleb(&c);
    f->insn = c.p;
    f->insn_end = body + len;
    return c.bad || f->insn > f->insn_end ? -1 : 0;
}

/* ---- FDE lookup ----------------------------------------------------------- */

static const struct obj *find_obj(const struct hp_unwind *u, uintptr_t pc)
{
    for (size_t i = 0; i < u->nobjs; i++)
        if (pc >= u->objs[i].lo && pc < u->objs[i].hi)
            return &u->objs[i];
    return NULL;
}

/* Finds the FDE covering pc: 0 found, -1 none. */
static int find_fde(struct hp_unwind *u, const struct obj *o, uintptr_t pc, struct fde *f)
{
    uintptr_t fde = 0;
    size_t lo = 0, hi = o->count;
    while (lo < hi) { /* last entry with start <= pc */
        size_t mid = (lo + hi) / 2;
        uintptr_t start, addr;
        if (o->patch_tab) {
            start = o->patch_tab[2 * mid];
            addr = o->patch_tab[2 * mid + 1];
        } else {
            int32_t e[2]; /* DW_EH_PE_datarel|sdata4, relative to the hdr */
            if (read_mem(u, o->table + mid * 8, e, 8))
                return -1;
            start = o->hdr + (intptr_t)e[0];
            addr = o->hdr + (intptr_t)e[1];
        }
        if (start <= pc) {
            fde = addr;
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (!fde || parse_fde(u, fde, f))
        return -1;
    return pc >= f->pc_lo && pc < f->pc_hi ? 0 : -1;
}

/* ---- CFI interpretation --------------------------------------------------- */

enum { R_SAME, R_UNDEF, R_OFFSET, R_VAL_OFFSET, R_REG, R_EXPR };

struct rule {
    uint8_t kind, reg;
    int64_t off;
};

struct row {
    struct rule r[HP_NREGS];
    unsigned cfa_reg;
    int64_t cfa_off;
    int cfa_expr;
};

static void set_rule(struct row *row, uint64_t reg, uint8_t kind, int64_t off, uint64_t r2)
{
    if (reg < HP_NREGS) /* other registers (vector, flags) do not matter */
        row->r[reg] = (struct rule){kind, (uint8_t)(r2 < HP_NREGS ? r2 : 0), off};
}

/* Runs instructions [p, end) until the location passes pc. */
static int run_cfi(struct hp_unwind *u, const struct cie *ci, uintptr_t p, uintptr_t end,
                   uintptr_t loc, uintptr_t pc, struct row *row, const struct row *init)
{
    struct row stack[MAX_STATES];
    unsigned depth = 0;
    struct cur c = {u, p, end, 0};
    for (int steps = 0; c.p < c.end && !c.bad && steps < MAX_CFI_STEPS; steps++) {
        uint8_t op = (uint8_t)c_fixed(&c, 1);
        uint64_t reg, delta = 0;
        switch (op & 0xc0) {
        case 0x40: delta = op & 0x3f; goto advance;
        case 0x80: reg = op & 0x3f;
            set_rule(row, reg, R_OFFSET, (int64_t)c_uleb(&c) * ci->data_align, 0);
            continue;
        case 0xc0: reg = op & 0x3f;
            if (init && reg < HP_NREGS)
                row->r[reg] = init->r[reg];
            continue;
        }
        switch (op) {
        case 0x00: break; /* nop */
        case 0x01: loc = c_ptr(&c, ci->fde_enc, 0); if (loc > pc) return 0; break;
        case 0x02: delta = c_fixed(&c, 1); goto advance;
        case 0x03: delta = c_fixed(&c, 2); goto advance;
        case 0x04: delta = c_fixed(&c, 4); goto advance;
        case 0x05: reg = c_uleb(&c);
            set_rule(row, reg, R_OFFSET, (int64_t)c_uleb(&c) * ci->data_align, 0);
            break;
        case 0x06: reg = c_uleb(&c);
            if (init && reg < HP_NREGS)
                row->r[reg] = init->r[reg];
            break;
        case 0x07: set_rule(row, c_uleb(&c), R_UNDEF, 0, 0); break;
        case 0x08: set_rule(row, c_uleb(&c), R_SAME, 0, 0); break;
        case 0x09: reg = c_uleb(&c); set_rule(row, reg, R_REG, 0, c_uleb(&c)); break;
        case 0x0a: /* remember_state */
            if (depth == MAX_STATES)
                return -1;
            stack[depth++] = *row;
            break;
        case 0x0b: /* restore_state: the CFA rule is restored too (as GCC's unwinder) */
            if (depth == 0)
                return -1;
            *row = stack[--depth];
            break;
        case 0x0c: row->cfa_reg = (unsigned)c_uleb(&c); row->cfa_off = (int64_t)c_uleb(&c);
            row->cfa_expr = 0; break;
        case 0x0d: row->cfa_reg = (unsigned)c_uleb(&c); row->cfa_expr = 0; break;
        case 0x0e: row->cfa_off = (int64_t)c_uleb(&c); break;
        case 0x0f: c.p += c_uleb(&c); row->cfa_expr = 1; break; /* def_cfa_expression */
        case 0x10: reg = c_uleb(&c); c.p += c_uleb(&c); set_rule(row, reg, R_EXPR, 0, 0); break;
        case 0x11: reg = c_uleb(&c);
            set_rule(row, reg, R_OFFSET, c_sleb(&c) * ci->data_align, 0);
            break;
        case 0x12: row->cfa_reg = (unsigned)c_uleb(&c); row->cfa_off = c_sleb(&c) * ci->data_align;
            row->cfa_expr = 0; break;
        case 0x13: row->cfa_off = c_sleb(&c) * ci->data_align; break;
        case 0x14: reg = c_uleb(&c);
            set_rule(row, reg, R_VAL_OFFSET, (int64_t)c_uleb(&c) * ci->data_align, 0);
            break;
        case 0x15: reg = c_uleb(&c);
            set_rule(row, reg, R_VAL_OFFSET, c_sleb(&c) * ci->data_align, 0);
            break;
        case 0x16: reg = c_uleb(&c); c.p += c_uleb(&c); set_rule(row, reg, R_EXPR, 0, 0); break;
        case 0x2e: c_uleb(&c); break; /* GNU_args_size: only matters for landing pads */
        case 0x2f: reg = c_uleb(&c); /* GNU_negative_offset_extended */
            set_rule(row, reg, R_OFFSET, -(int64_t)c_uleb(&c) * ci->data_align, 0);
            break;
        default: return -1;
        }
        continue;
    advance:
        loc += delta * ci->code_align;
        if (loc > pc)
            return 0;
    }
    return c.bad ? -1 : 0;
}

/* One CFI step: regs → caller's regs. 1 = outermost frame, 0 = stepped,
 * -1 = cannot (reason in *why). */
static int cfi_step(struct hp_unwind *u, const struct fde *f, uintptr_t pc, uint64_t *regs,
                    unsigned *valid, const char **why)
{
    struct row init, row;
    memset(&init, 0, sizeof init); /* R_SAME everywhere */
    init.cfa_reg = SP;
    if (run_cfi(u, &f->cie, f->cie.insn, f->cie.insn_end, f->pc_lo, UINTPTR_MAX, &init, NULL)) {
        *why = "unreadable unwind information";
        return -1;
    }
    row = init;
    if (run_cfi(u, &f->cie, f->insn, f->insn_end, f->pc_lo, pc, &row, &init)) {
        *why = "unsupported unwind instruction";
        return -1;
    }
    if (row.cfa_expr || row.r[f->cie.ra_reg].kind == R_EXPR) {
        *why = "a frame whose CFA is a DWARF expression (PLT entry?)";
        return -1;
    }
    if (row.r[f->cie.ra_reg].kind == R_UNDEF)
        return 1; /* _start, clone: the outermost frame */
    if (row.cfa_reg >= HP_NREGS || !(*valid & (1u << row.cfa_reg))) {
        *why = "the CFA register is unknown";
        return -1;
    }
    uint64_t cfa = regs[row.cfa_reg] + (uint64_t)row.cfa_off, out[HP_NREGS];
    unsigned nvalid = 0;
    for (unsigned i = 0; i < HP_NREGS; i++) {
        const struct rule *r = &row.r[i];
        out[i] = 0;
        switch (r->kind) {
        case R_SAME:
            out[i] = regs[i];
            nvalid |= *valid & (1u << i);
            break;
        case R_OFFSET:
            if (read_stack(u, cfa + (uint64_t)r->off, &out[i])) {
                if (i == f->cie.ra_reg) {
                    *why = "a return address outside the thread's stack";
                    return -1;
                }
                break;
            }
            nvalid |= 1u << i;
            break;
        case R_VAL_OFFSET:
            out[i] = cfa + (uint64_t)r->off;
            nvalid |= 1u << i;
            break;
        case R_REG:
            out[i] = regs[r->reg];
            nvalid |= (*valid >> r->reg & 1u) << i;
            break;
        default: /* undefined, expression: unknown */
            break;
        }
    }
    out[SP] = cfa; /* by definition */
    nvalid |= 1u << SP;
    out[RA] = out[f->cie.ra_reg];
    if (!(nvalid & (1u << f->cie.ra_reg))) {
        *why = "the return address is unknown";
        return -1;
    }
    nvalid |= 1u << RA;
    memcpy(regs, out, sizeof out);
    *valid = nvalid;
    return 0;
}

/* ---- frames without CFI ---------------------------------------------------- */

/* __restore_rt: `mov $15,%rax; syscall` (rt_sigreturn). */
static int is_sigreturn(struct hp_unwind *u, uintptr_t pc)
{
    static const uint8_t pat[9] = {0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05};
    uint8_t b[9];
    return read_mem(u, pc, b, 9) == 0 && memcmp(b, pat, 9) == 0;
}

/* The handler returned to pc = __restore_rt with sp at the ucontext. */
static int sigframe_step(struct hp_unwind *u, uint64_t *regs, unsigned *valid)
{
    uint64_t g[NGREG];
    uintptr_t at = regs[SP] + offsetof(ucontext_t, uc_mcontext.gregs);
    if (at < u->stk_lo || at + sizeof g > u->stk_hi || read_mem(u, at, g, sizeof g))
        return -1;
    hp_regs_from_gregs(regs, g);
    *valid = (1u << HP_NREGS) - 1;
    return 0;
}

/* Frame-pointer chain: [rbp] = caller's rbp, [rbp+8] = return address. */
static int fp_step(struct hp_unwind *u, uint64_t *regs, unsigned *valid)
{
    uint64_t fp = regs[FP], ra, prev;
    if (!(*valid & (1u << FP)) || fp < regs[SP] || read_stack(u, fp, &prev) ||
        read_stack(u, fp + 8, &ra))
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
    memset(u->blk_valid, 0, sizeof u->blk_valid);
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
        const struct obj *o = find_obj(u, look);
        struct fde f;
        int rc;
        if (o && find_fde(u, o, look, &f) == 0) {
            rc = cfi_step(u, &f, look, regs, &valid, &reason);
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

/* ---- preparation (before the stop: may lock and malloc) ------------------------ */

static struct obj *new_obj(struct hp_unwind *u)
{
    if (u->nobjs == u->capobjs) {
        size_t cap = u->capobjs ? u->capobjs * 2 : 32;
        struct obj *n = realloc(u->objs, cap * sizeof *n);
        if (!n)
            return NULL;
        u->objs = n;
        u->capobjs = cap;
    }
    struct obj *o = &u->objs[u->nobjs++];
    memset(o, 0, sizeof *o);
    return o;
}

static int phdr_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    struct hp_unwind *u = arg;
    uintptr_t lo = UINTPTR_MAX, hi = 0, hdr = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *p = &info->dlpi_phdr[i];
        if (p->p_type == PT_LOAD && (p->p_flags & PF_X)) {
            uintptr_t a = info->dlpi_addr + p->p_vaddr;
            if (a < lo)
                lo = a;
            if (a + p->p_memsz > hi)
                hi = a + p->p_memsz;
        } else if (p->p_type == PT_GNU_EH_FRAME) {
            hdr = info->dlpi_addr + p->p_vaddr;
        }
    }
    if (hi == 0)
        return 0;
    struct obj *o = new_obj(u);
    if (!o)
        return 1;
    o->lo = lo;
    o->hi = hi;
    o->hdr = hdr;
    const char *name = info->dlpi_name && *info->dlpi_name ? info->dlpi_name : "the program";
    const char *slash = strrchr(name, '/');
    snprintf(o->name, sizeof o->name, "%s", slash ? slash + 1 : name);
    /* version 1, eh_frame_ptr enc, fde_count enc, table enc = datarel|sdata4 */
    uint8_t h[4];
    if (hdr && read_mem(u, hdr, h, 4) == 0 && h[0] == 1 && h[3] == 0x3b) {
        struct cur c = {u, hdr + 4, hdr + 32, 0};
        c_ptr(&c, h[1], 0);
        uint64_t n = c_ptr(&c, h[2], 0);
        if (!c.bad && n < (1u << 26)) {
            o->table = c.p;
            o->count = (size_t)n;
        }
    }
    return 0;
}

static int cmp_pair(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

/* A patch's .eh_frame has no search table: scan it once and sort the FDEs
 * that describe code inside the patch region (FDEs of functions the patch
 * did not include point elsewhere and are ignored). */
static int add_patch(struct hp_unwind *u, const struct hp_code_info *ci)
{
    struct obj *o = new_obj(u);
    if (!o)
        return -1;
    o->lo = ci->lo;
    o->hi = ci->hi;
    snprintf(o->name, sizeof o->name, "patch %s", ci->name);
    if (!ci->eh_frame)
        return 0;
    size_t cap = 64, n = 0;
    uintptr_t *tab = malloc(cap * 2 * sizeof *tab);
    for (uintptr_t at = ci->eh_frame; tab && at + 4 <= ci->eh_frame + ci->eh_size;) {
        uintptr_t body;
        uint64_t len = entry_len(u, at, &body);
        struct fde f;
        if (!len)
            break;
        uint32_t id = 0;
        read_mem(u, body, &id, 4);
        if (id != 0 && parse_fde(u, at, &f) == 0 && f.pc_lo >= ci->lo && f.pc_lo < ci->hi) {
            if (n == cap) {
                uintptr_t *t2 = realloc(tab, cap * 4 * sizeof *tab);
                if (!t2)
                    break;
                tab = t2;
                cap *= 2;
            }
            tab[2 * n] = f.pc_lo;
            tab[2 * n + 1] = at;
            n++;
        }
        at = body + len;
    }
    if (!tab)
        return -1;
    qsort(tab, n, 2 * sizeof *tab, cmp_pair);
    o->patch_tab = tab;
    o->count = n;
    return 0;
}

static int read_maps(struct hp_unwind *u)
{
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f)
        return -1;
    size_t cap = 0;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char perm[5];
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, perm) != 3)
            continue;
        if (u->nmaps == cap) {
            cap = cap ? cap * 2 : 128;
            struct map *n = realloc(u->maps, cap * sizeof *n);
            if (!n) {
                fclose(f);
                return -1;
            }
            u->maps = n;
        }
        u->maps[u->nmaps++] = (struct map){lo, hi, perm[0] == 'r', perm[1] == 'w', perm[2] == 'x'};
    }
    fclose(f);
    return 0; /* the kernel lists mappings sorted by address */
}

int hp_unwind_prepare(struct hp_unwind **out, const struct hp_code_info *extra, size_t nextra,
                      char *err, size_t errlen)
{
    struct hp_unwind *u = calloc(1, sizeof *u);
    if (!u)
        return hp_fail(err, errlen, "out of memory");
    u->pid = getpid();
    if (read_maps(u)) {
        hp_unwind_free(u);
        return hp_fail(err, errlen, "cannot read /proc/self/maps: %m");
    }
    uint64_t probe = 0x1234, got = 0;
    struct iovec l = {&got, 8}, r = {&probe, 8};
    u->vm_ok = process_vm_readv(u->pid, &l, 1, &r, 1, 0) == 8 && got == probe;
    for (size_t i = 0; i < nextra; i++)
        if (add_patch(u, &extra[i])) {
            hp_unwind_free(u);
            return hp_fail(err, errlen, "out of memory");
        }
    /* Patches first: find_obj takes the first match. */
    if (dl_iterate_phdr(phdr_cb, u)) {
        hp_unwind_free(u);
        return hp_fail(err, errlen, "out of memory");
    }
    *out = u;
    return 0;
}

void hp_unwind_free(struct hp_unwind *u)
{
    if (!u)
        return;
    for (size_t i = 0; i < u->nobjs; i++)
        free(u->objs[i].patch_tab);
    free(u->objs);
    free(u->maps);
    free(u);
}
