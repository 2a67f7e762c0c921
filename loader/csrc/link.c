/*
 * Linking a patch object into the running process.
 *
 * Layout: two blocks from the arena (arena.c), packed next to other
 * patches' blocks:
 *
 *   text [ code sections | stubs | rodata sections | slots ]  R+X
 *        stubs: `jmp *slot(%rip)` for far calls; slots: 8-byte addresses (GOT)
 *   data [ data | bss ]                                       R+W
 *
 * Both are built in staging buffers at their final addresses, then written
 * out (text through /proc/self/mem): no page is ever writable and
 * executable.
 *
 * Symbols: defined ones resolve into the region; an undefined `FILE::NAME`
 * is the static NAME of FILE in the executable; any other undefined name is a
 * global of the executable, else a shared-library symbol (dlsym). Either
 * kind may also be one an applied patch added (patchdefs.c), for a patch
 * built on top of it. Shared
 * libraries are usually more than 2 GiB away, so rel32 calls to them go
 * through a stub and GOT-relative loads through a slot we allocate here.
 *
 * Relocation support lives in reloc_field_size() and apply_one().
 *
 * Thread-locals of the executable (tls.c computes their TP offsets):
 * R_X86_64_TPOFF32 (local-exec) gets the TP offset itself, R_X86_64_GOTTPOFF
 * (initial-exec) a slot holding it. Thread-locals of the shared library a
 * patch is for, reached as the library's -fPIC code does through
 * __tls_get_addr: R_X86_64_TLSGD gets a pair of slots (module id, offset),
 * R_X86_64_TLSLD a pair (module id, 0) and R_X86_64_DTPOFF32 the offset.
 * Any other combination is refused, and so is a thread-local of some other
 * shared library (the patch writer marks references to thread-locals
 * STT_TLS).
 *
 * Absolute 32-bit relocations (R_X86_64_32/32S, from code compiled without
 * -fPIE) to the patch's own code or data need the region below 2 GiB; the
 * executable is then non-PIE and low too, so the region is placed there.
 */

#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hp_internal.h"

#define STUB_SIZE 8

#ifndef R_X86_64_GOTPCRELX
#define R_X86_64_GOTPCRELX 41
#endif
#ifndef R_X86_64_REX_GOTPCRELX
#define R_X86_64_REX_GOTPCRELX 42
#endif

enum { SYM_UNRESOLVED, SYM_IN_PATCH, SYM_ADDR };

struct symres {
    uint8_t state;
    uint8_t is_func;
    uint8_t near;      /* known to be within reach of the region */
    uint8_t need_slot, need_stub;
    uint8_t is_tls, need_tls_slot; /* thread-local: addr is unused, tpoff holds */
    uint8_t tls_lib;               /* of the target library: modid and dtpoff hold */
    uint8_t need_gd, need_ld;      /* its (module, offset) / (module, 0) slot pairs */
    uint32_t slot, stub, tls_slot, gd_slot, ld_slot;
    uintptr_t addr;
    int64_t tpoff;   /* TP offset of a thread-local of the executable */
    uint64_t modid;  /* TLS module id of the target library */
    uint64_t dtpoff; /* offset of a library thread-local in its module's block */
};

