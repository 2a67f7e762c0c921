/*
 * Reader for patch objects (patch format v1: an ELF64 x86-64 ET_REL with a
 * .hotpatch.meta section, layout in hp_format.h generated from
 * format_layout.rs).
 *
 * The bytes come from a socket: treat them as hostile. Every offset, size,
 * index and string is checked here, once, so the rest of the loader can use
 * the parsed structure without re-checking. Headers, section headers and
 * symbols are copied out with memcpy because the buffer need not be aligned.
 *
 * The content hash comes first: as soon as the section names lead to
 * .hotpatch.meta, the SHA-256 of the whole file (its hash field read as
 * zero) must match the one hpbuild stored there, or the patch is refused,
 * named, before anything else of it is read (format/README.md).
 */
#include <stdlib.h>
#include <string.h>

#include "hp_internal.h"
#include "sha256.h"

/* off + len <= size, without overflow. */
static int in_bounds(uint64_t off, uint64_t len, uint64_t size)
{
    return off <= size && len <= size - off;
}

static uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v; /* x86-64 is little-endian, as is the format */
}

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* A string table is usable if it is non-empty and ends with NUL: then any
 * offset below its size yields a terminated string. */
static int strtab_ok(const char *tab, size_t size)
{
    return size > 0 && tab[size - 1] == '\0';
}

/* The rule of Rust's str::from_utf8, which the Rust reader applies to the
 * same strings: no overlong forms, no surrogates, nothing above U+10FFFF.
 * Never reads past the terminating NUL (it fails every continuation test). */
static int utf8_ok(const char *str)
{
    const unsigned char *p = (const unsigned char *)str;
    while (*p) {
        unsigned char c = *p++, lo = 0x80, hi = 0xbf;
        int more;
        if (c < 0x80)
            continue;
        if (c >= 0xc2 && c <= 0xdf)
            more = 1;
        else if (c >= 0xe0 && c <= 0xef)
            more = 2, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
        else if (c >= 0xf0 && c <= 0xf4)
            more = 3, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
        else
            return 0;
        if (*p < lo || *p > hi)
            return 0;
        for (p++; --more > 0; p++)
            if ((*p & 0xc0) != 0x80)
                return 0;
    }
    return 1;
}

const char *hp_po_secname(const struct hp_patchobj *po, size_t shndx)
{
    if (shndx >= po->nsh || po->sh[shndx].sh_name >= po->shstr_size)
        return "?";
    return po->shstr + po->sh[shndx].sh_name;
}

const char *hp_po_symname(const struct hp_patchobj *po, size_t symidx)
{
    if (symidx >= po->nsyms)
        return "?";
    const Elf64_Sym *s = &po->syms[symidx];
    if (ELF64_ST_TYPE(s->st_info) == STT_SECTION && s->st_name == 0)
        return hp_po_secname(po, s->st_shndx);
    if (s->st_name >= po->strtab_size)
        return "?";
    return po->strtab + s->st_name;
}

int hp_po_loaded(const struct hp_patchobj *po, size_t shndx)
{
    return shndx > 0 && shndx < po->nsh && (po->sh[shndx].sh_flags & SHF_ALLOC);
}

/* Symbols hp_po_find_defined may return: in a real section, not a section
 * symbol. */
static int findable(const Elf64_Sym *s)
{
    return s->st_shndx != SHN_UNDEF && s->st_shndx < SHN_LORESERVE &&
           ELF64_ST_TYPE(s->st_info) != STT_SECTION;
}

static uint64_t name_hash(const char *name)
{
    uint64_t h = HP_FNV_OFFSET_BASIS;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * HP_FNV_PRIME;
    return h;
}

/* The by-name hash (open addressing, linear probing, at most half full):
 * every findable symbol, the first of each name only, so a lookup gives
 * what a scan in table order would. Names are already bounds-checked. */
