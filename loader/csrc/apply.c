/*
 * Apply: find every replaced function in the running executable and check
 * it is the code the patch was built against (size + masked fingerprint,
 * always over the *original* bytes: an older patch's jump is looked through),
 * link the new code, collect call sites (sites.c) when asked, switch
 * (switch.c), and push the patch on the stack.
 * Overview in patch.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "patch_internal.h"

static const uint8_t ENDBR64[4] = {0xf3, 0x0f, 0x1e, 0xfa};

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
        if (!memchr(pad, hp_original_byte(func + k), sizeof pad))
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
        h ^= masked ? 0 : hp_original_byte(func + i);
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

/* The redirect and entry-jump span of record f (the jump after endbr64). */
static int prepare_entry(const struct hp_exe *exe, const struct hp_func_rec *f,
                         struct redirect *all, struct span *s, size_t i, char *err, size_t errlen)
{
    struct redirect *r = &all[i];
    char label[600];
    hp_fn_label(f->name, f->file, label, sizeof label);
    if (f->redirect != HP_REDIRECT_ENTRY_JUMP)
        return hp_fail(err, errlen,
                       "function %s: redirect kind %u is not supported by this loader (only "
                       "entry jumps)",
                       label, f->redirect);
    uintptr_t func = 0;
    if (find_target(exe, f, &func, err, errlen))
        return -1;
    uint8_t head[4];
    for (int k = 0; k < 4 && (uint64_t)k < f->old_size; k++)
        head[k] = hp_original_byte(func + k);
    size_t skip = f->old_size >= 4 && memcmp(head, ENDBR64, 4) == 0 ? 4 : 0;
    if (f->old_size < skip + JUMP_LEN && !padding_fits(exe, func, f->old_size, skip))
        return hp_fail(err, errlen,
                       "function %s is too small (%llu bytes) for a %d-byte jump%s and no "
                       "alignment padding follows it; patch its callers instead",
                       label, (unsigned long long)f->old_size, JUMP_LEN,
                       skip ? " after endbr64" : "");
    for (size_t k = 0; k < i; k++)
        if (all[k].func == func)
            return hp_fail(err, errlen, "function %s is replaced twice by this patch", label);
    r->name = strdup(f->name);
    r->file = strdup(f->file);
    r->func = func;
    r->size = f->old_size;
    *s = (struct span){.at = func + skip, .len = JUMP_LEN, .func = (uint32_t)i};
    memcpy(s->old, (const void *)s->at, JUMP_LEN); /* may be an older patch's jump */
    return r->name && r->file ? 0 : hp_fail(err, errlen, "out of memory");
}

/* After linking: where each function's new code is, and its entry jump. */
static int aim_entries(const struct hp_patchobj *po, const struct hp_linked *l, struct redirect *r,
                       struct span *s, char *err, size_t errlen)
{
    for (uint32_t i = 0; i < po->nfuncs; i++) {
        long si = hp_po_find_defined(po, po->funcs[i].new_sym);
        r[i].target = l->sym_addr[si];
        r[i].target_size = po->syms[si].st_size ? po->syms[si].st_size : 1;
        int64_t rel = (int64_t)(r[i].target - (s[i].at + JUMP_LEN));
        if (rel < INT32_MIN || rel > INT32_MAX)
            return hp_fail(err, errlen, "internal error: new code for %s is out of jump range",
                           r[i].name);
        int32_t rel32 = (int32_t)rel;
        s[i].new[0] = 0xe9;
        memcpy(s[i].new + 1, &rel32, 4);
    }
    return 0;
}

/* With --redirect call-site: the client's sites, checked, as spans after
 * the entry jumps. Returns the new span count (n on any problem: the entry
 * jumps alone still switch every call). */
static size_t add_call_sites(const struct hp_opts *o, struct redirect *r, size_t n,
                             struct span **spans, size_t *skipped)
{
    struct hp_site_line *lines = NULL;
    size_t nlines = 0;
    char err[256];
    *skipped = 0;
    if (!o->call_sites || !o->client)
        return n;
    if (hp_client_sites(o->client, r, n, &lines, &nlines, err, sizeof err)) {
        hp_log("call sites: %s; redirecting by entry jumps only", err);
        return n;
    }
    struct span *grown = realloc(*spans, (n + nlines + 1) * sizeof *grown);
    if (!grown) {
        free(lines);
        return n;
    }
    *spans = grown;
    size_t total = hp_sites_to_spans(lines, nlines, r, n, grown, n, skipped);
    free(lines);
    return total;
}

