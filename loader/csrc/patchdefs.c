/*
 * What applied patches define, for patches built on top of them.
 *
 * A fix built against v1+fix1 may call or replace a function fix1 added:
 * it is in no symbol table of the executable, only in fix1's patch. Each
 * applied patch keeps its defined symbols (name, the file of a static,
 * address, size); lookups fall back to them after the executable, oldest
 * patch first, so a reference reaches the first definition — the entry a
 * later patch redirects, like an executable function's.
 *
 * The file of a static is the STT_FILE entry it follows in the patch, as
 * in any object (the patch writer emits one per unit).
 */
#include <stdlib.h>
#include <string.h>

#include "patch_internal.h"

/* Is this symbol of the patch one a later patch may name? */
static int is_def(const struct hp_patchobj *po, const Elf64_Sym *s)
{
    unsigned t = ELF64_ST_TYPE(s->st_info);
    return s->st_name && s->st_shndx != SHN_UNDEF && s->st_shndx < SHN_LORESERVE &&
           hp_po_loaded(po, s->st_shndx) && (t == STT_FUNC || t == STT_OBJECT);
}

/* Fills out[] (when non-NULL) with every definition, names copied to str;
 * returns how many there are. */
static size_t each_def(const struct hp_patchobj *po, struct patch_def *out, char *str,
                       const struct hp_linked *l)
{
    const char *file = "";
    size_t k = 0;
    for (size_t i = 1; i < po->nsyms; i++) {
        const Elf64_Sym *s = &po->syms[i];
        if (ELF64_ST_TYPE(s->st_info) == STT_FILE) {
            file = hp_po_symname(po, i);
            continue;
        }
        if (!is_def(po, s))
            continue;
        if (out) {
            const char *name = hp_po_symname(po, i);
            const char *f = ELF64_ST_BIND(s->st_info) == STB_LOCAL ? file : "";
            size_t ln = strlen(name) + 1, lf = strlen(f) + 1;
            out[k] = (struct patch_def){.name = memcpy(str, name, ln),
                                        .file = memcpy(str + ln, f, lf),
                                        .addr = l->sym_addr[i],
                                        .size = s->st_size,
                                        .type = ELF64_ST_TYPE(s->st_info)};
            str += ln + lf;
        }
        k++;
    }
    return k;
}

struct patch_def *hp_defs_collect(const struct hp_patchobj *po, const struct hp_linked *l,
                                  size_t *n)
{
    size_t bytes = 0, count = 0;
    const char *file = "";
    for (size_t i = 1; i < po->nsyms; i++) {
        const Elf64_Sym *s = &po->syms[i];
        if (ELF64_ST_TYPE(s->st_info) == STT_FILE)
            file = hp_po_symname(po, i);
        else if (is_def(po, s)) {
            bytes += strlen(hp_po_symname(po, i)) + strlen(file) + 2;
            count++;
        }
    }
    struct patch_def *d = malloc(count * sizeof *d + bytes + 1);
    if (!d)
        return NULL;
    *n = each_def(po, d, (char *)(d + count), l);
    return d;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* The executable's rule: same path, or the same base name. */
static int same_file(const char *a, const char *b)
{
    return strcmp(a, b) == 0 || strcmp(base_name(a), base_name(b)) == 0;
}

int hp_patch_lookup(const struct hp_exe *exe, const char *file, const char *name, int funcs_only,
                    struct hp_symref *out)
{
    int found = 0;
    if (!file)
        file = "";
    for (const struct applied *p = hp_patch_top; p; p = p->prev) /* newest → oldest */
        for (size_t i = 0; p->obj_lo == exe->lo && i < p->ndefs; i++) {
            const struct patch_def *d = &p->defs[i];
            if (strcmp(d->name, name) != 0 || (*file == 0) != (*d->file == 0) ||
                (*file && !same_file(file, d->file)) || (funcs_only && d->type != STT_FUNC))
                continue;
            *out = (struct hp_symref){.addr = d->addr, .size = d->size, .type = d->type,
                                      .bind = *d->file ? STB_LOCAL : STB_GLOBAL};
            found = 1; /* keep going: the oldest definition wins */
            break;
        }
    return found;
}

uint64_t hp_patch_room(uintptr_t addr)
{
    for (const struct applied *p = hp_patch_top; p; p = p->prev) {
        uintptr_t lo = p->text.at, next = lo + p->text.size;
        if (addr < lo || addr >= next)
            continue;
        for (size_t i = 0; i < p->ndefs; i++)
            if (p->defs[i].addr > addr && p->defs[i].addr < next)
                next = p->defs[i].addr;
        return next - addr;
    }
    return 0;
}
