/*
 * Revert: pop the newest patch and restore exactly the bytes it overwrote,
 * entry jumps and call sites alike (switch.c). A consistent revert also
 * frees the patch's code; a lazy one retires it until no thread is inside
 * (reclaim.c). Overview in patch.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "patch_internal.h"

/* consistent: no frame is in the patch's code, it is freed now; else it
 * is retired until a later switch finds no thread in it (reclaim.c). */
static void drop(struct applied *a, int consistent)
{
    if (consistent) {
        hp_arena_free(&a->text);
        hp_arena_free(&a->data);
    } else {
        hp_retire(a);
    }
    hp_callbacks_free(&a->cb);
    hp_free_redirects(a->r, a->n);
    free(a->spans);
    hp_unrecord(a);
}

/* The newest patch's entries: one per object it patched (newest first). */
static size_t newest_group(struct applied **g, size_t cap)
{
    size_t n = 0;
    for (struct applied *p = hp_patch_top; p && n < cap; p = p->prev) {
        g[n++] = p;
        if (!p->with_prev)
            break;
    }
    return n;
}

/* Runs one kind of callbacks of the first n entries (for pre-revert: stops
 * at the first that refuses, and returns how many ran). */
static size_t run_callbacks(struct applied **g, size_t n, int kind, char *msg, size_t msglen)
{
    for (size_t k = 0; k < n; k++)
        if (hp_callbacks_run(&g[k]->cb, kind, g[k]->id, msg, msglen))
            return k;
    return n;
}

/* Every entry's spans, redirects and busy ranges (its functions' new code,
 * and all of its code) joined for one switch. */
static int join_group(struct applied **g, size_t n, struct hp_parts *parts)
{
    for (size_t k = 0; k < n; k++) {
        size_t nranges = 0;
        struct busy_range *ranges = hp_busy_ranges(g[k]->r, g[k]->n, g[k], &nranges);
        int rc = ranges ? hp_parts_add(parts, g[k]->r, g[k]->n, g[k]->spans, g[k]->nspans,
                                       ranges, nranges)
                        : -1;
        free(ranges);
        if (rc)
            return -1;
    }
    return 0;
}

int hp_revert_locked(const struct hp_opts *o, char *msg, size_t msglen, char *details,
                     size_t detlen)
{
    struct applied *g[HP_MAX_TARGETS];
    size_t n = newest_group(g, HP_MAX_TARGETS);
    if (!n)
        return hp_fail(msg, msglen, "no patch applied");
    struct applied *a = g[0];
    size_t ran = run_callbacks(g, n, HP_CB_PRE_REVERT, msg, msglen);
    if (ran < n) {
        hp_log("revert failed: %s", msg);
        run_callbacks(g, ran, HP_CB_POST_APPLY, NULL, 0); /* undo the ones that ran */
        return -1;
    }
    struct hp_parts parts = {0};
    if (join_group(g, n, &parts)) {
        hp_parts_free(&parts);
        run_callbacks(g, n, HP_CB_POST_APPLY, NULL, 0);
        return hp_fail(msg, msglen, "out of memory");
    }
    struct hp_switch sw = {.r = parts.r, .nr = parts.nr, .spans = parts.spans,
                           .nspans = parts.nspans, .restoring = 1, .ranges = parts.ranges,
                           .nranges = parts.nranges, .reverting = a->id, .opts = o};
    int rc = hp_switch(&sw, msg, msglen, details, detlen);
    hp_parts_free(&parts);
    if (rc) {
        hp_log("revert failed: %s", msg);
        /* The patch stays: undo what its pre-revert callbacks did. */
        run_callbacks(g, n, HP_CB_POST_APPLY, NULL, 0);
        return -1;
    }
    hp_patch_top = g[n - 1]->prev;
    run_callbacks(g, n, HP_CB_POST_REVERT, NULL, 0);
    if (o->consistent) {
        /* No frame was in the patch's code when the old bytes came back,
         * and nothing jumps there any more: it can go. (A pointer the patch
         * code handed out to its own functions or data would dangle; such a
         * patch must be reverted with --lazy.) */
        for (size_t k = 0; k < n; k++)
            hp_log("reverted %s consistently; its code at %#lx (%zu bytes) is freed", a->id,
                   (unsigned long)g[k]->text.at, g[k]->text.size);
        snprintf(msg, msglen, "reverted %s (consistent: its code is freed)", a->id);
    } else {
        /* A thread may still run in the new code, or return into it. */
        for (size_t k = 0; k < n; k++)
            hp_log("reverted %s; its code at %#lx (%zu bytes) is freed by a later apply or "
                   "revert that finds no thread in it",
                   a->id, (unsigned long)g[k]->text.at, g[k]->text.size);
        snprintf(msg, msglen, "reverted %s", a->id);
    }
    for (size_t k = 0; k < n; k++)
        drop(g[k], o->consistent);
    return 0;
}