static int index_names(struct hp_patchobj *po)
{
    size_t n = 0, slots = 16;
    for (size_t i = 1; i < po->nsyms; i++)
        n += findable(&po->syms[i]);
    while (slots < 2 * n)
        slots *= 2;
    po->by_name = calloc(slots, sizeof *po->by_name);
    if (!po->by_name)
        return -1;
    po->by_name_mask = slots - 1;
    for (size_t i = 1; i < po->nsyms; i++) {
        if (!findable(&po->syms[i]))
            continue;
        const char *name = po->strtab + po->syms[i].st_name;
        size_t k = name_hash(name) & po->by_name_mask;
        while (po->by_name[k] && strcmp(po->strtab + po->syms[po->by_name[k]].st_name, name) != 0)
            k = (k + 1) & po->by_name_mask;
        if (!po->by_name[k])
            po->by_name[k] = (uint32_t)i;
    }
    return 0;
}

long hp_po_find_defined(const struct hp_patchobj *po, const char *name)
{
    if (!po->by_name)
        return -1;
    size_t k = name_hash(name) & po->by_name_mask;
    for (; po->by_name[k]; k = (k + 1) & po->by_name_mask)
        if (strcmp(po->strtab + po->syms[po->by_name[k]].st_name, name) == 0)
            return po->by_name[k];
    return -1;
}

void hp_po_rela(const struct hp_patchobj *po, size_t shndx, size_t i, Elf64_Rela *out)
{
    memcpy(out, po->data + po->sh[shndx].sh_offset + i * sizeof(Elf64_Rela), sizeof *out);
}

void hp_patchobj_free(struct hp_patchobj *po)
{
    free(po->sh);
    free(po->syms);
    free(po->funcs);
    free(po->masks);
    free(po->by_name);
    memset(po, 0, sizeof *po);
}

/* The patch's id when the metadata names it readably (its string table in
 * bounds and terminated, the id a non-empty UTF-8 string in it), else NULL:
 * the rule of `named` in format/src/patch.rs. msize >= HP_HDR_SIZE. */
static const char *readable_id(const uint8_t *m, uint64_t msize)
{
    uint32_t stroff = rd32(m + HP_HDR_STRTAB_OFF), strsize = rd32(m + HP_HDR_STRTAB_SIZE);
    uint32_t id = rd32(m + HP_HDR_PATCH_ID);
    if (!in_bounds(stroff, strsize, msize) || !strtab_ok((const char *)m + stroff, strsize) ||
        id >= strsize)
        return NULL;
    const char *s = (const char *)m + stroff + id;
    return *s && utf8_ok(s) ? s : NULL;
}

/* "patch ID: " or nothing, as three %s arguments. */
#define NAMED(id) (id) ? "patch " : "", (id) ? (id) : "", (id) ? ": " : ""

/* The metadata up to its tables: magic, version, the content hash's flag
 * and room for it. The same checks, order and words as check_header in
 * format/src/patch.rs. */
static int check_header(const uint8_t *m, uint64_t msize, char *err, size_t errlen)
{
    if (msize < HP_HDR_SIZE || memcmp(m + HP_HDR_MAGIC, HP_MAGIC, 8) != 0)
        return hp_fail(err, errlen, "metadata section has no HOTPATCH header");
    uint32_t version = rd32(m + HP_HDR_VERSION);
    if (version != HP_FORMAT_VERSION)
        return hp_fail(err, errlen, "patch format version %u, this loader reads version %u",
                       version, HP_FORMAT_VERSION);
    if (!(rd32(m + HP_HDR_FLAGS) & HP_HDR_F_SHA256))
        return hp_fail(err, errlen,
                       "%s%s%sno content hash (the patch was written by an hpbuild that stores "
                       "none, or changed since); rebuild it",
                       NAMED(readable_id(m, msize)));
    if (msize < HP_HDR_SEALED_SIZE)
        return hp_fail(err, errlen, "metadata is truncated (content hash)");
    return 0;
}

/* The content hash: SHA-256 of all `size` bytes with the field at
 * meta_off + HP_HDR_SHA256 read as zero must equal that field. m, msize: the
 * metadata section, in bounds, at meta_off. */
