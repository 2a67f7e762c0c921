/*
 * Apply: find every replaced function (in the running executable, or added
 * by an applied patch) and check its active code — an applied patch's
 * replacement, else its own — is the code the patch was built against
 * (size + masked fingerprint; an older patch's jump is looked through),
 * link the new code, collect call sites (sites.c) when asked, switch
 * (switch.c), and push the patch on the stack.
 * Overview in patch.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "patch_internal.h"

static const uint8_t ENDBR64[4] = {0xf3, 0x0f, 0x1e, 0xfa};

#define LOG_EACH_MAX 20 /* larger patches log one summary line, not one per function */
#define STR_(x) #x
#define STR(x) STR_(x)

/* What finding the functions of one patch shares: the executable, the bytes
 * the applied patches overwrote (to look through them), and the entries
 * taken so far (a hash set, 0 empty). */
struct prep {
    const struct hp_exe *exe;
    struct hp_saved saved;
    uintptr_t *taken;
    size_t taken_mask;
};

static int prep_init(struct prep *p, const struct hp_exe *exe, size_t nfuncs)
{
    size_t slots = 16;
    while (slots < 2 * nfuncs)
        slots *= 2;
    p->exe = exe;
    p->taken = calloc(slots, sizeof *p->taken);
    p->taken_mask = slots - 1;
    return p->taken && hp_saved_build(&p->saved) == 0 ? 0 : -1;
}

static void prep_free(struct prep *p)
{
    hp_saved_free(&p->saved);
    free(p->taken);
    p->taken = NULL;
}

/* Records func as taken; 1 if it already was. */
static int taken_before(struct prep *p, uintptr_t func)
{
    size_t k = (size_t)((func * 0x9e3779b97f4a7c15ull) >> 32) & p->taken_mask;
    for (; p->taken[k]; k = (k + 1) & p->taken_mask)
        if (p->taken[k] == func)
            return 1;
    p->taken[k] = func;
    return 0;
}

/* "name (file)" for the messages (made only when one is needed). */
struct label {
    char s[600];
};

static const char *label(const struct hp_func_rec *f, struct label *l)
{
    return hp_fn_label(f->name, f->file, l->s, sizeof l->s);
}

/* A function shorter than the jump may still be redirected when the bytes
 * after it, up to the next symbol, are alignment padding: no code lives
 * there, so the jump may spill into it (GCC and Clang align functions to 16
 * bytes at -O2). Padding is NOP (0x90), INT3 (0xcc), zero, or the bytes of
 * the multi-byte NOP forms (66 2e 0f 1f 84/80/44/40 00...). */
static int padding_fits(const struct prep *p, uintptr_t func, uint64_t size, size_t skip)
{
    static const uint8_t pad[] = {0x90, 0xcc, 0x00, 0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x80, 0x44, 0x40};
    uint8_t after[sizeof ENDBR64 + JUMP_LEN];
    uint64_t need = skip + JUMP_LEN;
    if (size >= need)
        return 1;
    int in_exe = func >= p->exe->lo && func < p->exe->hi;
    if ((in_exe ? hp_exe_room(p->exe, func) : hp_patch_room(func)) < need)
        return 0;
    hp_original_bytes(&p->saved, func + size, need - size, after);
    for (uint64_t k = 0; k < need - size; k++)
        if (!memchr(pad, after[k], sizeof pad))
            return 0;
    return 1;
}

/* FNV-1a over the function's original bytes, masked bytes read as zero
 * (format::fingerprint), a chunk at a time. */
static uint64_t fingerprint_running(const struct prep *p, uintptr_t func, uint64_t size,
                                    const struct hp_func_rec *f)
{
    uint8_t buf[1024];
    uint64_t h = HP_FNV_OFFSET_BASIS;
    for (uint64_t at = 0; at < size; at += sizeof buf) {
        size_t n = size - at < sizeof buf ? (size_t)(size - at) : sizeof buf;
        hp_original_bytes(&p->saved, func + at, n, buf);
        for (uint32_t m = 0; m < f->nmasks; m++) {
            uint64_t lo = f->masks[m].off, hi = lo + f->masks[m].len;
            lo = lo > at ? lo : at;
            hi = hi < at + n ? hi : at + n;
            if (lo < hi)
                memset(buf + (lo - at), 0, hi - lo);
        }
        for (size_t i = 0; i < n; i++)
            h = (h ^ buf[i]) * HP_FNV_PRIME;
    }
    return h;
}

