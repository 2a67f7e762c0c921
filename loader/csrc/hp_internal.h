/*
 * Internal interfaces of the loader. Everything here has hidden visibility
 * (the archive is compiled with -fvisibility=hidden); only the functions in
 * hotpatch.h are exported (HP_API).
 *
 * Module map:
 *   log.c       logging (file or stderr, never stdout)
 *   patchobj.c  bounds-checked reader for the patch object and .hotpatch.meta
 *   exesyms.c   the running executable's .symtab, load bias, image range
 *   region.c    finding and mapping memory within ±2 GiB of the executable
 *   tls.c       TP offsets of the executable's thread-local variables
 *   link.c      laying out sections, resolving symbols, relocations, stubs
 *   stop.c      stopping / resuming all other threads with a signal
 *   unwind.c    DWARF CFI stack walks of the stopped threads: safe reads,
 *               frames without CFI, the walk (overview; unwind_internal.h)
 *   cfi.c       CIE/FDE parsing, CFA program evaluation
 *   ehframe_index.c  loaded objects' eh_frame_hdr tables, patch FDE tables,
 *               the maps snapshot (hp_unwind_prepare), FDE lookup
 *   patch.c     the patch stack, locking, list, the C API (overview;
 *               patch_internal.h)
 *   apply.c     finding and verifying the replaced functions, apply
 *   revert.c    revert
 *   switch.c    THE SWITCH PROTOCOL: stop, check, write, undo, resume
 *   client.c    the conversation with hpctl: its stop, its call sites
 *   sites.c     checking call sites and turning them into spans
 *   busy.c      the stack check policy and its messages
 *   listener.c  constructor, control socket, protocol
 *   persist.c   start-up re-apply from the build's patch directory
 *   signing.c   the trusted key (read at start-up) and the signature check
 *   ed25519.c   Ed25519 verification (with sha512.c)
 */
#ifndef HP_INTERNAL_H
#define HP_INTERNAL_H

#include <elf.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "hp_format.h"
#include "hp_protocol.h"
#include "hp_signature.h"

#define HP_API __attribute__((visibility("default")))
#define HP_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* ---- log.c ------------------------------------------------------------ */
void hp_log_init(void);
void hp_log(const char *fmt, ...) HP_PRINTF(1, 2);
/* Formats a one-line message into err (if non-NULL) and returns -1. */
int hp_fail(char *err, size_t errlen, const char *fmt, ...) HP_PRINTF(3, 4);

/* ---- patchobj.c --------------------------------------------------------- */
struct hp_mask {
    uint32_t off, len;
};

struct hp_func_rec {
    const char *name;    /* symbol in the running program */
    const char *file;    /* STT_FILE name, "" for a global */
    const char *new_sym; /* defined symbol in the patch */
    uint32_t new_idx;    /* its index in the symbol table (found by the parser) */
    uint32_t redirect;   /* HP_REDIRECT_* */
    uint32_t flags;      /* HP_FUNC_F_* */
    uint64_t old_size;
    uint64_t fingerprint;
    const struct hp_mask *masks;
    uint32_t nmasks;
};

/* A parsed patch object. All pointers point into `data` (which the caller
 * keeps alive) or into arrays owned by this struct; every index and offset
 * has been bounds-checked by hp_patchobj_parse. */
struct hp_patchobj {
    const uint8_t *data;
    size_t size;
    Elf64_Shdr *sh; /* copied, so unaligned input is fine */
    size_t nsh;
    const char *shstr;
    size_t shstr_size;
    size_t symtab_idx;
    Elf64_Sym *syms; /* copied */
    size_t nsyms;
    const char *strtab;
    size_t strtab_size;
    const char *patch_id;
    const char *base_id;
    const char *target;  /* the shared library it is for; "": the executable */
    const char *targets[HP_MAX_TARGETS]; /* every output it is for (HP_HDR_F_TARGETS; */
    uint32_t ntargets;   /* else one: target) */
    struct hp_func_rec *funcs;
    uint32_t nfuncs;
    struct hp_mask *masks;
    uint32_t nmasks;
    uint32_t *by_name;  /* hash of defined symbols by name: index, 0 empty */
    size_t by_name_mask; /* slots - 1 (a power of two minus one) */
    uint64_t meta_off;   /* file offset of .hotpatch.meta's contents */
    const uint8_t *sig;  /* .hotpatch.sig's HP_SIG_SIZE bytes (structure checked); NULL: unsigned */
    uint64_t sig_off;    /* its file offset */
};

