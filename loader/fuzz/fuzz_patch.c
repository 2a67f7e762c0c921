/*
 * libFuzzer harness for the loader's patch reader and linker: the bytes an
 * hpctl client sends, handed to hp_patchobj_parse and, when they parse, to
 * hp_link against the running executable (this fuzzer, which links the
 * seeds' base program, target.c), then unmapped and freed. Built and run by
 * `cargo xtask fuzz` (xtask/src/fuzz.rs) with clang -fsanitize=fuzzer,address.
 *
 * The reader checks the patch's content hash before anything else, so a
 * mutated input would stop there. Each input is therefore read as it is
 * (the hash check and what comes before it) and, when it has a metadata
 * section with room for the hash, once more sealed: the hash recomputed
 * over the mutated bytes as the writer (format::seal) computes it.
 *
 * What the harness checks besides the sanitizers: every refusal is a
 * non-empty one-line message, and in a linked patch every loaded section
 * lies inside its block (text or data) and every replacement function
 * starts inside the text block.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hp_internal.h"
#include "sha256.h"

static const struct hp_exe *g_exe;
static int g_verbose; /* FUZZ_PATCH_VERBOSE=1: say how far each input got */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char err[512];
    const char *v = getenv("FUZZ_PATCH_VERBOSE");
    g_verbose = v && *v == '1';
    if (hp_exe_get(&g_exe, err, sizeof err)) {
        fprintf(stderr, "fuzz_patch: cannot read the fuzzer's own symbols: %s\n", err);
        abort();
    }
    return 0;
}

/* A refusal must be one non-empty line (the loader replies with it). */
static void check_message(const char *what, const char *err)
{
    if (!*err || strchr(err, '\n')) {
        fprintf(stderr, "fuzz_patch: %s failed with a bad message: \"%s\"\n", what, err);
        abort();
    }
}

/* Offset of the content hash field in data, or 0 if the harness cannot find
 * one: the one section (index 1 on) named HP_META_SECTION, long enough to
 * hold the header and the hash — the section the reader checks. */
static size_t hash_field(const uint8_t *data, size_t size)
{
    Elf64_Ehdr eh;
    if (size < sizeof eh || memcmp(data, ELFMAG, SELFMAG) != 0)
        return 0;
    memcpy(&eh, data, sizeof eh);
    if (eh.e_shentsize != sizeof(Elf64_Shdr) || eh.e_shstrndx >= eh.e_shnum ||
        eh.e_shoff > size || (uint64_t)eh.e_shnum * sizeof(Elf64_Shdr) > size - eh.e_shoff)
        return 0;
    Elf64_Shdr names;
    memcpy(&names, data + eh.e_shoff + (size_t)eh.e_shstrndx * sizeof names, sizeof names);
    if (names.sh_offset > size || names.sh_size > size - names.sh_offset)
        return 0;
    size_t field = 0;
    for (size_t i = 1; i < eh.e_shnum; i++) {
        Elf64_Shdr s;
        memcpy(&s, data + eh.e_shoff + i * sizeof s, sizeof s);
        const size_t want = sizeof HP_META_SECTION; /* with its NUL */
        if (s.sh_name >= names.sh_size || names.sh_size - s.sh_name < want ||
            memcmp(data + names.sh_offset + s.sh_name, HP_META_SECTION, want) != 0)
            continue;
        if (field || s.sh_type == SHT_NOBITS || s.sh_offset > size ||
            s.sh_size > size - s.sh_offset || s.sh_size < HP_HDR_SHA256 + HP_SHA256_SIZE)
            return 0;
        field = s.sh_offset + HP_HDR_SHA256;
    }
    return field;
}

/* Sets the content hash of buf as the writer does: SHA-256 of the whole
 * file with the field read as zero. */
static int seal(uint8_t *buf, size_t size)
{
    size_t field = hash_field(buf, size);
    if (!field)
        return 0;
    memset(buf + field, 0, HP_SHA256_SIZE);
    uint8_t hash[HP_SHA256_SIZE];
    struct hp_sha256 c;
    hp_sha256_init(&c);
    hp_sha256_update(&c, buf, size);
    hp_sha256_final(&c, hash);
    memcpy(buf + field, hash, HP_SHA256_SIZE);
    return 1;
}

/* [a, a + len) lies inside block b. */
static int inside(const struct hp_block *b, uintptr_t a, uint64_t len)
{
    return b->size && a >= b->at && a - b->at <= b->size && len <= b->size - (a - b->at);
}

static void bad_link(const struct hp_patchobj *po, const char *what, const char *name,
                     uintptr_t a, const struct hp_block *b)
{
    fprintf(stderr,
            "fuzz_patch: patch %s linked, but %s %s at %#lx is outside its block "
            "%#lx+%#zx\n",
            po->patch_id, what, name, (unsigned long)a, (unsigned long)b->at, b->size);
    abort();
}

static void parse_and_link(const uint8_t *data, size_t size)
{
    struct hp_patchobj po;
    char err[512] = "";
    if (hp_patchobj_parse(&po, data, size, err, sizeof err)) {
        if (g_verbose)
            fprintf(stderr, "parse: %s\n", err);
        check_message("hp_patchobj_parse", err);
        hp_patchobj_free(&po);
        return;
    }
    struct hp_linked l;
    err[0] = 0;
    hp_lock(); /* as apply does: hp_link consults the applied patches */
    int rc = hp_link(&po, g_exe, &l, err, sizeof err);
    hp_unlock();
    if (g_verbose)
        fprintf(stderr, "parse: ok, %u functions; link: %s\n", po.nfuncs, rc ? err : "ok");
    if (rc) {
        check_message("hp_link", err);
    } else {
        /* Every loaded section lies inside its block, and every
         * replacement function starts inside the text block. */
        for (size_t i = 1; i < po.nsh; i++) {
            const struct hp_block *b = (po.sh[i].sh_flags & SHF_WRITE) ? &l.data : &l.text;
            if (hp_po_loaded(&po, i) && po.sh[i].sh_size &&
                !inside(b, l.sec_addr[i], po.sh[i].sh_size))
                bad_link(&po, "section", hp_po_secname(&po, i), l.sec_addr[i], b);
        }
        for (uint32_t f = 0; f < po.nfuncs; f++) {
            uintptr_t a = l.sym_addr[po.funcs[f].new_idx];
            if (!inside(&l.text, a, 1))
                bad_link(&po, "replacement function", po.funcs[f].new_sym, a, &l.text);
        }
        hp_link_unmap(&l);
        hp_link_free_tables(&l);
    }
    hp_patchobj_free(&po);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy, exactly `size` bytes: ASan sees any read past it. */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    parse_and_link(buf, size);
    memcpy(buf, data, size);
    if (seal(buf, size))
        parse_and_link(buf, size);
    free(buf);
    return 0;
}