/* Does the code that runs today for the function at func (its own, or the
 * newest patch's replacement) match what record f was built against? A
 * patch built on top of another compares with that patch's code, so a fix
 * can only replace a function another patch replaced if it was built with
 * that patch in its base. *stale: the patch whose code is active when only
 * the code under it matches (the fix was built without that patch). */
static int matches_active(const struct prep *p, const struct hp_symref *fn,
                          const struct hp_func_rec *f, const char **stale)
{
    const char *by = NULL;
    const struct redirect *act = hp_active_redirect(fn->addr, &by);
    uintptr_t code = act ? act->target : fn->addr;
    uint64_t size = act ? act->target_size : fn->size;
    if (size == f->old_size && size <= HP_MAX_PATCH_SIZE &&
        fingerprint_running(p, code, size, f) == f->fingerprint)
        return 1;
    if (act && fn->size == f->old_size && fn->size <= HP_MAX_PATCH_SIZE &&
        fingerprint_running(p, fn->addr, fn->size, f) == f->fingerprint)
        *stale = by;
    return 0;
}

/* Finds the running function for a record — in the executable, else among
 * the functions applied patches added — and checks its active code is the
 * code the patch was built against. */
static int find_target(const struct prep *p, const struct hp_func_rec *f, struct hp_symref *fn,
                       char *err, size_t errlen)
{
    struct hp_symref refs[16];
    struct label l;
    int n = hp_exe_lookup(p->exe, f->file, f->name, 1, refs, 16);
    if (n == 0)
        n = hp_patch_lookup(p->exe, f->file, f->name, 1, refs);
    if (n == 0)
        return hp_fail(err, errlen,
                       "function %s is not in the running program's symbol table, and no "
                       "applied patch added it",
                       label(f, &l));
    if (n > 16)
        n = 16;
    int good = -1, ngood = 0;
    const char *stale = NULL;
    for (int i = 0; i < n; i++)
        if (matches_active(p, &refs[i], f, &stale)) {
            good = i;
            ngood++;
        }
    if (ngood > 1)
        return hp_fail(err, errlen,
                       "function %s is ambiguous: %d functions of that name match the patch",
                       label(f, &l), ngood);
    if (ngood == 0 && stale)
        return hp_fail(err, errlen,
                       "function %s: patch %s replaced it, and this patch was built against the "
                       "code before %s — applying it would undo %s's fix. Build it with %s "
                       "applied to its base, or revert %s first",
                       label(f, &l), stale, stale, stale, stale, stale);
    if (ngood == 0) {
        const struct redirect *act = n == 1 ? hp_active_redirect(refs[0].addr, NULL) : NULL;
        uint64_t seen_size = act ? act->target_size : refs[0].size;
        if (n == 1 && seen_size != f->old_size)
            return hp_fail(err, errlen,
                           "function %s: running code does not match the code this patch was "
                           "built against (size %llu vs %llu) — was the patch built from the "
                           "deployed version?",
                           label(f, &l), (unsigned long long)seen_size,
                           (unsigned long long)f->old_size);
        return hp_fail(err, errlen,
                       "function %s: running code does not match the code this patch was built "
                       "against (%sfingerprint differs) — was the patch built from the deployed "
                       "version?",
                       label(f, &l), n > 1 ? "none of the candidates match: " : "");
    }
    *fn = refs[good];
    return 0;
}

/* Where the jump after an endbr64 goes in code at `at` (size bytes). */
static size_t endbr_skip(const struct prep *p, uintptr_t at, uint64_t size)
{
    uint8_t head[sizeof ENDBR64];
    if (size < sizeof ENDBR64)
        return 0;
    hp_original_bytes(&p->saved, at, sizeof head, head);
    return memcmp(head, ENDBR64, sizeof head) == 0 ? sizeof head : 0;
}

/* A function an older patch replaced: that patch's code calls its own
 * replacement directly, not through the entry everyone else calls, so the
 * new code needs a jump at the replacement's entry too (reverted with this
 * patch). Sets r->chain_at, or 0 when no patch replaced func. */
static int chain_entry(const struct prep *p, const struct hp_func_rec *f, uintptr_t func,
                       struct redirect *r, char *err, size_t errlen)
{
    struct label l;
    const struct redirect *act = hp_active_redirect(func, NULL);
    r->chain_at = 0;
    if (!act)
        return 0;
    size_t skip = endbr_skip(p, act->target, act->target_size);
    if (!padding_fits(p, act->target, act->target_size, skip))
        return hp_fail(err, errlen,
                       "function %s: the older patch's code for it is too small (%llu bytes) "
                       "for a %d-byte jump; revert that patch and apply a fix of both",
                       label(f, &l), (unsigned long long)act->target_size, JUMP_LEN);
    r->chain_at = act->target + skip;
    return 0;
}

