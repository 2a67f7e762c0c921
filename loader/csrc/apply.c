/*
 * Apply: find every replaced function in the running executable and check
 * it is the code the patch was built against (size + masked fingerprint,
 * always over the *original* bytes: an older patch's jump is looked through),
 * link the new code, switch (rewrite.c), and push the patch on the stack.
 * Overview in patch.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "patch_internal.h"

static const uint8_t ENDBR64[4] = {0xf3, 0x0f, 0x1e, 0xfa};

/* The byte the running program had at `addr` before any patch touched it. */
static uint8_t original_byte(uintptr_t addr)
{
    uint8_t b = *(const volatile uint8_t *)addr;
    for (const struct applied *p = hp_patch_top; p; p = p->prev) /* newest → oldest */
        for (size_t i = 0; i < p->n; i++)
            if (addr >= p->r[i].at && addr < p->r[i].at + JUMP_LEN)
                b = p->r[i].saved[addr - p->r[i].at]; /* the oldest save wins */
    return b;
}

/* A function shorter than the jump may still be redirected when the bytes
 * after it, up to the next symbol, are alignment padding: no code lives
 * there, so the jump may spill into it (GCC and Clang align functions to 16
 * bytes at -O2). Padding is NOP (0x90), INT3 (0xcc), zero, or the bytes of
 * the multi-byte NOP forms (66 2e 0f 1f 84/80/44/40 00...). */
static int padding_fits(const struct hp_exe *exe, uintptr_t func, uint64_t size, size_t skip)
{
    static const uint8_t pad[] = {0x90, 0xcc, 0x00, 0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x80, 0x44, 0x40};
    uint64_t need = skip + JUMP_LEN;
    if (hp_exe_room(exe, func) < need)
        return 0;
    for (uint64_t k = size; k < need; k++)
        if (!memchr(pad, original_byte(func + k), sizeof pad))
            return 0;
    return 1;
}

static uint64_t fingerprint_running(uintptr_t func, uint64_t size, const struct hp_func_rec *f)
{
    uint64_t h = HP_FNV_OFFSET_BASIS;
    for (uint64_t i = 0; i < size; i++) {
        int masked = 0;
        for (uint32_t m = 0; m < f->nmasks && !masked; m++)
            masked = i >= f->masks[m].off && i - f->masks[m].off < f->masks[m].len;
        h ^= masked ? 0 : original_byte(func + i);
        h *= HP_FNV_PRIME;
    }
    return h;
}

/* Finds the running function for a record and checks it is the code the
 * patch was built against. */
static int find_target(const struct hp_exe *exe, const struct hp_func_rec *f, uintptr_t *func,
                       char *err, size_t errlen)
{
    struct hp_symref refs[16];
    char label[600];
    hp_fn_label(f->name, f->file, label, sizeof label);
    int n = hp_exe_lookup(exe, f->file, f->name, 1, refs, 16);
    if (n == 0)
        return hp_fail(err, errlen, "function %s is not in the running program's symbol table",
                       label);
    if (n > 16)
        n = 16;
    int good = -1, ngood = 0;
    uint64_t seen_size = 0;
    for (int i = 0; i < n; i++) {
        seen_size = refs[i].size;
        if (refs[i].size != f->old_size || refs[i].size > HP_MAX_PATCH_SIZE)
            continue;
        if (fingerprint_running(refs[i].addr, refs[i].size, f) == f->fingerprint) {
            good = i;
            ngood++;
        }
    }
    if (ngood > 1)
        return hp_fail(err, errlen,
                       "function %s is ambiguous: %d functions of that name match the patch",
                       label, ngood);
    if (ngood == 0) {
        if (n == 1 && seen_size != f->old_size)
            return hp_fail(err, errlen,
                           "function %s: running code does not match the code this patch was "
                           "built against (size %llu vs %llu) — was the patch built from the "
                           "deployed version?",
                           label, (unsigned long long)seen_size,
                           (unsigned long long)f->old_size);
        return hp_fail(err, errlen,
                       "function %s: running code does not match the code this patch was built "
                       "against (%sfingerprint differs) — was the patch built from the deployed "
                       "version?",
                       label, n > 1 ? "none of the candidates match: " : "");
    }
    *func = refs[good].addr;
    return 0;
}