int hp_patchobj_parse(struct hp_patchobj *po, const uint8_t *data, size_t size, char *err,
                      size_t errlen);
void hp_patchobj_free(struct hp_patchobj *po);
const char *hp_po_secname(const struct hp_patchobj *po, size_t shndx);
const char *hp_po_symname(const struct hp_patchobj *po, size_t symidx);
/* Index of the first defined (st_shndx a real section, not STT_SECTION)
 * symbol `name`, or -1 (a hash lookup: the parser indexes them once). */
long hp_po_find_defined(const struct hp_patchobj *po, const char *name);
/* Does this section get loaded (SHF_ALLOC, non-empty or not)? */
int hp_po_loaded(const struct hp_patchobj *po, size_t shndx);
/* Reads relocation `i` of RELA section `shndx` (bounds already checked). */
void hp_po_rela(const struct hp_patchobj *po, size_t shndx, size_t i, Elf64_Rela *out);

/* ---- exesyms.c ---------------------------------------------------------- */
struct hp_exe {
    const char *name;    /* "" for the executable, else the library's as asked */
    const uint8_t *map;
    size_t map_size;
    size_t symoff, nsyms, first_global;
    const char *strtab;
    size_t strtab_size;
    uintptr_t bias;      /* load bias of the main program */
    uintptr_t lo, hi;    /* page-aligned runtime range of its PT_LOAD segments */
    struct hp_exe_index *index; /* hash tables and sorted addresses (exesyms.c) */
};

struct hp_symref {
    uintptr_t addr; /* runtime address; for STT_TLS the offset in the TLS block */
    uint64_t size;
    unsigned char type, bind;
};

/* The executable's symbols, loaded once and cached. */
int hp_exe_get(const struct hp_exe **out, char *err, size_t errlen);
/* The object a patch is for: the executable (target "" or NULL), or the
 * loaded shared library named `target` (its path, file name or soname),
 * whose .symtab is read from the file it was loaded from. Same interface
 * as the executable's: struct hp_exe. Returns 0; 1 when no such library is
 * loaded, -1 on any other error (err says which). */
int hp_target_get(const char *target, const struct hp_exe **out, char *err, size_t errlen);
/* Looks up a defined symbol. file == NULL or "" → global (version suffix
 * "@..." ignored); otherwise the local `name` after STT_FILE `file`.
 * funcs_only restricts to STT_FUNC / STT_GNU_IFUNC. Returns the number of
 * matches (fills at most `max` entries). */
int hp_exe_lookup(const struct hp_exe *exe, const char *file, const char *name, int funcs_only,
                  struct hp_symref *out, int max);
/* Looks up a symbol the applied patches define in `exe` (the functions and
 * data a patch added to that object; a patch for several objects added a
 * copy to each), oldest patch first: the fallback after hp_exe_lookup for a
 * patch built on top of others (patchdefs.c; caller holds hp_lock). */
int hp_patch_lookup(const struct hp_exe *exe, const char *file, const char *name, int funcs_only,
                    struct hp_symref *out);
/* Bytes from addr to the next symbol of the executable (or the end of its
 * image): how far a redirect may extend past a tiny function into the
 * alignment padding that follows it. */
uint64_t hp_exe_room(const struct hp_exe *exe, uintptr_t addr);
/* What one apply's preparation cost, for its log line: apply calls
 * hp_exe_get once, after parsing the patch, which starts the clock. */
struct hp_exe_stats {
    long long start_us;    /* hp_exe_now_us() at the hp_exe_get call */
    long long load_us;     /* loading the symbols, if that call did it; else 0 */
    unsigned long lookups; /* hp_exe_lookup calls since */
};
const struct hp_exe_stats *hp_exe_stats(void);
long long hp_exe_now_us(void); /* CLOCK_MONOTONIC */

/* ---- region.c ----------------------------------------------------------- */
struct hp_region {
    uint8_t *base;
    size_t size;
};
/* Maps `size` bytes with protection `prot`, anonymous, placed so that
 * every byte is within ±2 GiB (minus a margin) of every byte of [lo, hi),
 * and ends at or below `limit` (0: no limit; patch code with absolute
 * 32-bit relocations to its own data needs the region below 2 GiB). */
int hp_region_map(uintptr_t lo, uintptr_t hi, size_t size, uintptr_t limit, int prot,
                  struct hp_region *out, char *err, size_t errlen);