static const char *rtype_name(unsigned t)
{
    static const char *const names[] = {
        [R_X86_64_NONE] = "R_X86_64_NONE",         [R_X86_64_64] = "R_X86_64_64",
        [R_X86_64_PC32] = "R_X86_64_PC32",         [R_X86_64_GOT32] = "R_X86_64_GOT32",
        [R_X86_64_PLT32] = "R_X86_64_PLT32",       [R_X86_64_COPY] = "R_X86_64_COPY",
        [R_X86_64_GLOB_DAT] = "R_X86_64_GLOB_DAT", [R_X86_64_JUMP_SLOT] = "R_X86_64_JUMP_SLOT",
        [R_X86_64_RELATIVE] = "R_X86_64_RELATIVE", [R_X86_64_GOTPCREL] = "R_X86_64_GOTPCREL",
        [R_X86_64_32] = "R_X86_64_32",             [R_X86_64_32S] = "R_X86_64_32S",
        [R_X86_64_16] = "R_X86_64_16",             [R_X86_64_PC16] = "R_X86_64_PC16",
        [R_X86_64_8] = "R_X86_64_8",               [R_X86_64_PC8] = "R_X86_64_PC8",
        [R_X86_64_DTPMOD64] = "R_X86_64_DTPMOD64", [R_X86_64_DTPOFF64] = "R_X86_64_DTPOFF64",
        [R_X86_64_TPOFF64] = "R_X86_64_TPOFF64",   [R_X86_64_TLSGD] = "R_X86_64_TLSGD",
        [R_X86_64_TLSLD] = "R_X86_64_TLSLD",       [R_X86_64_DTPOFF32] = "R_X86_64_DTPOFF32",
        [R_X86_64_GOTTPOFF] = "R_X86_64_GOTTPOFF", [R_X86_64_TPOFF32] = "R_X86_64_TPOFF32",
        [R_X86_64_PC64] = "R_X86_64_PC64",         [R_X86_64_GOTOFF64] = "R_X86_64_GOTOFF64",
        [R_X86_64_GOTPC32] = "R_X86_64_GOTPC32",   [R_X86_64_SIZE32] = "R_X86_64_SIZE32",
        [R_X86_64_SIZE64] = "R_X86_64_SIZE64",
        [R_X86_64_GOTPC32_TLSDESC] = "R_X86_64_GOTPC32_TLSDESC",
        [R_X86_64_TLSDESC_CALL] = "R_X86_64_TLSDESC_CALL",
        [R_X86_64_GOTPCRELX] = "R_X86_64_GOTPCRELX",
        [R_X86_64_REX_GOTPCRELX] = "R_X86_64_REX_GOTPCRELX",
    };
    if (t < sizeof names / sizeof names[0] && names[t])
        return names[t];
    return "unknown";
}

static int is_tls_type(unsigned t)
{
    switch (t) {
    case R_X86_64_DTPMOD64: case R_X86_64_DTPOFF64: case R_X86_64_TPOFF64:
    case R_X86_64_TLSGD: case R_X86_64_TLSLD: case R_X86_64_DTPOFF32:
    case R_X86_64_GOTTPOFF: case R_X86_64_TPOFF32: case R_X86_64_GOTPC32_TLSDESC:
    case R_X86_64_TLSDESC_CALL:
        return 1;
    }
    return 0;
}

/* Width of the relocated field, 0 = unsupported. */
static unsigned reloc_field_size(unsigned t)
{
    switch (t) {
    case R_X86_64_64: case R_X86_64_PC64:
        return 8;
    case R_X86_64_PC32: case R_X86_64_PLT32: case R_X86_64_32: case R_X86_64_32S:
    case R_X86_64_GOTPCREL: case R_X86_64_GOTPCRELX: case R_X86_64_REX_GOTPCRELX:
    case R_X86_64_GOTTPOFF: case R_X86_64_TPOFF32:
    case R_X86_64_TLSGD: case R_X86_64_TLSLD: case R_X86_64_DTPOFF32:
        return 4;
    }
    return 0;
}

/* Why an unsupported relocation type is refused, for the message. */
static const char *unsupported_why(unsigned t)
{
    switch (t) {
    case R_X86_64_DTPOFF64:
    case R_X86_64_GOTPC32_TLSDESC: case R_X86_64_TLSDESC_CALL:
        return ": TLS descriptors (-mtls-dialect=gnu2) and 64-bit module offsets are not "
               "supported; build with the default dialect";
    }
    return is_tls_type(t) ? ": this thread-local relocation is not supported" : "";
}

static int is_got_type(unsigned t)
{
    return t == R_X86_64_GOTPCREL || t == R_X86_64_GOTPCRELX || t == R_X86_64_REX_GOTPCRELX;
}

