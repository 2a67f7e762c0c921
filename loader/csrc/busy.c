/*
 * The stack check policy (step 4 of the switch protocol in switch.c) and
 * its messages: which frames count as busy, who is still running what, and
 * why a consistent wait gave up.
 *
 * A frame — the interrupted pc or a return address minus one — is busy when
 * it lies in a replaced function's whole original code, or in the code an
 * older patch runs for it; on revert, anywhere in the reverted patch's
 * region.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "patch_internal.h"

/* ---- the stack check ---------------------------------------------------- */

static int frame_cb(void *arg, uintptr_t pc, unsigned depth)
{
    struct check *c = arg;
    (void)depth;
    c->frames++;
    for (size_t k = 0; k < c->nprobes; k++) /* never busy: only not reclaimable */
        if (pc >= c->probes[k].lo && pc < c->probes[k].hi)
            c->probe_hit[k] = 1;
    for (size_t k = 0; k < c->nr; k++) {
        const struct busy_range *b = &c->ranges[k];
        if (pc < b->lo || pc >= b->hi)
            continue;
        size_t h;
        for (h = 0; h < c->nhits; h++) /* once per (thread, function) */
            if (c->hits[h].tid == c->tid && c->hits[h].range->name == b->name)
                break;
        if (h == c->nhits) {
            c->total_hits++;
            if (c->nhits < MAX_HITS)
                c->hits[c->nhits++] = (struct hit){c->tid, b};
        }
        return c->stop_on_hit;
    }
    return 0;
}

/* Walks every stopped thread. Runs in the critical section: no malloc. */
void hp_stack_check(struct hp_unwind *u, const struct hp_stopset *set, struct check *c)
{
    c->nhits = c->total_hits = c->frames = c->nbad = c->nguessed = 0;
    c->bad_tid = 0;
    for (size_t i = 0; i < set->n; i++) {
        char why[160];
        c->tid = set->threads[i].tid;
        int rc = hp_unwind_walk(u, set->threads[i].regs, frame_cb, c, why, sizeof why);
        if (rc == HP_WALK_INCOMPLETE && c->nbad++ == 0) {
            c->bad_tid = c->tid;
            memcpy(c->bad_why, why, sizeof why);
        }
        if (rc == HP_WALK_GUESSED)
            c->nguessed++;
    }
}

static const char *fmt_ms(unsigned ms, char *buf, size_t len)
{
    if (ms % 1000 == 0)
        snprintf(buf, len, "%u s", ms / 1000);
    else
        snprintf(buf, len, "%u ms", ms);
    return buf;
}

static void append(char *buf, size_t len, size_t *used, const char *fmt, ...) HP_PRINTF(4, 5);
static void append(char *buf, size_t len, size_t *used, const char *fmt, ...)
{
    if (!buf || *used >= len)
        return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(buf + *used, len - *used, fmt, ap);
    va_end(ap);
    if (w > 0)
        *used = *used + (size_t)w < len ? *used + (size_t)w : len - 1;
}

/* "serve_conn() (main.c)": the call, then the file of a static function
 * (the parentheses belong to the name, not to the file). */
static const char *call_label(const struct busy_range *b, char *buf, size_t len)
{
    if (b->file && *b->file)
        snprintf(buf, len, "%s() (%s)", b->name, b->file);
    else
        snprintf(buf, len, "%s()", b->name);
    return buf;
}

/* "thread N is running old f(); ..." lines for the reply and the log. */
void hp_busy_report(const struct check *c, const char *reverting, char *details, size_t detlen)
{
    size_t used = 0;
    char line[800], label[600];
    if (details && detlen)
        details[0] = 0;
    for (size_t h = 0; h < c->nhits; h++) {
        const struct busy_range *b = c->hits[h].range;
        if (!reverting)
            snprintf(line, sizeof line, "thread %d is running old %s; it finishes in the old code",
                     (int)c->hits[h].tid, call_label(b, label, sizeof label));
        else if (b->name)
            snprintf(line, sizeof line,
                     "thread %d is running patch %s's %s; it finishes in the patch's code, "
                     "which is freed once no thread is in it",
                     (int)c->hits[h].tid, reverting, call_label(b, label, sizeof label));
        else
            snprintf(line, sizeof line,
                     "thread %d is inside patch %s's code; it finishes there (the code is "
                     "freed once no thread is in it)",
                     (int)c->hits[h].tid, reverting);
        hp_log("  %s", line);
        append(details, detlen, &used, "%s\n", line);
    }
    if (c->total_hits > c->nhits)
        append(details, detlen, &used, "(%zu more)\n", c->total_hits - c->nhits);
    if (c->nbad) {
        snprintf(line, sizeof line,
                 "thread %d: stack walk stopped early (%s); its deeper frames were not checked%s",
                 (int)c->bad_tid, c->bad_why, c->nbad > 1 ? " (and other threads)" : "");
        hp_log("  %s", line);
        append(details, detlen, &used, "%s\n", line);
    }
}

/* Why a consistent wait gave up (from the last attempt). */
int hp_consistent_failure(const struct check *c, const char *reverting, unsigned ms, char *err,
                          size_t errlen)
{
    char t[32], label[600];
    fmt_ms(ms, t, sizeof t);
    if (c->nhits) {
        const struct busy_range *b = c->hits[0].range;
        if (!reverting)
            return hp_fail(err, errlen,
                           "function %s is on the stack of thread %d (it never returned within "
                           "%s): it cannot switch consistently; apply with --lazy to switch "
                           "future calls only",
                           hp_fn_label(b->name, b->file, label, sizeof label),
                           (int)c->hits[0].tid, t);
        return hp_fail(err, errlen,
                       "patch %s's %s is on the stack of thread %d (it never returned within "
                       "%s): it cannot be removed consistently; revert with --lazy to restore "
                       "the old code for future calls (the patch's code is freed once no thread is in it)",
                       reverting,
                       b->name ? call_label(b, label, sizeof label) : "code",
                       (int)c->hits[0].tid, t);
    }
    return hp_fail(err, errlen,
                   "the stack of thread %d could not be walked within %s (%s): consistency "
                   "cannot be proven; %s with --lazy to switch future calls only",
                   (int)c->bad_tid, t, c->bad_why, reverting ? "revert" : "apply");
}

/* Where no frame may be: applying, each replaced function's whole original
 * code plus the code older patches run for it; reverting `rev`, its code. */
struct busy_range *hp_busy_ranges(const struct redirect *r, size_t n, const struct applied *rev,
                                  size_t *nr)
{
    size_t cap = 2 * n + 1, k = 0;
    for (const struct applied *p = hp_patch_top; p; p = p->prev)
        cap += p->n;
    struct busy_range *b = calloc(cap, sizeof *b);
    if (!b)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (rev) {
            b[k++] = (struct busy_range){r[i].target, r[i].target + r[i].target_size, r[i].name,
                                         r[i].file};
            continue;
        }
        b[k++] = (struct busy_range){r[i].func, r[i].func + r[i].size, r[i].name, r[i].file};
        for (const struct applied *p = hp_patch_top; p; p = p->prev)
            for (size_t j = 0; j < p->n; j++)
                if (p->r[j].func == r[i].func)
                    b[k++] = (struct busy_range){p->r[j].target,
                                                 p->r[j].target + p->r[j].target_size, r[i].name,
                                                 r[i].file};
    }
    if (rev) /* stubs, and anything between the functions */
        b[k++] = (struct busy_range){rev->text.at, rev->text.at + rev->text.size, NULL, NULL};
    *nr = k;
    return b;
}