/* Records the switched patch on the stack. */
static struct applied *record(const struct hp_patchobj *po, const struct hp_linked *l,
                              struct redirect *r, struct span *spans, size_t nspans, int sites)
{
    struct applied *a = calloc(1, sizeof *a);
    char *id = strdup(po->patch_id);
    if (!a || !id) {
        free(a);
        free(id);
        return NULL;
    }
    *a = (struct applied){.id = id, .r = r, .n = po->nfuncs, .spans = spans, .nspans = nspans,
                          .call_sites = sites, .region = l->region.base,
                          .region_size = l->region.size, .prev = hp_patch_top};
    for (size_t i = 1; i < po->nsh; i++) /* its CFI lets threads in it be unwound */
        if (l->sec_addr[i] && strcmp(hp_po_secname(po, i), ".eh_frame") == 0) {
            a->eh_frame = l->sec_addr[i];
            a->eh_size = po->sh[i].sh_size;
        }
    hp_patch_top = a;
    return a;
}

static void log_applied(const struct applied *a, const char *msg, const char *base_id)
{
    for (size_t i = 0; i < a->n; i++)
        hp_log("  %s%s%s: %#lx -> %#lx%s", a->r[i].file, *a->r[i].file ? "::" : "",
               a->r[i].name, (unsigned long)a->r[i].func, (unsigned long)a->r[i].target,
               a->call_sites ? " (+call sites)" : "");
    hp_log("%s (base %s, region %p%s)", msg, base_id, a->region,
           a->eh_frame ? ", with unwind information" : "");
}

static size_t count_sites(const struct redirect *r, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += r[i].nsites;
    return k;
}

int hp_apply_mem_locked(const void *data, size_t size, const struct hp_opts *o, char *msg,
                        size_t msglen, char *details, size_t detlen)
{
    struct hp_patchobj po;
    struct hp_linked l;
    const struct hp_exe *exe;
    struct redirect *r = NULL;
    struct span *spans = NULL;
    struct busy_range *ranges = NULL;
    size_t nspans = 0, nranges = 0, skipped = 0;
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
    spans = calloc(po.nfuncs, sizeof *spans);
    if (!r || !spans) {
        hp_fail(msg, msglen, "out of memory");
        goto fail;
    }
    for (uint32_t i = 0; i < po.nfuncs; i++)
        if (prepare_entry(exe, &po.funcs[i], r, &spans[i], i, msg, msglen))
            goto fail;
    if (hp_link(&po, exe, &l, msg, msglen))
        goto fail;
    linked = 1;
    if (aim_entries(&po, &l, r, spans, msg, msglen))
        goto fail;
    nspans = add_call_sites(o, r, po.nfuncs, &spans, &skipped);
    ranges = hp_busy_ranges(r, po.nfuncs, NULL, &nranges);
    if (!ranges) {
        hp_fail(msg, msglen, "out of memory");
        goto fail;
    }
    struct hp_switch sw = {.r = r, .nr = po.nfuncs, .spans = spans, .nspans = nspans,
                           .ranges = ranges, .nranges = nranges, .opts = o};
    if (hp_switch(&sw, msg, msglen, details, detlen))
        goto fail;
    struct applied *a = record(&po, &l, r, spans, nspans, o->call_sites && o->client);
    if (!a) {
        /* Cannot record it: undo, so the stack always matches the code. */
        char e2[128];
        struct hp_opts lazy = {0};
        sw.restoring = 1;
        sw.opts = &lazy;
        hp_switch(&sw, e2, sizeof e2, NULL, 0);
        hp_fail(msg, msglen, "out of memory");
        goto fail;
    }
    size_t nsites = count_sites(r, po.nfuncs);
    char extra[96] = "";
    if (a->call_sites)
        snprintf(extra, sizeof extra, " (%zu call sites%s)", nsites,
                 skipped ? ", some could not be rewritten: their calls take the entry jump" : "");
    snprintf(msg, msglen, "applied %s: %zu functions%s%s", a->id, a->n,
             o->consistent ? " (consistent: no thread was running them)" : "", extra);
    if (skipped)
        hp_log("call sites: %zu skipped (bytes, reach or overlap)", skipped);
    log_applied(a, msg, po.base_id);
    free(ranges);
    hp_link_free_tables(&l);
    hp_patchobj_free(&po);
    return 0;
fail:
    hp_log("apply failed: %s", msg);
    if (linked) {
        hp_link_unmap(&l); /* no jump points into it */
        hp_link_free_tables(&l);
    }
    free(ranges);
    free(spans);
    hp_free_redirects(r, po.nfuncs);
    hp_patchobj_free(&po);
    return -1;
}