/* Resolves an undefined symbol of the patch against the running program. */
static int resolve_undef(const struct hp_patchobj *po, const struct hp_exe *exe, size_t i,
                         struct symres *r, char *err, size_t errlen)
{
    const Elf64_Sym *s = &po->syms[i];
    const char *full = hp_po_symname(po, i);
    char file[512], name[512];
    const char *sep = NULL;
    for (const char *p = strstr(full, HP_LOCAL_SEP); p; p = strstr(p + 1, HP_LOCAL_SEP))
        sep = p; /* split at the LAST separator */
    struct hp_symref refs[4];
    int n;
    if (sep) {
        const char *tail = sep + strlen(HP_LOCAL_SEP);
        size_t flen = (size_t)(sep - full), nlen = strlen(tail);
        if (flen >= sizeof file || nlen >= sizeof name)
            return hp_fail(err, errlen, "symbol name %.80s... is too long", full);
        memcpy(file, full, flen);
        file[flen] = 0;
        memcpy(name, tail, nlen + 1);
        n = hp_exe_lookup(exe, file, name, 0, refs, 4);
        if (n == 0) /* added by an applied patch this one was built on? */
            n = hp_patch_lookup(exe, file, name, 0, refs);
        if (n == 0)
            return hp_fail(err, errlen,
                           "static symbol %s of %s (needed by the patch) is not in the running "
                           "program's symbol table, and no applied patch added it",
                           name, file);
    } else {
        n = hp_exe_lookup(exe, NULL, full, 0, refs, 4);
        if (n == 0)
            n = hp_patch_lookup(exe, NULL, full, 0, refs);
    }
    if (n == 1 && refs[0].type == STT_TLS && *exe->name) {
        size_t modid;
        if (hp_tls_library_modid(exe->bias, exe->name, &modid, err, errlen))
            return -1;
        r->is_tls = r->tls_lib = 1;
        r->modid = modid;
        r->dtpoff = refs[0].addr;
        r->state = SYM_ADDR;
        return 0;
    }
    if (n == 1 && refs[0].type == STT_TLS) {
        int64_t block;
        if (hp_tls_block_offset(&block, err, errlen))
            return -1;
        r->is_tls = 1;
        r->tpoff = block + (int64_t)refs[0].addr;
        r->state = SYM_ADDR;
        return 0;
    }
    if (n == 0 && ELF64_ST_TYPE(s->st_info) == STT_TLS) {
        /* Only the executable's block has a TP offset we know (tls.c); a
         * shared library's thread-local would need its module's offset. */
        snprintf(name, sizeof name, "%s", full);
        char *ver = strchr(name, '@');
        if (ver)
            *ver = 0;
        dlerror();
        if (!dlsym(RTLD_DEFAULT, name) && dlerror())
            return hp_fail(err, errlen,
                           "thread-local %s (needed by the patch) is not defined in the "
                           "executable or its shared libraries",
                           full);
        return hp_fail(err, errlen,
                       "thread-local %s is defined in a shared library, not in the executable: "
                       "thread-locals of shared libraries are not supported",
                       full);
    }
    if (n > 1)
        return hp_fail(err, errlen,
                       "symbol %s is ambiguous: %d definitions in the running program", full, n);
    if (n == 1) {
        r->addr = refs[0].addr;
        r->is_func = refs[0].type == STT_FUNC || refs[0].type == STT_GNU_IFUNC;
        if (refs[0].type == STT_GNU_IFUNC) {
            /* The symbol is a resolver; call it like the dynamic linker would. */
            uintptr_t (*resolver)(void) = (uintptr_t (*)(void))refs[0].addr;
            r->addr = resolver();
        }
        r->near = r->addr >= exe->lo && r->addr < exe->hi;
        r->state = SYM_ADDR;
        return 0;
    }
    /* Shared libraries. dlsym resolves IFUNCs itself. */
    snprintf(name, sizeof name, "%s", full);
    char *at = strchr(name, '@');
    if (at)
        *at = 0;
    dlerror();
    void *addr = dlsym(RTLD_DEFAULT, name);
    if (!addr && dlerror()) {
        if (ELF64_ST_BIND(s->st_info) == STB_WEAK) {
            r->addr = 0;
            r->state = SYM_ADDR;
            return 0;
        }
        return hp_fail(err, errlen,
                       "undefined symbol %s: not found in the executable or its shared libraries",
                       full);
    }
    Dl_info info;
    const ElfW(Sym) *esym = NULL;
    r->is_func = 1; /* unknown: assume code (a stub is harmless, a data PC32 fails later) */
    if (dladdr1(addr, &info, (void **)&esym, RTLD_DL_SYMENT) && esym) {
        unsigned t = ELF64_ST_TYPE(esym->st_info);
        r->is_func = t == STT_FUNC || t == STT_GNU_IFUNC;
    }
    r->addr = (uintptr_t)addr;
    r->near = r->addr >= exe->lo && r->addr < exe->hi;
    r->state = SYM_ADDR;
    return 0;
}

