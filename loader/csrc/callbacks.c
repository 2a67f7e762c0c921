/*
 * Patch callbacks (hotpatch.h: HOTPATCH_PRE_APPLY(fn) and friends).
 *
 * A patch that must migrate data, or refuse to go live in some state, adds
 * callbacks to its source; each macro puts a pointer to an `int fn(void)`
 * in a section of its own (format: HP_CB_*_SECTION). After linking, the
 * loader reads the relocated pointers and checks each points into the
 * patch's own code. They run in the listener thread, outside the stopped
 * window, under the loader's lock (a callback must not apply or revert):
 *
 *   pre-apply    before the switch; non-zero cancels the apply (nothing
 *                was changed)
 *   post-apply   right after the switch, threads running the new code
 *   pre-revert   before a revert's switch; non-zero cancels the revert
 *                (and a revert that then fails runs the post-apply ones:
 *                the patch stays, undo what pre-revert did)
 *   post-revert  right after a revert's switch (or after a failed apply
 *                whose pre-apply callbacks ran: undo what they did)
 */
#include <stdlib.h>
#include <string.h>

#include "patch_internal.h"

static const char *const SECTION[HP_CB_KINDS] = {
    HP_CB_PRE_APPLY_SECTION, HP_CB_POST_APPLY_SECTION, HP_CB_PRE_REVERT_SECTION,
    HP_CB_POST_REVERT_SECTION};
static const char *const KIND[HP_CB_KINDS] = {"pre-apply", "post-apply", "pre-revert",
                                             "post-revert"};

int hp_callbacks_collect(const struct hp_patchobj *po, const struct hp_linked *l,
                         struct hp_callbacks *cb, char *err, size_t errlen)
{
    memset(cb, 0, sizeof *cb);
    for (int k = 0; k < HP_CB_KINDS; k++)
        for (size_t i = 1; i < po->nsh; i++) {
            if (!l->sec_addr[i] || strcmp(hp_po_secname(po, i), SECTION[k]) != 0)
                continue;
            size_t n = po->sh[i].sh_size / sizeof(uintptr_t);
            uintptr_t *grown = realloc(cb->fn[k], (cb->n[k] + n + 1) * sizeof *grown);
            if (!grown) {
                hp_callbacks_free(cb);
                return hp_fail(err, errlen, "out of memory");
            }
            cb->fn[k] = grown;
            for (size_t j = 0; j < n; j++) {
                uintptr_t fn;
                memcpy(&fn, (const void *)(l->sec_addr[i] + j * sizeof fn), sizeof fn);
                if (fn < l->text.at || fn >= l->text.at + l->text.size) {
                    hp_callbacks_free(cb);
                    return hp_fail(err, errlen,
                                   "%s callback %zu of section %s points outside the patch's "
                                   "code (%#lx)",
                                   KIND[k], j, SECTION[k], (unsigned long)fn);
                }
                cb->fn[k][cb->n[k]++] = fn;
            }
        }
    return 0;
}

int hp_callbacks_run(const struct hp_callbacks *cb, int kind, const char *patch_id, char *err,
                     size_t errlen)
{
    for (size_t i = 0; i < cb->n[kind]; i++) {
        int (*fn)(void) = (int (*)(void))cb->fn[kind][i];
        int rc = fn();
        hp_log("patch %s: %s callback %zu returned %d", patch_id, KIND[kind], i, rc);
        if (rc != 0 && (kind == HP_CB_PRE_APPLY || kind == HP_CB_PRE_REVERT))
            return hp_fail(err, errlen, "patch %s: its %s callback returned %d, so the %s was "
                                        "cancelled; nothing was changed",
                           patch_id, KIND[kind], rc,
                           kind == HP_CB_PRE_APPLY ? "apply" : "revert");
    }
    return 0;
}

void hp_callbacks_free(struct hp_callbacks *cb)
{
    for (int k = 0; k < HP_CB_KINDS; k++) {
        free(cb->fn[k]);
        cb->fn[k] = NULL;
        cb->n[k] = 0;
    }
}