/* Is all of [a, b) within rel32 reach (minus the margin) of all of [lo, hi)? */
int hp_region_reaches(uintptr_t lo, uintptr_t hi, uintptr_t a, uintptr_t b);

/* ---- arena.c: patch memory shared by all patches ------------------------- */
struct hp_block {
    uintptr_t at;
    size_t size; /* 0: no block */
    int exec;    /* text (read+exec, written through /proc/self/mem) or data */
};
/* A block of `size` bytes aligned to `align` within reach of [lo, hi) (and
 * below `limit` when non-zero). size 0 gives an empty block. */
int hp_arena_alloc(uintptr_t lo, uintptr_t hi, size_t size, size_t align, int exec,
                   uintptr_t limit, struct hp_block *out, char *err, size_t errlen);
/* Frees a block (no thread may run in it any more); whole free pages go
 * back to the kernel. Clears *b. */
void hp_arena_free(struct hp_block *b);
/* Fills the start of a block (text through /proc/self/mem). */
int hp_arena_write(const struct hp_block *b, const void *src, size_t len, char *err,
                   size_t errlen);
/* How many chunks are mapped (for the log). */
size_t hp_arena_chunks(void);

/* ---- tls.c ------------------------------------------------------------- */
/* TP offset of the start of the executable's TLS block (negative: variant
 * II); a thread-local with st_value v lives at TP + offset + v. */
int hp_tls_block_offset(int64_t *out, char *err, size_t errlen);
/* The TLS module id of the shared library loaded at `bias` (named `name`
 * in messages), for general/local-dynamic access through __tls_get_addr. */
int hp_tls_library_modid(uintptr_t bias, const char *name, size_t *modid, char *err,
                         size_t errlen);

/* ---- link.c ------------------------------------------------------------- */
struct hp_linked {
    struct hp_block text;  /* code, stubs, read-only data, slots, .eh_frame */
    struct hp_block data;  /* writable data and bss */
    uint8_t *stage[2];     /* while linking: the text and data being built */
    uintptr_t *sec_addr; /* per section: runtime address, 0 if not loaded */
    uintptr_t *sym_addr; /* per symbol: runtime address (valid if resolved) */
    size_t nstubs, nslots;
};
/* Lays out, places (arena.c), relocates and writes the patch. On failure
 * nothing stays allocated. */
int hp_link(const struct hp_patchobj *po, const struct hp_exe *exe, struct hp_linked *out,
            char *err, size_t errlen);
void hp_link_free_tables(struct hp_linked *l); /* frees tables, keeps the blocks */
void hp_link_unmap(struct hp_linked *l);       /* frees the blocks */

/* ---- registers ------------------------------------------------------------ */
/* A thread's registers in DWARF x86-64 numbering: 0 rax, 1 rdx, 2 rcx, 3 rbx,
 * 4 rsi, 5 rdi, 6 rbp, 7 rsp, 8-15 r8-r15, 16 the return address column
 * (holds RIP). */
#define HP_NREGS 17
#define HP_REG_RA 16
/* Fills regs from a ucontext's gregs (REG_* order); async-signal-safe. */
static inline void hp_regs_from_gregs(uint64_t *regs, const void *gregs)
{
    /* REG_R8=0..REG_R15=7, RDI 8, RSI 9, RBP 10, RBX 11, RDX 12, RAX 13,
     * RCX 14, RSP 15, RIP 16 (sys/ucontext.h) */
    static const unsigned char from[HP_NREGS] = {13, 12, 14, 11, 9, 8, 10, 15, 0,
                                                 1,  2,  3,  4,  5, 6, 7,  16};
    const uint64_t *g = gregs;
    for (int i = 0; i < HP_NREGS; i++)
        regs[i] = g[from[i]];
}

/* ---- stop.c ------------------------------------------------------------- */
/* One stopped thread: its registers from the signal's ucontext (the stack
 * walk starts from them). */
struct hp_thread {
    pid_t tid;
    uint64_t rip, rsp, rbp;
    uint64_t regs[HP_NREGS];
};
struct hp_stopset {
    struct hp_thread *threads; /* valid while stopped */
    size_t n;
    void *priv;
};
void hp_stop_init(void);
void hp_stop_set_listener(pid_t tid);
pid_t hp_stop_listener(void);
void hp_stop_after_fork(void);
/* Threads in /proc/self/task now (getdents64, no malloc). */
size_t hp_count_tasks(void);
int hp_stop_all(struct hp_stopset *set, char *err, size_t errlen);
void hp_resume_all(struct hp_stopset *set);
int hp_stop_signal(void);