static int resolve(const struct hp_patchobj *po, const struct hp_exe *exe, size_t i,
                   struct symres *r, char *err, size_t errlen)
{
    if (r->state != SYM_UNRESOLVED)
        return 0;
    const Elf64_Sym *s = &po->syms[i];
    if (i == 0) {
        r->state = SYM_ADDR;
        r->addr = 0;
        return 0;
    }
    if (s->st_shndx == SHN_UNDEF)
        return resolve_undef(po, exe, i, r, err, errlen);
    if (s->st_shndx == SHN_ABS) {
        r->state = SYM_ADDR;
        r->addr = s->st_value;
        return 0;
    }
    if (!hp_po_loaded(po, s->st_shndx))
        return hp_fail(err, errlen, "symbol %s is defined in non-allocated section %s",
                       hp_po_symname(po, i), hp_po_secname(po, s->st_shndx));
    r->state = SYM_IN_PATCH;
    r->near = 1;
    r->is_func = ELF64_ST_TYPE(s->st_info) == STT_FUNC ||
                 (po->sh[s->st_shndx].sh_flags & SHF_EXECINSTR);
    return 0;
}

static int fits_s32(int64_t v)
{
    return v >= INT32_MIN && v <= INT32_MAX;
}

/* Stores a signed 32-bit field; -1 (nothing written) when v does not fit. */
static int put_s32(uint8_t *place, int64_t v)
{
    if (!fits_s32(v))
        return -1;
    uint32_t v32 = (uint32_t)(int32_t)v;
    memcpy(place, &v32, 4);
    return 0;
}

/* Exec-model access, as the executable's code makes it. */
static int is_tls_access(unsigned t)
{
    return t == R_X86_64_GOTTPOFF || t == R_X86_64_TPOFF32;
}

/* Dynamic-model access, as a shared library's -fPIC code makes it. */
static int is_tls_dynamic(unsigned t)
{
    return t == R_X86_64_TLSGD || t == R_X86_64_TLSLD || t == R_X86_64_DTPOFF32;
}

/* Where the bytes for runtime address `at` of this patch are staged. */
static uint8_t *staged(const struct hp_linked *l, uintptr_t at)
{
    if (at >= l->data.at && at < l->data.at + l->data.size)
        return l->stage[1] + (at - l->data.at);
    return l->stage[0] + (at - l->text.at);
}

