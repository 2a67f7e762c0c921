/*
 * DWARF call frame information: the pointer encodings, CIE/FDE parsing, and
 * the CFA program interpreter that turns one frame's registers into its
 * caller's (hp_cfi_step). Part of the stack walker (overview in unwind.c);
 * every byte is read through hp_unwind_read_mem, so a corrupt or vanished
 * .eh_frame ends the walk instead of crashing.
 *
 * Supported: the CFA rules GCC and Clang emit (def_cfa*, offset*, val_offset*,
 * register, restore*, remember/restore_state, same_value, undefined,
 * advance_loc*, set_loc, GNU_args_size, nop). A CFA or return address given
 * by a DWARF expression (PLT entries) ends the walk as "incomplete".
 */
#include <string.h>

#include "unwind_internal.h"

#define MAX_STATES 8      /* DW_CFA_remember_state nesting */
#define MAX_CFI_STEPS 4096 /* instructions interpreted per frame */

/* ---- DWARF encodings ------------------------------------------------------ */

static uint64_t c_fixed(struct cur *c, size_t n)
{
    uint64_t v = 0;
    if (c->bad || c->p + n > c->end || hp_unwind_read_mem(c->u, c->p, &v, n)) {
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
uintptr_t hp_cfi_ptr(struct cur *c, uint8_t enc, int abs_only)
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

/* Reads an entry's length; sets *body to after it. 0 = terminator/bad. */
uint64_t hp_cfi_entry_len(struct hp_unwind *u, uintptr_t at, uintptr_t *body)
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
    uint64_t len = hp_cfi_entry_len(u, at, &body);
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
                hp_cfi_ptr(&c, (uint8_t)c_fixed(&c, 1) & 0x7f, 0); /* value unused */
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

int hp_cfi_parse_fde(struct hp_unwind *u, uintptr_t at, struct fde *f)
{
    uintptr_t body;
    uint64_t len = hp_cfi_entry_len(u, at, &body);
    if (!len)
        return -1;
    struct cur c = {u, body, body + len, 0};
    uint32_t cie_off = (uint32_t)c_fixed(&c, 4);
    if (c.bad || cie_off == 0 || parse_cie(u, body - cie_off, &f->cie))
        return -1;
    f->pc_lo = hp_cfi_ptr(&c, f->cie.fde_enc, 0);
    f->pc_hi = f->pc_lo + hp_cfi_ptr(&c, f->cie.fde_enc & 0x0f, 1);
    if (f->cie.has_aug)
        c.p += c_uleb(&c);
    f->insn = c.p;
    f->insn_end = body + len;
    return c.bad || f->insn > f->insn_end ? -1 : 0;
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
        case 0x01: loc = hp_cfi_ptr(&c, ci->fde_enc, 0); if (loc > pc) return 0; break;
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
int hp_cfi_step(struct hp_unwind *u, const struct fde *f, uintptr_t pc, uint64_t *regs,
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
            if (hp_unwind_read_stack(u, cfa + (uint64_t)r->off, &out[i])) {
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
