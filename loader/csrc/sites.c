/*
 * Call-site redirects: the client (hpctl) decodes the object the replaced
 * functions are in and the earlier patches' code and reports every direct call/jmp/jcc with a rel32
 * whose target is a replaced function. Nothing it says is trusted: a site
 * becomes a span only if
 *   - it lies inside the image of the object the functions are in (the
 *     executable, or the library a patch is for) or an applied patch's code,
 *   - it is one of the forms `e8 rel32`, `e9 rel32`, `0f 8x rel32`, and the
 *     running bytes are exactly the bytes the client decoded, except for a
 *     rel32 an earlier call-site patch rewrote,
 *   - its current target is the function's entry, or the code an earlier
 *     patch redirected it to (stacked patches),
 *   - the new code is within reach of a rel32 and the site overlaps no other
 *     span of this patch (an entry jump wins over a call at a function's
 *     first byte).
 * A site that fails any of these keeps calling the old entry, whose jump
 * still leads to the new code; it is counted as skipped.
 */
#include <stdlib.h>
#include <string.h>

#include "patch_internal.h"

static int inside_known_code(const struct hp_exe *exe, uintptr_t at, size_t len)
{
    if (at >= exe->lo && at + len <= exe->hi)
        return 1;
    for (const struct applied *p = hp_patch_top; p; p = p->prev)
        if (at >= p->text.at && at + len <= p->text.at + p->text.size)
            return 1;
    return 0;
}

/* Prefixes a direct branch may carry (bnd, branch hints / notrack, REX). */
static int branch_prefix(uint8_t b)
{
    return b == 0xf2 || b == 0x2e || b == 0x3e || (b & 0xf0) == 0x40;
}

/* `[prefixes] e8|e9 rel32` or `[prefixes] 0f 8x rel32`. */
static int branch_form(const struct hp_site_line *s)
{
    if (s->len < 5 || s->len > SPAN_MAX)
        return 0;
    size_t op = s->len - 5u; /* index of the last opcode byte */
    size_t first = op;
    if (s->bytes[op] == 0xe8 || s->bytes[op] == 0xe9)
        first = op;
    else if (op >= 1 && s->bytes[op - 1] == 0x0f && (s->bytes[op] & 0xf0) == 0x80)
        first = op - 1;
    else
        return 0;
    for (size_t i = 0; i < first; i++)
        if (!branch_prefix(s->bytes[i]))
            return 0;
    return 1;
}

static uintptr_t rel32_target(uintptr_t at, size_t len, const uint8_t *insn)
{
    int32_t rel;
    memcpy(&rel, insn + len - 4, 4);
    return at + len + (intptr_t)rel;
}

/* The checks above, except overlap; fills the span on success. */
static int make_site_span(const struct hp_site_line *s, const struct hp_exe *exe,
                          const struct redirect *r, size_t nr, struct span *out)
{
    if (s->func >= nr || !branch_form(s) || !inside_known_code(exe, s->addr, s->len))
        return -1;
    const uint8_t *now = (const uint8_t *)s->addr;
    size_t op = s->len - 4u;
    if (memcmp(now, s->bytes, op) != 0)
        return -1;
    const struct redirect *f = &r[s->func];
    uintptr_t cur = rel32_target(s->addr, s->len, now);
    if (cur != f->func && cur != hp_active_code(f->func))
        return -1;
    int64_t rel = (int64_t)f->target - (int64_t)(s->addr + s->len);
    if (rel < INT32_MIN || rel > INT32_MAX)
        return -1;
    int32_t rel32 = (int32_t)rel;
    *out = (struct span){.at = s->addr, .len = s->len, .is_site = 1, .func = s->func};
    memcpy(out->old, now, s->len);
    memcpy(out->new, now, op);
    memcpy(out->new + op, &rel32, 4);
    return 0;
}

static int by_address(const void *a, const void *b)
{
    const struct span *x = *(const struct span *const *)a, *y = *(const struct span *const *)b;
    return x->at < y->at ? -1 : x->at > y->at;
}

/* Drops every site that overlaps another span (entry jumps stay). */
static size_t drop_overlaps(struct span *spans, size_t n, size_t *skipped)
{
    struct span **order = malloc((n ? n : 1) * sizeof *order);
    if (!order) { /* cannot prove any site free of overlap: keep none */
        for (size_t i = 0; i < n; i++)
            if (spans[i].is_site)
                spans[i].len = 0;
    } else {
        for (size_t i = 0; i < n; i++)
            order[i] = &spans[i];
        qsort(order, n, sizeof *order, by_address);
        for (size_t i = 1; i < n; i++) {
            struct span *a = order[i - 1], *b = order[i];
            if (b->at < a->at + a->len) /* marked, dropped below; never an entry jump */
                (b->is_site ? b : a)->len = a->is_site || b->is_site ? 0 : a->len;
        }
        free(order);
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (spans[i].len == 0) {
            (*skipped)++;
            continue;
        }
        spans[k++] = spans[i];
    }
    return k;
}

size_t hp_sites_to_spans(const struct hp_site_line *lines, size_t nlines, const struct hp_exe *exe,
                         struct redirect *r, size_t nr, struct span *spans, size_t nspans,
                         size_t *skipped)
{
    size_t n = nspans;
    for (size_t i = 0; i < nlines; i++) {
        if (make_site_span(&lines[i], exe, r, nr, &spans[n]) == 0)
            n++;
        else
            (*skipped)++;
    }
    n = drop_overlaps(spans, n, skipped);
    for (size_t i = 0; i < nr; i++)
        r[i].nsites = 0;
    for (size_t i = 0; i < n; i++)
        if (spans[i].is_site)
            r[spans[i].func].nsites++;
    return n;
}