static int apply_one(const struct hp_patchobj *po, struct hp_linked *l, struct symres *sr,
                     size_t rsec, const Elf64_Rela *r, uintptr_t stubs, uintptr_t slots,
                     char *err, size_t errlen)
{
    size_t tsec = po->sh[rsec].sh_info;
    unsigned type = ELF64_R_TYPE(r->r_info);
    size_t si = ELF64_R_SYM(r->r_info);
    const struct symres *s = &sr[si];
    uintptr_t S = l->sym_addr[si];
    int64_t A = r->r_addend;
    uintptr_t P = l->sec_addr[tsec] + r->r_offset;
    uint8_t *place = staged(l, P);
    const char *symname = hp_po_symname(po, si);
    int64_t v;
    uint32_t v32;
    uint64_t v64;

    switch (type) {
    case R_X86_64_64:
        v64 = S + (uint64_t)A;
        memcpy(place, &v64, 8);
        return 0;
    case R_X86_64_PC64:
        v64 = S + (uint64_t)A - P;
        memcpy(place, &v64, 8);
        return 0;
    case R_X86_64_32:
        v64 = S + (uint64_t)A;
        if (v64 > UINT32_MAX)
            goto overflow;
        v32 = (uint32_t)v64;
        memcpy(place, &v32, 4);
        return 0;
    case R_X86_64_32S:
        v = (int64_t)(S + (uint64_t)A);
        if (put_s32(place, v))
            goto overflow;
        return 0;
    case R_X86_64_PC32:
    case R_X86_64_PLT32: {
        uintptr_t target = S;
        if (s->need_stub && (type == R_X86_64_PLT32 || !fits_s32((int64_t)(S + A - P))))
            target = stubs + (uintptr_t)s->stub * STUB_SIZE;
        v = (int64_t)(target + (uint64_t)A - P);
        if (!fits_s32(v)) {
            if (!s->is_func)
                return hp_fail(err, errlen,
                               "%s reference to data symbol %s at %#lx is beyond ±2 GiB of the "
                               "patch (in %s+%#lx); access it through the GOT (build the patch "
                               "with -fPIC)",
                               rtype_name(type), symname, (unsigned long)S,
                               hp_po_secname(po, tsec), (unsigned long)r->r_offset);
            goto overflow;
        }
        v32 = (uint32_t)(int32_t)v;
        memcpy(place, &v32, 4);
        return 0;
    }
    case R_X86_64_TPOFF32:
        v = s->tpoff + A;
        if (put_s32(place, v))
            goto overflow;
        return 0;
    case R_X86_64_TLSGD:
    case R_X86_64_TLSLD: {
        uint32_t pair = type == R_X86_64_TLSGD ? s->gd_slot : s->ld_slot;
        v = (int64_t)(slots + (uintptr_t)pair * 8 + (uint64_t)A - P);
        if (put_s32(place, v))
            goto overflow;
        return 0;
    }
    case R_X86_64_DTPOFF32:
        v = (int64_t)s->dtpoff + A;
        if (put_s32(place, v))
            goto overflow;
        return 0;
    case R_X86_64_GOTTPOFF:
        v = (int64_t)(slots + (uintptr_t)s->tls_slot * 8 + (uint64_t)A - P);
        if (put_s32(place, v))
            goto overflow;
        return 0;
    case R_X86_64_GOTPCREL:
    case R_X86_64_GOTPCRELX:
    case R_X86_64_REX_GOTPCRELX:
        v = (int64_t)(slots + (uintptr_t)s->slot * 8 + (uint64_t)A - P);
        if (put_s32(place, v))
            goto overflow;
        return 0;
    }
    return hp_fail(err, errlen, "internal error: relocation type %u", type);
overflow:
    return hp_fail(err, errlen,
                   "relocation %s against %s in %s+%#lx overflows (target %#lx, place %#lx)",
                   rtype_name(type), symname, hp_po_secname(po, tsec),
                   (unsigned long)r->r_offset, (unsigned long)S, (unsigned long)P);
}

static size_t align_up(size_t v, size_t a)
{
    return a > 1 ? (v + a - 1) & ~(a - 1) : v;
}

static int is_applied_rela(const struct hp_patchobj *po, size_t i)
{
    return po->sh[i].sh_type == SHT_RELA && hp_po_loaded(po, po->sh[i].sh_info);
}

void hp_link_free_tables(struct hp_linked *l)
{
    free(l->sec_addr);
    free(l->sym_addr);
    l->sec_addr = l->sym_addr = NULL;
}

