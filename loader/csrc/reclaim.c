/*
 * Reclaiming the code of lazily reverted patches.
 *
 * A consistent revert frees a patch's memory at once: no frame was in it.
 * A lazy revert cannot: threads may still run in, or return into, the
 * patch's code. Such a patch is retired here instead. Every later switch
 * (apply or revert) walks every stopped thread's stack anyway; the walk
 * also probes the retired code, and after the threads run again, each
 * retired patch no frame was in is freed (arena.c hands its pages back).
 * A walk that could not finish, or guessed a frame, proves nothing: then
 * nothing is freed that time. Until then the retired code stays
 * unwindable (hp_retired_code_info), so threads in it never make a walk
 * fail.
 *
 * As with a consistent revert, a function pointer into the patch that the
 * program stored somewhere is not a frame: such a patch must not be
 * reverted at all (README, "What applying guarantees").
 */
#include <stdlib.h>
#include <string.h>

#include "patch_internal.h"

struct retired {
    char *id;
    struct hp_block text, data;
    uintptr_t eh_frame;
    size_t eh_size;
    struct retired *next;
};

static struct retired *g_retired;

void hp_retire(struct applied *a)
{
    struct retired *r = calloc(1, sizeof *r);
    if (!r) { /* cannot track it: keep it allocated for good (never reused) */
        hp_log("out of memory: patch %s's code stays allocated", a->id);
        return;
    }
    *r = (struct retired){.id = a->id, .text = a->text, .data = a->data,
                          .eh_frame = a->eh_frame, .eh_size = a->eh_size, .next = g_retired};
    a->id = NULL; /* moved */
    g_retired = r;
}

size_t hp_retired_count(void)
{
    size_t n = 0;
    for (const struct retired *r = g_retired; r; r = r->next)
        n++;
    return n;
}

size_t hp_retired_code_info(struct hp_code_info *out)
{
    size_t n = 0;
    for (const struct retired *r = g_retired; r; r = r->next, n++)
        if (out)
            out[n] = (struct hp_code_info){r->text.at, r->text.at + r->text.size, r->eh_frame,
                                           r->eh_size, r->id};
    return n;
}

int hp_reclaim_prepare(struct check *c)
{
    size_t n = hp_retired_count(), k = 0;
    c->probes = NULL;
    c->probe_hit = NULL;
    c->nprobes = 0;
    if (!n)
        return 0;
    struct busy_range *p = calloc(n, sizeof *p);
    uint8_t *hit = calloc(n, 1);
    if (!p || !hit) {
        free(p);
        free(hit);
        return -1;
    }
    for (const struct retired *r = g_retired; r; r = r->next, k++)
        p[k] = (struct busy_range){r->text.at, r->text.at + r->text.size, NULL, NULL};
    c->probes = p;
    c->probe_hit = hit;
    c->nprobes = n;
    return 0;
}

void hp_reclaim_finish(struct check *c, int walked_all)
{
    size_t k = 0, freed = 0, kept = 0;
    if (walked_all && !c->nbad && !c->nguessed)
        for (struct retired **pp = &g_retired; *pp && k < c->nprobes; k++) {
            struct retired *r = *pp;
            if (c->probe_hit[k]) {
                kept++;
                pp = &r->next;
                continue;
            }
            *pp = r->next;
            hp_log("patch %s's code at %#lx (%zu bytes) is freed: no thread is in it any more",
                   r->id, (unsigned long)r->text.at, r->text.size);
            hp_arena_free(&r->text);
            hp_arena_free(&r->data);
            free(r->id);
            free(r);
            freed++;
        }
    if (kept)
        hp_log("%zu reverted patch(es) still have threads in their code; kept for now", kept);
    free((void *)c->probes);
    free(c->probe_hit);
    c->probes = NULL;
    c->probe_hit = NULL;
    c->nprobes = 0;
    (void)freed;
}