/* The redirect and entry-jump span of record f (the jump after endbr64). */
static int prepare_entry(struct prep *p, const struct hp_func_rec *f, struct redirect *r,
                         struct span *s, size_t i, char *err, size_t errlen)
{
    struct label l;
    if (f->redirect != HP_REDIRECT_ENTRY_JUMP)
        return hp_fail(err, errlen,
                       "function %s: redirect kind %u is not supported by this loader (only "
                       "entry jumps)",
                       label(f, &l), f->redirect);
    struct hp_symref fn = {0};
    if (find_target(p, f, &fn, err, errlen))
        return -1;
    /* The jump goes at the entry everyone calls (the executable's, or that
     * of the patch that added the function), whatever code is active. */
    uintptr_t func = fn.addr;
    size_t skip = endbr_skip(p, func, fn.size);
    if (fn.size < skip + JUMP_LEN && !padding_fits(p, func, fn.size, skip))
        return hp_fail(err, errlen,
                       "function %s is too small (%llu bytes) for a %d-byte jump%s and no "
                       "alignment padding follows it; patch its callers instead",
                       label(f, &l), (unsigned long long)fn.size, JUMP_LEN,
                       skip ? " after endbr64" : "");
    if (taken_before(p, func))
        return hp_fail(err, errlen, "function %s is replaced twice by this patch", label(f, &l));
    if (chain_entry(p, f, func, r, err, errlen))
        return -1;
    r->func = func;
    r->size = fn.size;
    *s = (struct span){.at = func + skip, .len = JUMP_LEN, .func = (uint32_t)i};
    memcpy(s->old, (const void *)s->at, JUMP_LEN); /* may be an older patch's jump */
    return 0;
}

/* The redirects of a patch, their names copied after the array in the same
 * block (one allocation; hp_free_redirects frees it). */
static struct redirect *new_redirects(const struct hp_patchobj *po)
{
    size_t bytes = po->nfuncs * sizeof(struct redirect);
    for (uint32_t i = 0; i < po->nfuncs; i++)
        bytes += strlen(po->funcs[i].name) + strlen(po->funcs[i].file) + 2;
    struct redirect *r = calloc(1, bytes);
    if (!r)
        return NULL;
    char *str = (char *)(r + po->nfuncs);
    for (uint32_t i = 0; i < po->nfuncs; i++) {
        size_t ln = strlen(po->funcs[i].name) + 1, lf = strlen(po->funcs[i].file) + 1;
        r[i].name = memcpy(str, po->funcs[i].name, ln);
        r[i].file = memcpy(str + ln, po->funcs[i].file, lf);
        str += ln + lf;
    }
    return r;
}