void hp_link_unmap(struct hp_linked *l)
{
    hp_arena_free(&l->text);
    hp_arena_free(&l->data);
}

int hp_link(const struct hp_patchobj *po, const struct hp_exe *exe, struct hp_linked *l,
            char *err, size_t errlen)
{
    long long t0 = hp_exe_now_us();
    memset(l, 0, sizeof *l);
    struct symres *sr = calloc(po->nsyms, sizeof *sr);
    l->sec_addr = calloc(po->nsh, sizeof *l->sec_addr);
    l->sym_addr = calloc(po->nsyms, sizeof *l->sym_addr);
    size_t *sec_off = calloc(po->nsh, sizeof *sec_off);
    uint8_t *stage[2] = {NULL, NULL};
    if (!sr || !l->sec_addr || !l->sym_addr || !sec_off) {
        hp_fail(err, errlen, "out of memory");
        goto fail;
    }

    /* Pass 1: check every relocation, resolve its symbol, count stubs/slots. */
    int low_region = 0;
    for (size_t i = 1; i < po->nsh; i++) {
        if (!is_applied_rela(po, i))
            continue;
        size_t tsec = po->sh[i].sh_info, n = po->sh[i].sh_size / sizeof(Elf64_Rela);
        for (size_t k = 0; k < n; k++) {
            Elf64_Rela r;
            hp_po_rela(po, i, k, &r);
            unsigned type = ELF64_R_TYPE(r.r_info);
            size_t si = ELF64_R_SYM(r.r_info);
            unsigned width = reloc_field_size(type);
            if (type == R_X86_64_NONE)
                continue;
            if (!width) {
                hp_fail(err, errlen,
                        "unsupported relocation %s (%u) against symbol %s in %s+%#lx%s",
                        rtype_name(type), type, hp_po_symname(po, si), hp_po_secname(po, tsec),
                        (unsigned long)r.r_offset, unsupported_why(type));
                goto fail;
            }
            if (r.r_offset + width > po->sh[tsec].sh_size) {
                hp_fail(err, errlen, "relocation at %s+%#lx runs past the section end",
                        hp_po_secname(po, tsec), (unsigned long)r.r_offset);
                goto fail;
            }
            if (resolve(po, exe, si, &sr[si], err, errlen))
                goto fail;
            struct symres *s = &sr[si];
            int tls_ref = is_tls_access(type) || is_tls_dynamic(type);
            if (tls_ref != s->is_tls) {
                hp_fail(err, errlen, "relocation %s against %s symbol %s in %s+%#lx",
                        rtype_name(type), s->is_tls ? "thread-local" : "non-thread-local",
                        hp_po_symname(po, si), hp_po_secname(po, tsec),
                        (unsigned long)r.r_offset);
                goto fail;
            }
            if (tls_ref && is_tls_dynamic(type) != s->tls_lib) {
                hp_fail(err, errlen,
                        "relocation %s against thread-local %s in %s+%#lx: %s",
                        rtype_name(type), hp_po_symname(po, si), hp_po_secname(po, tsec),
                        (unsigned long)r.r_offset,
                        s->tls_lib ? "a shared library's thread-local is reached through "
                                     "__tls_get_addr (build the patch -fPIC, like the library)"
                                   : "general/local-dynamic access comes from -fPIC code for "
                                     "shared objects; compile the patched files like the "
                                     "executable (-fPIE or -fno-pie)");
                goto fail;
            }
            if (type == R_X86_64_GOTTPOFF && !s->need_tls_slot) {
                s->need_tls_slot = 1;
                s->tls_slot = (uint32_t)l->nslots++;
            }
            if (type == R_X86_64_TLSGD && !s->need_gd) {
                s->need_gd = 1;
                s->gd_slot = (uint32_t)l->nslots;
                l->nslots += 2;
            }
            if (type == R_X86_64_TLSLD && !s->need_ld) {
                s->need_ld = 1;
                s->ld_slot = (uint32_t)l->nslots;
                l->nslots += 2;
            }
            if ((type == R_X86_64_32 || type == R_X86_64_32S) && s->state == SYM_IN_PATCH)
                low_region = 1;
            if (is_got_type(type) && !s->need_slot) {
                s->need_slot = 1;
                s->slot = (uint32_t)l->nslots++;
            }
            if ((type == R_X86_64_PLT32 || type == R_X86_64_PC32) && !s->near && s->is_func &&
                !s->need_stub) {
                s->need_stub = 1;
                s->stub = (uint32_t)l->nstubs++;
                if (!s->need_slot) {
                    s->need_slot = 1;
                    s->slot = (uint32_t)l->nslots++;
                }
            }
        }
    }
    /* The replacement functions need no lookup here: hp_patchobj_parse
     * checked each is defined in a loaded executable section, and every such
     * symbol gets its address in l->sym_addr below. */

    /* Layout: text block [code, stubs, read-only data, slots], data block
     * [data, bss]; each packed into the arena's shared pages. */
    size_t off[2] = {0, 0}, align[2] = {1, 1}, stubs_off = 0, slots_off = 0;
    for (int part = 0; part < 3; part++) {
        int blk = part == 2;
        for (size_t i = 1; i < po->nsh; i++) {
            const Elf64_Shdr *s = &po->sh[i];
            if (!hp_po_loaded(po, i))
                continue;
            int exec = !!(s->sh_flags & SHF_EXECINSTR), wr = !!(s->sh_flags & SHF_WRITE);
            if (exec && wr) {
                hp_fail(err, errlen,
                        "patch section %s is writable and executable; refusing W+X memory",
                        hp_po_secname(po, i));
                goto fail;
            }
            if ((exec ? 0 : wr ? 2 : 1) != part)
                continue;
            size_t a = s->sh_addralign > 1 ? s->sh_addralign : 1;
            off[blk] = align_up(off[blk], a);
            align[blk] = a > align[blk] ? a : align[blk];
            sec_off[i] = off[blk];
            off[blk] += s->sh_size;
        }
        if (part == 0) {
            stubs_off = off[0] = align_up(off[0], 8);
            off[0] += l->nstubs * STUB_SIZE;
        }
        if (part == 1) {
            slots_off = off[0] = align_up(off[0], 8);
            off[0] += l->nslots * 8;
        }
    }
    /* R_X86_64_32S is sign-extended: the patch must end below 2 GiB. */
    uintptr_t limit = low_region ? (uintptr_t)INT32_MAX + 1 : 0;
    if (hp_arena_alloc(exe->lo, exe->hi, off[0], align[0], 1, limit, &l->text, err, errlen) ||
        hp_arena_alloc(exe->lo, exe->hi, off[1], align[1], 0, limit, &l->data, err, errlen))
        goto fail;
    /* Built in a staging copy at its final addresses, then written out. */
    stage[0] = calloc(1, off[0] ? off[0] : 1);
    stage[1] = calloc(1, off[1] ? off[1] : 1);
    if (!stage[0] || !stage[1]) {
        hp_fail(err, errlen, "out of memory");
        goto fail;
    }
    l->stage[0] = stage[0];
    l->stage[1] = stage[1];
    uintptr_t stubs = l->text.at + stubs_off, slots = l->text.at + slots_off;

    for (size_t i = 1; i < po->nsh; i++) {
        if (!hp_po_loaded(po, i))
            continue;
        int blk = !!(po->sh[i].sh_flags & SHF_WRITE);
        l->sec_addr[i] = (blk ? l->data.at : l->text.at) + sec_off[i];
        if (po->sh[i].sh_type != SHT_NOBITS)
            memcpy(stage[blk] + sec_off[i], po->data + po->sh[i].sh_offset, po->sh[i].sh_size);
    }
    for (size_t i = 0; i < po->nsyms; i++) {
        const Elf64_Sym *s = &po->syms[i];
        if (sr[i].state == SYM_ADDR)
            l->sym_addr[i] = sr[i].addr;
        else if (s->st_shndx != SHN_UNDEF && s->st_shndx < SHN_LORESERVE &&
                 hp_po_loaded(po, s->st_shndx))
            l->sym_addr[i] = l->sec_addr[s->st_shndx] +
                             (ELF64_ST_TYPE(s->st_info) == STT_SECTION ? 0 : s->st_value);
    }
    /* Slots and stubs. */
    for (size_t i = 0; i < po->nsyms; i++) {
        if (sr[i].need_slot)
            memcpy(staged(l, slots + (uintptr_t)sr[i].slot * 8), &l->sym_addr[i], 8);
        if (sr[i].need_tls_slot)
            memcpy(staged(l, slots + (uintptr_t)sr[i].tls_slot * 8), &sr[i].tpoff, 8);
        /* __tls_get_addr's argument: {module id, offset}, 16 bytes. */
        if (sr[i].need_gd) {
            uint64_t pair[2] = {sr[i].modid, sr[i].dtpoff};
            memcpy(staged(l, slots + (uintptr_t)sr[i].gd_slot * 8), pair, 16);
        }
        if (sr[i].need_ld) {
            uint64_t pair[2] = {sr[i].modid, 0};
            memcpy(staged(l, slots + (uintptr_t)sr[i].ld_slot * 8), pair, 16);
        }
        if (sr[i].need_stub) {
            uintptr_t at = stubs + (uintptr_t)sr[i].stub * STUB_SIZE;
            uint8_t *st = staged(l, at);
            uintptr_t slot = slots + (uintptr_t)sr[i].slot * 8;
            int32_t rel = (int32_t)(int64_t)(slot - (at + 6));
            st[0] = 0xff; /* jmp *rel32(%rip) */
            st[1] = 0x25;
            memcpy(st + 2, &rel, 4);
            st[6] = st[7] = 0xcc;
        }
    }
    /* Pass 2: apply. */
    for (size_t i = 1; i < po->nsh; i++) {
        if (!is_applied_rela(po, i))
            continue;
        size_t n = po->sh[i].sh_size / sizeof(Elf64_Rela);
        for (size_t k = 0; k < n; k++) {
            Elf64_Rela r;
            hp_po_rela(po, i, k, &r);
            if (ELF64_R_TYPE(r.r_info) == R_X86_64_NONE)
                continue;
            if (apply_one(po, l, sr, i, &r, stubs, slots, err, errlen))
                goto fail;
        }
    }
    /* Text is never writable: it goes in through /proc/self/mem. */
    if (hp_arena_write(&l->text, stage[0], off[0], err, errlen) ||
        hp_arena_write(&l->data, stage[1], off[1], err, errlen))
        goto fail;
    hp_log("patch text %#lx-%#lx (%zu stubs, %zu slots), data %#lx-%#lx; %zu arena chunks",
           (unsigned long)l->text.at, (unsigned long)(l->text.at + off[0]), l->nstubs, l->nslots,
           (unsigned long)l->data.at, (unsigned long)(l->data.at + off[1]), hp_arena_chunks());
    const struct hp_exe_stats *st = hp_exe_stats();
    long long t1 = hp_exe_now_us();
    hp_log("prepare: %u functions in %lld us (find and fingerprint %lld us, of which loading the "
           "executable's symbols %lld us; link %lld us; %lu symbol lookups; parse not counted)",
           po->nfuncs, t1 - st->start_us, t0 - st->start_us, st->load_us, t1 - t0, st->lookups);
    free(sr);
    free(sec_off);
    free(stage[0]);
    free(stage[1]);
    l->stage[0] = l->stage[1] = NULL;
    return 0;
fail:
    hp_link_unmap(l);
    hp_link_free_tables(l);
    free(sr);
    free(sec_off);
    free(stage[0]);
    free(stage[1]);
    l->stage[0] = l->stage[1] = NULL;
    return -1;
}
