/*
 * Revert: pop the newest patch and restore exactly the bytes it overwrote
 * (rewrite.c). A consistent revert also unmaps the patch's code; a plain one
 * leaves it mapped for threads still inside it. Overview in patch.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "patch_internal.h"

int hp_revert_locked(const struct hp_opts *o, char *msg, size_t msglen, char *details,
                     size_t detlen)
{
    struct applied *a = hp_patch_top;
    if (!a)
        return hp_fail(msg, msglen, "no patch applied");
    for (size_t i = 0; i < a->n; i++)
        if (memcmp((const void *)a->r[i].at, a->r[i].written, JUMP_LEN) != 0) {
            hp_fail(msg, msglen, "cannot revert %s: the jump in %s was modified by someone else",
                    a->id, a->r[i].name);
            hp_log("%s", msg);
            return -1;
        }
    if (hp_rewrite(a->r, a->n, a, o, msg, msglen, details, detlen)) {
        hp_log("revert failed: %s", msg);
        return -1;
    }
    hp_patch_top = a->prev;
    if (o->consistent) {
        /* No frame was in the patch's code when the old entries came back,
         * and nothing jumps there any more: it can go. (A pointer the patch
         * code handed out to its own functions or data would dangle; such a
         * patch must be reverted without --consistent.) */
        munmap(a->region, a->region_size);
        hp_log("reverted %s consistently; its code at %p (%zu bytes) is unmapped", a->id,
               a->region, a->region_size);
        snprintf(msg, msglen, "reverted %s (consistent: its code is unmapped)", a->id);
    } else {
        /* A thread may still run in the new code, or return into it. */
        hp_log("reverted %s; its code stays mapped at %p (%zu bytes) in case a thread is still "
               "inside it",
               a->id, a->region, a->region_size);
        snprintf(msg, msglen, "reverted %s", a->id);
    }
    hp_free_redirects(a->r, a->n);
    free(a->id);
    free(a);
    return 0;
}