/* ---- unwind.c, cfi.c, ehframe_index.c ---------------------------------- */
/* Code the dynamic loader does not know about: an applied patch's region and
 * its .eh_frame (0 if the patch has none). */
struct hp_code_info {
    uintptr_t lo, hi;
    uintptr_t eh_frame;
    size_t eh_size;
    const char *name;
};
struct hp_unwind;
/* Before stopping threads (locks, malloc): loaded objects and their
 * eh_frame_hdr tables, the patches' FDE tables, a /proc/self/maps snapshot. */
int hp_unwind_prepare(struct hp_unwind **out, const struct hp_code_info *extra, size_t nextra,
                      char *err, size_t errlen);
void hp_unwind_free(struct hp_unwind *u);
/* Called per frame, innermost first, with the pc to look up (an interrupted
 * pc, or a return address minus 1). Non-zero stops the walk. */
typedef int (*hp_frame_cb)(void *arg, uintptr_t pc, unsigned depth);
enum {
    HP_WALK_DONE,       /* reached the outermost frame */
    HP_WALK_GUESSED,    /* reached it, partly by the frame-pointer chain */
    HP_WALK_INCOMPLETE, /* could not go on: reason in why */
    HP_WALK_STOPPED,    /* the callback stopped it */
};
/* While stopped (no malloc, no locks): walks the stack from regs. Every
 * memory read is checked; depth is bounded. */
int hp_unwind_walk(struct hp_unwind *u, const uint64_t *regs, hp_frame_cb cb, void *arg,
                   char *why, size_t whylen);

/* ---- patch.c, apply.c, revert.c, switch.c, client.c, busy.c ------------ */
struct hp_client; /* the connected hpctl, when it can help (patch_internal.h) */
/* How an apply or revert switches (protocol.rs: CONSISTENT <ms> | LAZY,
 * CALLSITES, CLIENTSTOP). */
struct hp_opts {
    int consistent;           /* wait until no thread runs the affected code */
    unsigned timeout_ms;      /* for that wait */
    int call_sites;           /* also rewrite direct calls (apply) */
    struct hp_client *client; /* NULL (the C API): no questions, signal stop */
};
/* msg: the one-line result; details (may be NULL): extra lines for the reply
 * ("thread N is running old f(); ..."), NUL-terminated. */
int hp_apply_mem_locked(const void *data, size_t size, const struct hp_opts *o, char *msg,
                        size_t msglen, char *details, size_t detlen);
int hp_revert_locked(const struct hp_opts *o, char *msg, size_t msglen, char *details,
                     size_t detlen);
int hp_list_locked(char *buf, size_t len);
void hp_lock(void);
void hp_unlock(void);
void hp_patch_after_fork(void);
void hp_membarrier_init(void);
/* shadow.c: after fork, every shadow-table lock is free in the child. */
void hp_shadow_after_fork(void);

/* ---- client.c: socket helpers shared with listener.c ------------------- */
long long hp_now_ms(void); /* CLOCK_MONOTONIC */
/* Sends all of s (MSG_NOSIGNAL, EINTR retried); -1 if the peer is gone.
 * No malloc or stdio: usable while threads are stopped. */
int hp_send_all(int fd, const char *s, size_t len);

/* ---- listener.c --------------------------------------------------------- */
void hp_listener_start(void);

/* ---- persist.c ---------------------------------------------------------- */
/* From the constructor, before main and the listener: applies every patch
 * of this build's patch directory in order, stopping at the first that
 * fails; every outcome is logged. */
void hp_persist_reapply(void);
/* ROOT of the patch directories ($HOTPATCH_DIR, else by uid; the rule of
 * hpctl's persist.rs) into out; -1 when there is none. */
int hp_persist_root(char *out, size_t len);

/* ---- signing.c ---------------------------------------------------------- */
/* From the constructor, first (the C API applies patches too, even with
 * HOTPATCH_DISABLE): reads the trusted key once and logs what it found. */
void hp_sig_init(void);
/* The policy, right after a patch is parsed: 0 when no key is configured or
 * the patch's signature verifies with it; else -1 naming the patch and why
 * (not signed, signed by another key, changed since, the key unusable). */
int hp_sig_check(const struct hp_patchobj *po, char *err, size_t errlen);

#endif
