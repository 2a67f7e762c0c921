/*
 * Internal interfaces shared by unwind.c, cfi.c and ehframe_index.c (the
 * overview and the file map are in unwind.c). The rest of the loader sees
 * only hp_internal.h's unwind section.
 */
#ifndef HP_UNWIND_INTERNAL_H
#define HP_UNWIND_INTERNAL_H

#include "hp_internal.h"

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

/* Reads are cached a page at a time: the eh_frame_hdr binary searches and
 * CIE/FDE parsing touch the same few pages of each library for every
 * frame, and one process_vm_readv costs about as much for 4 KiB as for 8
 * bytes (measured: 256-byte blocks, 8 of them, made the walk ~12 us per
 * frame; pages kept for the whole stop make it a fraction of that). */
#define NBLOCKS 64
#define BLOCK 4096 /* the page size: a block never straddles pages */

struct hp_unwind {
    struct obj *objs;
    size_t nobjs, capobjs;
    struct map *maps;
    size_t nmaps;
    int vm_ok; /* process_vm_readv works on ourselves */
    pid_t pid;
    /* read cache, valid for one stop (memory changes between stops; u is
     * prepared afresh for each) */
    uintptr_t blk_addr[NBLOCKS];
    int blk_valid[NBLOCKS];
    uint8_t blk[NBLOCKS][BLOCK];
    /* stack bounds of the walk in progress */
    uintptr_t stk_lo, stk_hi;
};

/* ---- unwind.c: safe memory reads ----------------------------------------- */

/* Copies n bytes at addr; -1 if any of them is not readable. */
int hp_unwind_read_mem(struct hp_unwind *u, uintptr_t addr, void *out, size_t n);
/* A stack slot: 8 bytes inside the current thread's stack mapping. */
int hp_unwind_read_stack(struct hp_unwind *u, uintptr_t a, uint64_t *v);

/* ---- cfi.c --------------------------------------------------------------- */

/* A cursor over CFI bytes [p, end), every byte read through hp_unwind_read_mem. */
struct cur {
    struct hp_unwind *u;
    uintptr_t p, end;
    int bad;
};

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

/* DW_EH_PE_* pointer; `abs_only` for pc_range (value without the base). */
uintptr_t hp_cfi_ptr(struct cur *c, uint8_t enc, int abs_only);
/* Reads an entry's length; sets *body to after it. 0 = terminator/bad. */
uint64_t hp_cfi_entry_len(struct hp_unwind *u, uintptr_t at, uintptr_t *body);
/* Parses the FDE at `at` and its CIE: 0, or -1 if unreadable/unsupported. */
int hp_cfi_parse_fde(struct hp_unwind *u, uintptr_t at, struct fde *f);
/* One CFI step: regs → caller's regs. 1 = outermost frame, 0 = stepped,
 * -1 = cannot (reason in *why). */
int hp_cfi_step(struct hp_unwind *u, const struct fde *f, uintptr_t pc, uint64_t *regs,
                unsigned *valid, const char **why);

/* ---- ehframe_index.c: FDE lookup ----------------------------------------- */

/* The object (or patch) whose code contains pc, or NULL. */
const struct obj *hp_ehframe_find_obj(const struct hp_unwind *u, uintptr_t pc);
/* Finds the FDE covering pc: 0 found, -1 none. */
int hp_ehframe_find_fde(struct hp_unwind *u, const struct obj *o, uintptr_t pc, struct fde *f);

#endif