static int check_hash(const uint8_t *data, size_t size, uint64_t meta_off, const uint8_t *m,
                      uint64_t msize, char *err, size_t errlen)
{
    static const uint8_t zeros[HP_SHA256_SIZE];
    uint8_t digest[HP_SHA256_SIZE];
    struct hp_sha256 c;
    if (check_header(m, msize, err, errlen))
        return -1;
    uint64_t field = meta_off + HP_HDR_SHA256;
    hp_sha256_init(&c);
    hp_sha256_update(&c, data, field);
    hp_sha256_update(&c, zeros, HP_SHA256_SIZE);
    hp_sha256_update(&c, data + field + HP_SHA256_SIZE, size - field - HP_SHA256_SIZE);
    hp_sha256_final(&c, digest);
    if (memcmp(digest, m + HP_HDR_SHA256, HP_SHA256_SIZE) != 0)
        return hp_fail(err, errlen,
                       "%s%s%scontent hash does not match (the file was changed after hpbuild "
                       "wrote it); rebuild it",
                       NAMED(readable_id(m, msize)));
    return 0;
}

/* The signature section, if the patch has one: its structure only (the
 * same checks and words as read_signature in format/src/signature.rs);
 * signing.c verifies it where the process has a key. m, msize: the
 * metadata, its content hash checked. */
static int read_signature(struct hp_patchobj *po, const uint8_t *m, uint64_t msize, char *err,
                          size_t errlen)
{
    size_t idx = 0;
    for (size_t i = 1; i < po->nsh; i++)
        if (strcmp(hp_po_secname(po, i), HP_SIG_SECTION) == 0) {
            if (idx)
                return hp_fail(err, errlen, "patch has more than one %s section", HP_SIG_SECTION);
            idx = i;
        }
    if (!idx)
        return 0;
    const Elf64_Shdr *s = &po->sh[idx];
    if (s->sh_type == SHT_NOBITS)
        return hp_fail(err, errlen, "%s has no contents", HP_SIG_SECTION);
    if (!in_bounds(s->sh_offset, s->sh_size, po->size))
        return hp_fail(err, errlen, "%s lies outside the file (truncated patch?)", HP_SIG_SECTION);
    const char *id = readable_id(m, msize);
    const uint8_t *sig = po->data + s->sh_offset;
    if (s->sh_size != HP_SIG_SIZE)
        return hp_fail(err, errlen, "%s%s%ssignature section %s is %llu bytes, not %u", NAMED(id),
                       HP_SIG_SECTION, (unsigned long long)s->sh_size, HP_SIG_SIZE);
    if (memcmp(sig + HP_SIG_HDR_MAGIC, HP_SIG_MAGIC, 8) != 0)
        return hp_fail(err, errlen, "%s%s%ssignature section %s has no HPSIGNED header",
                       NAMED(id), HP_SIG_SECTION);
    uint32_t alg = rd32(sig + HP_SIG_ALG), flags = rd32(sig + HP_SIG_FLAGS);
    if (alg != HP_SIG_ALG_ED25519)
        return hp_fail(err, errlen,
                       "%s%s%ssignature algorithm %u is unknown (this reader verifies ed25519, %u)",
                       NAMED(id), alg, HP_SIG_ALG_ED25519);
    if (flags)
        return hp_fail(err, errlen, "%s%s%ssignature section %s has unknown flags %#x", NAMED(id),
                       HP_SIG_SECTION, flags);
    po->sig = sig;
    po->sig_off = s->sh_offset;
    return 0;
}

/* Parses .hotpatch.meta: the same checks, in the same order and words, as
 * Meta::decode in format/src/patch.rs (loader/tests/malformed.rs runs one
 * table of malformed sections through both). */
