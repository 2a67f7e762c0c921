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
 *   patch.c     apply / revert / list, the patch stack, text writes
 *   listener.c  constructor, control socket, protocol
 */
#ifndef HP_INTERNAL_H
#define HP_INTERNAL_H

#include <elf.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "hp_format.h"
#include "hp_protocol.h"

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
    struct hp_func_rec *funcs;
    uint32_t nfuncs;
    struct hp_mask *masks;
    uint32_t nmasks;
};

int hp_patchobj_parse(struct hp_patchobj *po, const uint8_t *data, size_t size, char *err,
                      size_t errlen);
void hp_patchobj_free(struct hp_patchobj *po);
const char *hp_po_secname(const struct hp_patchobj *po, size_t shndx);
const char *hp_po_symname(const struct hp_patchobj *po, size_t symidx);
/* Index of the defined (st_shndx a real section) symbol `name`, or -1. */
long hp_po_find_defined(const struct hp_patchobj *po, const char *name);
/* Does this section get loaded (SHF_ALLOC, non-empty or not)? */
int hp_po_loaded(const struct hp_patchobj *po, size_t shndx);
/* Reads relocation `i` of RELA section `shndx` (bounds already checked). */
void hp_po_rela(const struct hp_patchobj *po, size_t shndx, size_t i, Elf64_Rela *out);

/* ---- exesyms.c ---------------------------------------------------------- */
struct hp_exe {
    const uint8_t *map;
    size_t map_size;
    size_t symoff, nsyms, first_global;
    const char *strtab;
    size_t strtab_size;
    uintptr_t bias;      /* load bias of the main program */
    uintptr_t lo, hi;    /* page-aligned runtime range of its PT_LOAD segments */
};

struct hp_symref {
    uintptr_t addr; /* runtime address; for STT_TLS the offset in the TLS block */
    uint64_t size;
    unsigned char type, bind;
};

/* The executable's symbols, loaded once and cached. */
int hp_exe_get(const struct hp_exe **out, char *err, size_t errlen);
/* Looks up a defined symbol. file == NULL or "" → global (version suffix
 * "@..." ignored); otherwise the local `name` after STT_FILE `file`.
 * funcs_only restricts to STT_FUNC / STT_GNU_IFUNC. Returns the number of
 * matches (fills at most `max` entries). */
int hp_exe_lookup(const struct hp_exe *exe, const char *file, const char *name, int funcs_only,
                  struct hp_symref *out, int max);
/* Bytes from addr to the next symbol of the executable (or the end of its
 * image): how far a redirect may extend past a tiny function into the
 * alignment padding that follows it. */
uint64_t hp_exe_room(const struct hp_exe *exe, uintptr_t addr);

/* ---- region.c ----------------------------------------------------------- */
struct hp_region {
    uint8_t *base;
    size_t size;
};
/* Maps `size` bytes read+write, anonymous, placed so that every byte is
 * within ±2 GiB (minus a margin) of every byte of [lo, hi), and ends at or
 * below `limit` (0: no limit; patch code with absolute 32-bit relocations to
 * its own data needs the region below 2 GiB). */
int hp_region_map(uintptr_t lo, uintptr_t hi, size_t size, uintptr_t limit,
                  struct hp_region *out, char *err, size_t errlen);

/* ---- tls.c ------------------------------------------------------------- */
/* TP offset of the start of the executable's TLS block (negative: variant
 * II); a thread-local with st_value v lives at TP + offset + v. */
int hp_tls_block_offset(int64_t *out, char *err, size_t errlen);

/* ---- link.c ------------------------------------------------------------- */
struct hp_linked {
    struct hp_region region;
    uintptr_t *sec_addr; /* per section: runtime address, 0 if not loaded */
    uintptr_t *sym_addr; /* per symbol: runtime address (valid if resolved) */
    size_t nstubs, nslots;
};
/* Lays out, maps, relocates and protects the patch. On failure nothing stays
 * mapped. */
int hp_link(const struct hp_patchobj *po, const struct hp_exe *exe, struct hp_linked *out,
            char *err, size_t errlen);
void hp_link_free_tables(struct hp_linked *l); /* frees tables, keeps mapping */
void hp_link_unmap(struct hp_linked *l);

/* ---- stop.c ------------------------------------------------------------- */
/* One stopped thread. `rip`/`rsp`/`rbp` come from the signal's ucontext;
 * a full stack walk (for the consistency check) will add a backtrace here. */
struct hp_thread {
    pid_t tid;
    uint64_t rip, rsp, rbp;
};
struct hp_stopset {
    struct hp_thread *threads; /* valid while stopped */
    size_t n;
    void *priv;
};
void hp_stop_init(void);
void hp_stop_set_listener(pid_t tid);
void hp_stop_after_fork(void);
int hp_stop_all(struct hp_stopset *set, char *err, size_t errlen);
void hp_resume_all(struct hp_stopset *set);
int hp_stop_signal(void);

/* ---- patch.c ------------------------------------------------------------ */
/* Bytes of one function that a patch operation rewrites. */
struct hp_site {
    const char *name, *file;
    uintptr_t func_lo, func_hi; /* the whole function */
    uintptr_t lo, hi;           /* the bytes to be rewritten */
};
/* The safety check run with all other threads stopped. Today: no thread may
 * be inside [lo+1, hi) of any site (a thread exactly at lo is fine: it will
 * execute the new instruction). A full stack check will extend this without
 * changing the signature. Returns 0 if safe, else -1 and a reason. */
int hp_check_threads(const struct hp_thread *t, size_t nt, const struct hp_site *s, size_t ns,
                     char *err, size_t errlen);
int hp_apply_mem_locked(const void *data, size_t size, char *msg, size_t msglen);
int hp_revert_locked(char *msg, size_t msglen);
int hp_list_locked(char *buf, size_t len);
void hp_lock(void);
void hp_unlock(void);
void hp_patch_after_fork(void);
void hp_membarrier_init(void);

/* ---- listener.c --------------------------------------------------------- */
void hp_listener_start(void);

#endif