/* After linking: where each function's new code is, and its entry jump. */
static int aim_entries(const struct hp_patchobj *po, const struct hp_linked *l, struct redirect *r,
                       struct span *s, char *err, size_t errlen)
{
    for (uint32_t i = 0; i < po->nfuncs; i++) {
        size_t si = po->funcs[i].new_idx; /* found and checked by the parser */
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

/* The chained entry jumps (redirect.chain_at), as spans after the entry
 * jumps. Returns the new span count, 0 when out of memory. */
static size_t add_chains(const struct redirect *r, size_t n, struct span **spans)
{
    size_t k = n;
    for (size_t i = 0; i < n; i++)
        k += r[i].chain_at != 0;
    struct span *grown = realloc(*spans, k * sizeof *grown);
    if (!grown)
        return 0;
    *spans = grown;
    k = n;
    for (size_t i = 0; i < n; i++) {
        if (!r[i].chain_at)
            continue;
        struct span *s = &grown[k++];
        int32_t rel32 = (int32_t)(int64_t)(r[i].target - (r[i].chain_at + JUMP_LEN));
        *s = (struct span){.at = r[i].chain_at, .len = JUMP_LEN, .func = (uint32_t)i};
        memcpy(s->old, (const void *)s->at, JUMP_LEN);
        s->new[0] = 0xe9;
        memcpy(s->new + 1, &rel32, 4);
    }
    return k;
}

/* With --redirect call-site: the client's sites, checked, as spans after
 * the entry jumps. Returns the new span count (nspans on any problem: the
 * entry jumps alone still switch every call). */
static size_t add_call_sites(const struct hp_opts *o, const struct hp_exe *exe, struct redirect *r,
                             size_t n, struct span **spans, size_t nspans, size_t *skipped)
{
    struct hp_site_line *lines = NULL;
    size_t nlines = 0;
    char err[256];
    *skipped = 0;
    if (!o->call_sites || !o->client)
        return nspans;
    if (hp_client_sites(o->client, exe, r, n, &lines, &nlines, err, sizeof err)) {
        hp_log("call sites: %s; redirecting by entry jumps only", err);
        return nspans;
    }
    struct span *grown = realloc(*spans, (nspans + nlines + 1) * sizeof *grown);
    if (!grown) {
        free(lines);
        return nspans;
    }
    *spans = grown;
    size_t total = hp_sites_to_spans(lines, nlines, exe, r, n, grown, nspans, skipped);
    free(lines);
    return total;
}

/* Records the switched patch on the stack. */
static struct applied *record(const struct hp_patchobj *po, const struct hp_linked *l,
                              struct redirect *r, struct span *spans, size_t nspans, int sites,
                              const struct hp_callbacks *cb, const char *target, uintptr_t obj_lo,
                              int with_prev)
{
    struct applied *a = calloc(1, sizeof *a);
    char *id = strdup(po->patch_id), *t = strdup(target);
    size_t ndefs = 0;
    struct patch_def *defs = a && id && t ? hp_defs_collect(po, l, &ndefs) : NULL;
    if (!defs) {
        free(a);
        free(id);
        free(t);
        return NULL;
    }
    *a = (struct applied){.id = id, .target = t, .obj_lo = obj_lo, .with_prev = with_prev, .r = r,
                          .n = po->nfuncs, .spans = spans, .nspans = nspans,
                          .call_sites = sites, .text = l->text, .data = l->data,
                          .cb = *cb, .defs = defs, .ndefs = ndefs,
                          .prev = hp_patch_top};
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
    for (size_t i = 0; a->n <= LOG_EACH_MAX && i < a->n; i++)
        hp_log("  %s%s%s: %#lx -> %#lx%s", a->r[i].file, *a->r[i].file ? "::" : "",
               a->r[i].name, (unsigned long)a->r[i].func, (unsigned long)a->r[i].target,
               a->call_sites ? " (+call sites)" : "");
    hp_log("%s (base %s, code at %#lx%s%s)", msg, base_id, (unsigned long)a->text.at,
           a->eh_frame ? ", with unwind information" : "",
           a->n > LOG_EACH_MAX ? "; functions not logged one by one, there are more than "
                                 STR(LOG_EACH_MAX)
                               : "");
}

static size_t count_sites(const struct redirect *r, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += r[i].nsites;
    return k;
}

/* One object of the process the patch is applied to (the executable or a
 * library) and what was prepared for it. */
struct module {
    const struct hp_exe *exe;
    const char *target;  /* its name in the patch ("": the executable) */
    struct redirect *r;
    struct span *spans;
    size_t nspans, skipped;
    struct busy_range *ranges;
    size_t nranges;
    struct hp_linked l;
    int linked, called;  /* called: its pre-apply callbacks ran */
    struct hp_callbacks cb;
    struct applied *recorded;
};

/* Finds, links and aims everything for one object: its functions checked
 * against the patch's base, the new code linked within its reach, the
 * entry jumps (and call sites) as spans, the ranges no frame may be in. */
static int prepare_module(const struct hp_patchobj *po, const struct hp_opts *o,
                          struct module *m, char *msg, size_t msglen)
{
    struct prep prep = {0};
    m->r = new_redirects(po);
    m->spans = calloc(po->nfuncs, sizeof *m->spans);
    if (!m->r || !m->spans || prep_init(&prep, m->exe, po->nfuncs)) {
        prep_free(&prep);
        return hp_fail(msg, msglen, "out of memory");
    }
    for (uint32_t i = 0; i < po->nfuncs; i++)
        if (prepare_entry(&prep, &po->funcs[i], &m->r[i], &m->spans[i], i, msg, msglen)) {
            prep_free(&prep);
            return -1;
        }
    prep_free(&prep);
    if (hp_link(po, m->exe, &m->l, msg, msglen))
        return -1;
    m->linked = 1;
    if (aim_entries(po, &m->l, m->r, m->spans, msg, msglen) ||
        hp_callbacks_collect(po, &m->l, &m->cb, msg, msglen))
        return -1;
    m->nspans = add_chains(m->r, po->nfuncs, &m->spans);
    if (!m->nspans)
        return hp_fail(msg, msglen, "out of memory");
    m->nspans = add_call_sites(o, m->exe, m->r, po->nfuncs, &m->spans, m->nspans, &m->skipped);
    m->ranges = hp_busy_ranges(m->r, po->nfuncs, NULL, &m->nranges);
    return m->ranges ? 0 : hp_fail(msg, msglen, "out of memory");
}

/* What a module holds that its record did not take over. */
static void module_free(struct module *m, uint32_t nfuncs, const char *patch_id)
{
    if (m->called) /* its pre-apply callbacks ran: let the patch undo them */
        hp_callbacks_run(&m->cb, HP_CB_POST_REVERT, patch_id, NULL, 0);
    free(m->ranges);
    if (m->recorded)
        return;
    hp_callbacks_free(&m->cb);
    if (m->linked) {
        hp_link_unmap(&m->l); /* no jump points into it */
        hp_link_free_tables(&m->l);
    }
    free(m->spans);
    hp_free_redirects(m->r, nfuncs);
}

/* Does the executable have the unit the patch was built from? A list of
 * targets names every output the build links it into; a process runs one
 * program, which may or may not be one of them. (The first function may be
 * one an applied patch added to it.) */
static int exe_has_unit(const struct hp_patchobj *po, const struct hp_exe *exe)
{
    struct hp_symref ref;
    const struct hp_func_rec *f = &po->funcs[0];
    return hp_exe_lookup(exe, f->file, f->name, 1, &ref, 1) > 0 ||
           hp_patch_lookup(exe, f->file, f->name, 1, &ref);
}

/* The objects the patch is applied to: its one target (which must be
 * there), or each object of a target list that this process has. */
static int find_modules(const struct hp_patchobj *po, struct module *m, size_t *nm, char *msg,
                        size_t msglen)
{
    *nm = 0;
    if (po->ntargets == 1) {
        m[0].target = po->target;
        if (hp_target_get(po->target, &m[0].exe, msg, msglen))
            return -1;
        *nm = 1;
        return 0;
    }
    char names[512] = "";
    size_t used = 0;
    for (uint32_t i = 0; i < po->ntargets; i++) {
        const char *t = po->targets[i];
        int w = snprintf(names + used, sizeof names - used, "%s%s", i ? ", " : "",
                         *t ? t : "the executable");
        used = w > 0 && used + (size_t)w < sizeof names ? used + (size_t)w : used;
        const struct hp_exe *exe;
        int got = hp_target_get(t, &exe, msg, msglen);
        if (got < 0)
            return -1;
        if (got > 0) /* not loaded here */
            continue;
        if (!*t && !exe_has_unit(po, exe))
            continue;
        int seen = 0; /* two names of one loaded library */
        for (size_t k = 0; k < *nm; k++)
            seen |= m[k].exe->lo == exe->lo;
        if (!seen)
            m[(*nm)++] = (struct module){.exe = exe, .target = t};
    }
    if (!*nm)
        return hp_fail(msg, msglen,
                       "the patch is for %s, and this process has none of them (no such library "
                       "is loaded, and the executable does not define %s)",
                       names, po->funcs[0].name);
    return 0;
}

/* The modules' spans, redirects and busy ranges joined for one switch. */
static int join_modules(const struct module *m, size_t nm, uint32_t nfuncs, struct hp_parts *j)
{
    for (size_t k = 0; k < nm; k++)
        if (hp_parts_add(j, m[k].r, nfuncs, m[k].spans, m[k].nspans, m[k].ranges, m[k].nranges))
            return -1;
    return 0;
}

/* Records every module on the stack (oldest first; the newer ones say they
 * came with it). On failure nothing stays recorded. */
static int record_modules(const struct hp_patchobj *po, struct module *m, size_t nm,
                          const struct hp_opts *o)
{
    for (size_t k = 0; k < nm; k++) {
        m[k].recorded = record(po, &m[k].l, m[k].r, m[k].spans, m[k].nspans,
                               o->call_sites && o->client, &m[k].cb, m[k].target,
                               m[k].exe->lo, k > 0);
        if (!m[k].recorded) {
            while (k-- > 0) {
                hp_patch_top = m[k].recorded->prev;
                hp_unrecord(m[k].recorded);
                m[k].recorded = NULL;
            }
            return -1;
        }
    }
    return 0;
}

/* "applied fix-1: 2 functions" and, for several objects, which. */
static void applied_message(const struct module *m, size_t nm, const struct hp_opts *o, char *msg,
                            size_t msglen)
{
    const struct applied *a = m[0].recorded;
    size_t nsites = 0, skipped = 0;
    for (size_t k = 0; k < nm; k++) {
        nsites += count_sites(m[k].r, a->n);
        skipped += m[k].skipped;
    }
    char extra[96] = "", where[256] = "";
    if (a->call_sites)
        snprintf(extra, sizeof extra, " (%zu call sites%s)", nsites,
                 skipped ? ", some could not be rewritten: their calls take the entry jump" : "");
    for (size_t k = 0, used = 0; nm > 1 && k < nm; k++) {
        int w = snprintf(where + used, sizeof where - used, "%s%s", k ? ", " : " in ",
                         *m[k].target ? m[k].target : "the executable");
        used = w > 0 && used + (size_t)w < sizeof where ? used + (size_t)w : used;
    }
    snprintf(msg, msglen, "applied %s: %zu function%s%s%s%s", a->id, a->n, a->n == 1 ? "" : "s",
             where, o->consistent ? " (consistent: no thread was running them)" : "", extra);
    if (skipped)
        hp_log("call sites: %zu skipped (bytes, reach or overlap)", skipped);
}

int hp_apply_mem_locked(const void *data, size_t size, const struct hp_opts *o, char *msg,
                        size_t msglen, char *details, size_t detlen)
{
    struct hp_patchobj po;
    struct module m[HP_MAX_TARGETS];
    struct hp_parts parts = {0};
    size_t nm = 0;

    memset(m, 0, sizeof m);
    if (hp_patchobj_parse(&po, data, size, msg, msglen))
        goto fail;
    if (hp_sig_check(&po, msg, msglen)) /* before anything is linked or written */
        goto fail;
    for (const struct applied *p = hp_patch_top; p; p = p->prev)
        if (strcmp(p->id, po.patch_id) == 0) {
            hp_fail(msg, msglen, "patch %s is already applied", po.patch_id);
            goto fail;
        }
    if (find_modules(&po, m, &nm, msg, msglen)) /* the executable and/or libraries */
        goto fail;
    for (size_t k = 0; k < nm; k++)
        if (prepare_module(&po, o, &m[k], msg, msglen))
            goto fail;
    if (join_modules(m, nm, po.nfuncs, &parts)) {
        hp_fail(msg, msglen, "out of memory");
        goto fail;
    }
    if (o->client && hp_client_gone(o->client)) { /* before anything the patch does */
        hp_fail(msg, msglen, "the client went away before the switch; nothing was changed");
        goto fail;
    }
    for (size_t k = 0; k < nm; k++) {
        if (hp_callbacks_run(&m[k].cb, HP_CB_PRE_APPLY, po.patch_id, msg, msglen))
            goto fail;
        m[k].called = 1; /* from here a failure runs its post-revert callbacks (undo) */
    }
    struct hp_switch sw = {.r = parts.r, .nr = parts.nr, .spans = parts.spans,
                           .nspans = parts.nspans, .ranges = parts.ranges,
                           .nranges = parts.nranges, .opts = o};
    if (hp_switch(&sw, msg, msglen, details, detlen))
        goto fail;
    if (record_modules(&po, m, nm, o)) {
        /* Cannot record it: undo, so the stack always matches the code. */
        char e2[128];
        struct hp_opts lazy = {0};
        sw.restoring = 1;
        sw.opts = &lazy;
        hp_switch(&sw, e2, sizeof e2, NULL, 0);
        hp_fail(msg, msglen, "out of memory");
        goto fail;
    }
    applied_message(m, nm, o, msg, msglen);
    for (size_t k = 0; k < nm; k++) {
        m[k].called = 0;
        hp_callbacks_run(&m[k].recorded->cb, HP_CB_POST_APPLY, po.patch_id, NULL, 0);
        log_applied(m[k].recorded, msg, po.base_id);
        hp_link_free_tables(&m[k].l);
        module_free(&m[k], po.nfuncs, po.patch_id);
    }
    hp_parts_free(&parts);
    hp_patchobj_free(&po);
    return 0;
fail:
    hp_log("apply failed: %s", msg);
    for (size_t k = 0; k < nm; k++)
        module_free(&m[k], po.nfuncs, po.patch_id);
    hp_parts_free(&parts);
    hp_patchobj_free(&po);
    return -1;
}