static int parse_meta(struct hp_patchobj *po, const uint8_t *m, uint64_t msize, char *err,
                      size_t errlen)
{
    if (check_header(m, msize, err, errlen))
        return -1;
    uint32_t stroff = rd32(m + HP_HDR_STRTAB_OFF), strsize = rd32(m + HP_HDR_STRTAB_SIZE);
    uint32_t nfuncs = rd32(m + HP_HDR_NFUNCS), funcs_off = rd32(m + HP_HDR_FUNCS_OFF);
    uint32_t nmasks = rd32(m + HP_HDR_NMASKS), masks_off = rd32(m + HP_HDR_MASKS_OFF);
    if (!in_bounds(stroff, strsize, msize) || !strtab_ok((const char *)m + stroff, strsize))
        return hp_fail(err, errlen, "metadata string table is out of bounds or unterminated");
    if (!in_bounds(funcs_off, (uint64_t)nfuncs * HP_FUNC_SIZE, msize) ||
        !in_bounds(masks_off, (uint64_t)nmasks * HP_MASK_SIZE, msize))
        return hp_fail(err, errlen, "metadata is truncated (function or mask table)");
    if (nfuncs == 0)
        return hp_fail(err, errlen, "patch replaces no functions");
    const char *strs = (const char *)m + stroff;
#define STR(off, dst)                                                                      \
    do {                                                                                   \
        uint32_t o_ = (off);                                                               \
        if (o_ >= strsize)                                                                 \
            return hp_fail(err, errlen, "metadata string offset %u out of range", o_);    \
        if (!utf8_ok(strs + o_))                                                           \
            return hp_fail(err, errlen, "metadata string is not UTF-8");                   \
        (dst) = strs + o_;                                                                 \
    } while (0)
    STR(rd32(m + HP_HDR_PATCH_ID), po->patch_id);
    STR(rd32(m + HP_HDR_BASE_ID), po->base_id);
    po->target = "";
    uint32_t hflags = rd32(m + HP_HDR_FLAGS);
    if ((hflags & HP_HDR_F_TARGET) && (hflags & HP_HDR_F_TARGETS))
        return hp_fail(err, errlen, "patch has both a target and a target list");
    if (hflags & HP_HDR_F_TARGET) {
        if (msize < HP_HDR_TARGETED_SIZE)
            return hp_fail(err, errlen, "metadata is too short for its target field");
        STR(rd32(m + HP_HDR_TARGET), po->target);
        if (!*po->target)
            return hp_fail(err, errlen, "patch names an empty target library");
    }
    po->targets[0] = po->target;
    po->ntargets = 1;
    if (hflags & HP_HDR_F_TARGETS) {
        if (msize < HP_HDR_TARGETS)
            return hp_fail(err, errlen, "metadata is too short for its target list");
        uint32_t n = rd32(m + HP_HDR_NTARGETS);
        if (n < 2 || n > HP_MAX_TARGETS)
            return hp_fail(err, errlen, "patch names %u targets (a list holds 2 to %u)", n,
                           (unsigned)HP_MAX_TARGETS);
        if (msize < HP_HDR_TARGETS + 4 * (uint64_t)n)
            return hp_fail(err, errlen, "metadata is too short for its target list");
        for (uint32_t i = 0; i < n; i++) {
            STR(rd32(m + HP_HDR_TARGETS + 4 * i), po->targets[i]);
            for (uint32_t j = 0; j < i; j++)
                if (strcmp(po->targets[j], po->targets[i]) == 0)
                    return hp_fail(err, errlen, "patch names target \"%s\" twice",
                                   po->targets[i]);
        }
        po->ntargets = n;
        po->target = po->targets[0];
    }

    po->masks = calloc(nmasks ? nmasks : 1, sizeof *po->masks);
    po->funcs = calloc(nfuncs, sizeof *po->funcs);
    if (!po->masks || !po->funcs)
        return hp_fail(err, errlen, "out of memory reading metadata");
    po->nmasks = nmasks;
    po->nfuncs = nfuncs;
    for (uint32_t i = 0; i < nmasks; i++) {
        const uint8_t *r = m + masks_off + (uint64_t)i * HP_MASK_SIZE;
        po->masks[i].off = rd32(r + HP_MASK_OFFSET);
        po->masks[i].len = rd32(r + HP_MASK_LEN);
    }
    for (uint32_t i = 0; i < nfuncs; i++) {
        const uint8_t *r = m + funcs_off + (uint64_t)i * HP_FUNC_SIZE;
        struct hp_func_rec *f = &po->funcs[i];
        STR(rd32(r + HP_FUNC_NAME), f->name);
        STR(rd32(r + HP_FUNC_FILE), f->file);
        STR(rd32(r + HP_FUNC_NEW), f->new_sym);
        f->redirect = rd32(r + HP_FUNC_REDIRECT);
        f->flags = rd32(r + HP_FUNC_FLAGS);
        f->old_size = rd64(r + HP_FUNC_OLD_SIZE);
        f->fingerprint = rd64(r + HP_FUNC_FINGERPRINT);
        uint32_t first = rd32(r + HP_FUNC_MASK_FIRST), count = rd32(r + HP_FUNC_MASK_COUNT);
        if ((uint64_t)first + count > nmasks)
            return hp_fail(err, errlen, "function record %u points past the mask table", i);
        f->masks = po->masks + first;
        f->nmasks = count;
        if (!*f->name || !*f->new_sym)
            return hp_fail(err, errlen, "function record %u has an empty name", i);
    }
#undef STR
    return 0;
}

