/*
 * Internal interfaces shared by patch.c, apply.c, revert.c, rewrite.c and
 * busy.c (the overview and the file map are in patch.c). The rest of the
 * loader sees only hp_internal.h's patch section.
 */
#ifndef HP_PATCH_INTERNAL_H
#define HP_PATCH_INTERNAL_H

#include "hp_internal.h"

#define JUMP_LEN 5
#define MAX_HITS 64      /* busy (thread, function) pairs reported */

struct redirect {
    char *name, *file;
    uintptr_t func;      /* function entry */
    uint64_t size;       /* function size */
    uintptr_t at;        /* where the jump is written (entry or entry+4) */
    uintptr_t target;    /* new code */
    uint64_t target_size;
    uint8_t saved[JUMP_LEN];
    uint8_t written[JUMP_LEN];
};

struct applied {
    char *id;
    struct redirect *r;
    size_t n;
    void *region;
    size_t region_size;
    uintptr_t eh_frame;   /* the patch's .eh_frame in the region, 0 if none */
    size_t eh_size;
    struct applied *prev; /* older patch */
};

/* ---- patch.c -------------------------------------------------------------- */
/* The newest applied patch (its prev is the next older one); read and
 * changed under hp_lock. */
extern struct applied *hp_patch_top;
void hp_free_redirects(struct redirect *r, size_t n);
/* "name (file)" for a static, "name" for a global. */
const char *hp_fn_label(const char *name, const char *file, char *buf, size_t len);

/* ---- rewrite.c ------------------------------------------------------------ */
/* Stops the world, checks, writes each r[i].written (or r[i].saved when
 * reverting `rev`), resumes; details in rewrite.c. */
int hp_rewrite(struct redirect *r, size_t n, const struct applied *rev, const struct hp_opts *o,
               char *err, size_t errlen, char *details, size_t detlen);
/* After fork: forgets the parent's /proc/self/mem descriptor. */
void hp_text_after_fork(void);

/* ---- busy.c --------------------------------------------------------------- */
/* Code no frame may be in for a consistent switch. */
struct busy_range {
    uintptr_t lo, hi;
    const char *name, *file; /* name NULL: "the patch's code" (stubs etc.) */
};

struct hit {
    pid_t tid;
    const struct busy_range *range;
};

/* State of one check, allocated before the stop. */
struct check {
    const struct busy_range *ranges;
    size_t nr;
    struct hit hits[MAX_HITS];
    size_t nhits, total_hits;
    pid_t tid;       /* thread being walked */
    int stop_on_hit; /* consistent: one hit is enough to retry */
    size_t frames;
    pid_t bad_tid;   /* first thread whose walk could not finish */
    size_t nbad, nguessed;
    char bad_why[160];
};

/* Where no frame may be (for apply: rev NULL; for revert: rev). */
struct busy_range *hp_busy_ranges(const struct redirect *r, size_t n, const struct applied *rev,
                                  size_t *nr);
/* Walks every stopped thread into c (critical section: no malloc). */
void hp_stack_check(struct hp_unwind *u, const struct hp_stopset *set, struct check *c);
/* "thread N is running old f(); ..." lines for the reply and the log. */
void hp_busy_report(const struct check *c, const char *reverting, char *details, size_t detlen);
/* Why a consistent wait gave up (from the last attempt). */
int hp_consistent_failure(const struct check *c, const char *reverting, unsigned ms, char *err,
                          size_t errlen);

#endif