int hp_apply_mem_locked(const void *data, size_t size, const struct hp_opts *o, char *msg,
                        size_t msglen, char *details, size_t detlen)
{
    struct hp_patchobj po;
    struct hp_linked l;
    const struct hp_exe *exe;
    struct redirect *r = NULL;
    int linked = 0;

    if (hp_patchobj_parse(&po, data, size, msg, msglen))
        goto fail;
    for (const struct applied *p = hp_patch_top; p; p = p->prev)
        if (strcmp(p->id, po.patch_id) == 0) {
            hp_fail(msg, msglen, "patch %s is already applied", po.patch_id);
            goto fail;
        }
    if (hp_exe_get(&exe, msg, msglen))
        goto fail;
    r = calloc(po.nfuncs, sizeof *r);
    if (!r) {
        hp_fail(msg, msglen, "out of memory");
        goto fail;
    }
    for (uint32_t i = 0; i < po.nfuncs; i++) {
        const struct hp_func_rec *f = &po.funcs[i];
        char label[600];
        hp_fn_label(f->name, f->file, label, sizeof label);
        if (f->redirect != HP_REDIRECT_ENTRY_JUMP) {
            hp_fail(msg, msglen,
                    "function %s: redirect kind %u is not supported by this loader (only entry "
                    "jumps)",
                    label, f->redirect);
            goto fail;
        }
        uintptr_t func = 0;
        if (find_target(exe, f, &func, msg, msglen))
            goto fail;
        uint8_t head[4];
        for (int k = 0; k < 4 && (uint64_t)k < f->old_size; k++)
            head[k] = original_byte(func + k);
        size_t skip = f->old_size >= 4 && memcmp(head, ENDBR64, 4) == 0 ? 4 : 0;
        if (f->old_size < skip + JUMP_LEN && !padding_fits(exe, func, f->old_size, skip)) {
            hp_fail(msg, msglen,
                    "function %s is too small (%llu bytes) for a %d-byte jump%s and no "
                    "alignment padding follows it; patch its callers instead",
                    label, (unsigned long long)f->old_size, JUMP_LEN,
                    skip ? " after endbr64" : "");
            goto fail;
        }
        for (uint32_t k = 0; k < i; k++)
            if (r[k].func == func) {
                hp_fail(msg, msglen, "function %s is replaced twice by this patch", label);
                goto fail;
            }
        r[i].name = strdup(f->name);
        r[i].file = strdup(f->file);
        r[i].func = func;
        r[i].size = f->old_size;
        r[i].at = func + skip;
        memcpy(r[i].saved, (const void *)r[i].at, JUMP_LEN); /* may be an older patch's jump */
    }
    if (hp_link(&po, exe, &l, msg, msglen))
        goto fail;
    linked = 1;
    for (uint32_t i = 0; i < po.nfuncs; i++) {
        long si = hp_po_find_defined(&po, po.funcs[i].new_sym);
        r[i].target = l.sym_addr[si];
        r[i].target_size = po.syms[si].st_size ? po.syms[si].st_size : 1;
        int64_t rel = (int64_t)(r[i].target - (r[i].at + JUMP_LEN));
        if (rel < INT32_MIN || rel > INT32_MAX) {
            hp_fail(msg, msglen, "internal error: new code for %s is out of jump range",
                    r[i].name);
            goto fail;
        }
        int32_t rel32 = (int32_t)rel;
        r[i].written[0] = 0xe9;
        memcpy(r[i].written + 1, &rel32, 4);
    }
    if (hp_rewrite(r, po.nfuncs, NULL, o, msg, msglen, details, detlen))
        goto fail;

    struct applied *a = calloc(1, sizeof *a);
    char *id = strdup(po.patch_id);
    if (!a || !id) {
        /* Cannot record it: undo, so the stack always matches the code. */
        char e2[128];
        struct hp_opts plain = {0, 0};
        struct applied tmp = {.id = (char *)po.patch_id, .region = l.region.base,
                              .region_size = l.region.size};
        hp_rewrite(r, po.nfuncs, &tmp, &plain, e2, sizeof e2, NULL, 0);
        free(a);
        free(id);
        hp_fail(msg, msglen, "out of memory");
        goto fail;
    }
    a->id = id;
    a->r = r;
    a->n = po.nfuncs;
    a->region = l.region.base;
    a->region_size = l.region.size;
    for (size_t i = 1; i < po.nsh; i++) /* its CFI lets threads in it be unwound */
        if (l.sec_addr[i] && strcmp(hp_po_secname(&po, i), ".eh_frame") == 0) {
            a->eh_frame = l.sec_addr[i];
            a->eh_size = po.sh[i].sh_size;
        }
    a->prev = hp_patch_top;
    hp_patch_top = a;
    for (size_t i = 0; i < a->n; i++)
        hp_log("  %s%s%s: %#lx -> %#lx", a->r[i].file, *a->r[i].file ? "::" : "", a->r[i].name,
               (unsigned long)a->r[i].func, (unsigned long)a->r[i].target);
    snprintf(msg, msglen, "applied %s: %zu functions%s", a->id, a->n,
             o->consistent ? " (consistent: no thread was running them)" : "");
    hp_log("%s (base %s, region %p%s)", msg, po.base_id, a->region,
           a->eh_frame ? ", with unwind information" : "");
    hp_link_free_tables(&l);
    hp_patchobj_free(&po);
    return 0;
fail:
    hp_log("apply failed: %s", msg);
    if (linked) {
        hp_link_unmap(&l); /* no jump points into it */
        hp_link_free_tables(&l);
    }
    hp_free_redirects(r, po.nfuncs);
    hp_patchobj_free(&po);
    return -1;
}