int hp_patchobj_parse(struct hp_patchobj *po, const uint8_t *data, size_t size, char *err,
                      size_t errlen)
{
    Elf64_Ehdr eh;
    memset(po, 0, sizeof *po);
    po->data = data;
    po->size = size;
    if (size < sizeof eh || memcmp(data, ELFMAG, SELFMAG) != 0)
        return hp_fail(err, errlen, "not an ELF object (%zu bytes)", size);
    memcpy(&eh, data, sizeof eh);
    if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB ||
        eh.e_machine != EM_X86_64)
        return hp_fail(err, errlen, "not an x86-64 ELF64 little-endian object");
    if (eh.e_type != ET_REL)
        return hp_fail(err, errlen, "not a relocatable object (ELF type %u)", eh.e_type);
    if (eh.e_shentsize != sizeof(Elf64_Shdr) || eh.e_shnum == 0 ||
        !in_bounds(eh.e_shoff, (uint64_t)eh.e_shnum * sizeof(Elf64_Shdr), size))
        return hp_fail(err, errlen, "ELF section header table is truncated or malformed");
    if (eh.e_shstrndx >= eh.e_shnum)
        return hp_fail(err, errlen, "ELF section name table index out of range");

    po->nsh = eh.e_shnum;
    po->sh = malloc(po->nsh * sizeof *po->sh);
    if (!po->sh)
        return hp_fail(err, errlen, "out of memory");
    memcpy(po->sh, data + eh.e_shoff, po->nsh * sizeof *po->sh);

    /* The section names lead to the metadata, which holds the content hash:
     * checked before anything else. */
    const Elf64_Shdr *shs = &po->sh[eh.e_shstrndx];
    if (shs->sh_type != SHT_STRTAB || !in_bounds(shs->sh_offset, shs->sh_size, size))
        return hp_fail(err, errlen, "ELF section name table is malformed");
    po->shstr = (const char *)data + shs->sh_offset;
    po->shstr_size = shs->sh_size;
    if (!strtab_ok(po->shstr, po->shstr_size))
        return hp_fail(err, errlen, "ELF section name table is malformed");
    size_t meta_idx = 0;
    for (size_t i = 1; i < po->nsh; i++)
        if (strcmp(hp_po_secname(po, i), HP_META_SECTION) == 0) {
            if (meta_idx)
                return hp_fail(err, errlen, "patch has more than one %s section",
                               HP_META_SECTION);
            meta_idx = i;
        }
    if (!meta_idx)
        return hp_fail(err, errlen, "no %s section: not a hotpatch object", HP_META_SECTION);
    const Elf64_Shdr *ms = &po->sh[meta_idx];
    if (ms->sh_type == SHT_NOBITS)
        return hp_fail(err, errlen, "%s has no contents", HP_META_SECTION);
    if (!in_bounds(ms->sh_offset, ms->sh_size, size))
        return hp_fail(err, errlen, "%s lies outside the file (truncated patch?)",
                       HP_META_SECTION);
    if (check_hash(data, size, ms->sh_offset, data + ms->sh_offset, ms->sh_size, err, errlen))
        return -1;
    po->meta_off = ms->sh_offset;
    if (read_signature(po, data + ms->sh_offset, ms->sh_size, err, errlen))
        return -1;

    for (size_t i = 0; i < po->nsh; i++) {
        const Elf64_Shdr *s = &po->sh[i];
        /* A NULL header holds no bytes, unless it is SHF_ALLOC: hp_link
         * copies every loaded section that is not NOBITS. */
        int has_bytes = s->sh_type != SHT_NOBITS &&
                        (s->sh_type != SHT_NULL || (s->sh_flags & SHF_ALLOC));
        if (has_bytes && !in_bounds(s->sh_offset, s->sh_size, size))
            return hp_fail(err, errlen, "section %zu lies outside the file (truncated patch?)", i);
        if (s->sh_addralign & (s->sh_addralign - 1))
            return hp_fail(err, errlen, "section %zu has a bad alignment", i);
        if ((s->sh_flags & SHF_ALLOC) && s->sh_addralign > 4096)
            return hp_fail(err, errlen, "section %zu wants alignment %llu (max 4096)", i,
                           (unsigned long long)s->sh_addralign);
        if ((s->sh_flags & SHF_ALLOC) && s->sh_size > HP_MAX_PATCH_SIZE)
            return hp_fail(err, errlen, "section %zu is too large", i);
    }

    /* The symbol table and its strings. */
    for (size_t i = 1; i < po->nsh; i++) {
        if (po->sh[i].sh_type == SHT_SYMTAB) {
            if (po->symtab_idx)
                return hp_fail(err, errlen, "patch has more than one symbol table");
            po->symtab_idx = i;
        }
    }
    if (!po->symtab_idx)
        return hp_fail(err, errlen, "patch object has no symbol table");
    const Elf64_Shdr *st = &po->sh[po->symtab_idx];
    if (st->sh_entsize != sizeof(Elf64_Sym) || st->sh_size % sizeof(Elf64_Sym) ||
        st->sh_link == 0 || st->sh_link >= po->nsh || po->sh[st->sh_link].sh_type != SHT_STRTAB)
        return hp_fail(err, errlen, "patch symbol table is malformed");
    po->strtab = (const char *)data + po->sh[st->sh_link].sh_offset;
    po->strtab_size = po->sh[st->sh_link].sh_size;
    if (!strtab_ok(po->strtab, po->strtab_size))
        return hp_fail(err, errlen, "patch string table is unterminated");
    po->nsyms = st->sh_size / sizeof(Elf64_Sym);
    if (po->nsyms == 0)
        return hp_fail(err, errlen, "patch symbol table is empty");
    po->syms = malloc(po->nsyms * sizeof *po->syms);
    if (!po->syms)
        return hp_fail(err, errlen, "out of memory");
    memcpy(po->syms, data + st->sh_offset, po->nsyms * sizeof *po->syms);
    for (size_t i = 1; i < po->nsyms; i++) {
        const Elf64_Sym *s = &po->syms[i];
        if (s->st_name >= po->strtab_size)
            return hp_fail(err, errlen, "symbol %zu has a name outside the string table", i);
        if (s->st_shndx == SHN_XINDEX || (s->st_shndx != SHN_UNDEF && s->st_shndx < SHN_LORESERVE &&
                                          s->st_shndx >= po->nsh))
            return hp_fail(err, errlen, "symbol %s has a bad section index",
                           hp_po_symname(po, i));
        if (s->st_shndx == SHN_COMMON)
            return hp_fail(err, errlen,
                           "symbol %s is a common symbol; build the patch with -fno-common",
                           hp_po_symname(po, i));
        if (s->st_shndx != SHN_UNDEF && s->st_shndx < SHN_LORESERVE && hp_po_loaded(po, s->st_shndx) &&
            ELF64_ST_TYPE(s->st_info) != STT_SECTION &&
            s->st_value > po->sh[s->st_shndx].sh_size)
            return hp_fail(err, errlen, "symbol %s lies outside its section", hp_po_symname(po, i));
    }

    /* Sections the loader cannot honour, and relocation tables. */
    for (size_t i = 1; i < po->nsh; i++) {
        const Elf64_Shdr *s = &po->sh[i];
        const char *name = hp_po_secname(po, i);
        if ((s->sh_flags & SHF_ALLOC) && (s->sh_flags & SHF_TLS))
            return hp_fail(err, errlen,
                           "patch section %s holds thread-local data, which is not supported yet",
                           name);
        if ((s->sh_flags & SHF_ALLOC) &&
            (s->sh_type == SHT_INIT_ARRAY || s->sh_type == SHT_FINI_ARRAY ||
             s->sh_type == SHT_PREINIT_ARRAY || strncmp(name, ".ctors", 6) == 0 ||
             strncmp(name, ".dtors", 6) == 0))
            return hp_fail(err, errlen,
                           "patch section %s holds constructors/destructors, which the loader "
                           "does not run",
                           name);
        if (s->sh_type == SHT_REL && hp_po_loaded(po, s->sh_info))
            return hp_fail(err, errlen, "patch uses REL relocations (%s); only RELA is supported",
                           name);
        if (s->sh_type != SHT_RELA)
            continue;
        if (s->sh_entsize != sizeof(Elf64_Rela) || s->sh_size % sizeof(Elf64_Rela) ||
            s->sh_link != po->symtab_idx || s->sh_info >= po->nsh)
            return hp_fail(err, errlen, "relocation section %s is malformed", name);
        if (!hp_po_loaded(po, s->sh_info))
            continue; /* relocations for debug info etc.: not applied */
        const Elf64_Shdr *t = &po->sh[s->sh_info];
        if (t->sh_type == SHT_NOBITS)
            return hp_fail(err, errlen, "relocation section %s applies to a NOBITS section", name);
        size_t n = s->sh_size / sizeof(Elf64_Rela);
        for (size_t k = 0; k < n; k++) {
            Elf64_Rela r;
            hp_po_rela(po, i, k, &r);
            if (ELF64_R_SYM(r.r_info) >= po->nsyms)
                return hp_fail(err, errlen, "relocation %zu of %s names symbol index out of range",
                               k, name);
            /* 8 bytes is the widest field; link.c checks the exact width. */
            if (r.r_offset >= t->sh_size)
                return hp_fail(err, errlen, "relocation %zu of %s lies outside its section", k,
                               name);
        }
    }

    if (parse_meta(po, data + ms->sh_offset, ms->sh_size, err, errlen))
        return -1;

    if (index_names(po))
        return hp_fail(err, errlen, "out of memory");
    for (uint32_t i = 0; i < po->nfuncs; i++) {
        long s = hp_po_find_defined(po, po->funcs[i].new_sym);
        if (s < 0)
            return hp_fail(err, errlen,
                           "function %s names replacement symbol %s that the object does not define",
                           po->funcs[i].name, po->funcs[i].new_sym);
        size_t shndx = po->syms[s].st_shndx;
        if (!hp_po_loaded(po, shndx) || !(po->sh[shndx].sh_flags & SHF_EXECINSTR))
            return hp_fail(err, errlen, "replacement symbol %s is not in an executable section",
                           po->funcs[i].new_sym);
        /* The redirect jumps to its first byte: it must be in the section
         * (other symbols may sit at the end, st_value == sh_size). */
        if (po->syms[s].st_value >= po->sh[shndx].sh_size)
            return hp_fail(err, errlen, "replacement symbol %s lies outside its section",
                           po->funcs[i].new_sym);
        po->funcs[i].new_idx = (uint32_t)s;
    }
    return 0;
}
