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
    free(a->defs);
    free(a->id);
    free(a);
}

int hp_revert_locked(const struct hp_opts *o, char *msg, size_t msglen, char *details,
                     size_t detlen)
{
    struct applied *a = hp_patch_top;
    if (!a)
        return hp_fail(msg, msglen, "no patch applied");
    if (hp_callbacks_run(&a->cb, HP_CB_PRE_REVERT, a->id, msg, msglen)) {
        hp_log("revert failed: %s", msg);
        return -1;
    }
    size_t nranges = 0;
    struct busy_range *ranges = hp_busy_ranges(a->r, a->n, a, &nranges);
    if (!ranges)
        return hp_fail(msg, msglen, "out of memory");
    struct hp_switch sw = {.r = a->r, .nr = a->n, .spans = a->spans, .nspans = a->nspans,
                           .restoring = 1, .ranges = ranges, .nranges = nranges,
                           .reverting = a->id, .opts = o};
    int rc = hp_switch(&sw, msg, msglen, details, detlen);
    free(ranges);
    if (rc) {
        hp_log("revert failed: %s", msg);
        /* The patch stays: undo what its pre-revert callbacks did. */
        hp_callbacks_run(&a->cb, HP_CB_POST_APPLY, a->id, NULL, 0);
        return -1;
    }
    hp_patch_top = a->prev;
    hp_callbacks_run(&a->cb, HP_CB_POST_REVERT, a->id, NULL, 0);
    if (o->consistent) {
        /* No frame was in the patch's code when the old bytes came back,
         * and nothing jumps there any more: it can go. (A pointer the patch
         * code handed out to its own functions or data would dangle; such a
         * patch must be reverted with --lazy.) */
        hp_log("reverted %s consistently; its code at %#lx (%zu bytes) is freed", a->id,
               (unsigned long)a->text.at, a->text.size);
        snprintf(msg, msglen, "reverted %s (consistent: its code is freed)", a->id);
    } else {
        /* A thread may still run in the new code, or return into it. */
        hp_log("reverted %s; its code at %#lx (%zu bytes) is freed by a later apply or revert "
               "that finds no thread in it",
               a->id, (unsigned long)a->text.at, a->text.size);
        snprintf(msg, msglen, "reverted %s", a->id);
    }
    drop(a, o->consistent);
    return 0;
}
