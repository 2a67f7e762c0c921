/*
 * Internal interfaces shared by patch.c, apply.c, revert.c, sites.c,
 * switch.c, client.c and busy.c (the overview is in patch.c; the switch
 * protocol is written out once, above hp_switch in switch.c). The rest of
 * the loader sees only hp_internal.h's patch section.
 */
#ifndef HP_PATCH_INTERNAL_H
#define HP_PATCH_INTERNAL_H

#include "hp_internal.h"

#define JUMP_LEN 5
#define SPAN_MAX 8       /* longest span: a 6-byte jcc rel32 */
#define MAX_HITS 64      /* busy (thread, function) pairs reported */

/* Bytes of the running code one patch rewrites: the entry jump of a
 * replaced function, or the rel32 of one direct call/jmp/jcc to it. */
struct span {
    uintptr_t at;
    uint8_t len;
    uint8_t is_site;     /* 0: entry jump, 1: call site */
    uint32_t func;       /* index of the redirect it serves */
    uint8_t old[SPAN_MAX]; /* what was there (restored on revert) */
    uint8_t new[SPAN_MAX]; /* what the patch puts there */
};

/* One replaced function. An apply allocates all of a patch's redirects
 * and their names in one block (hp_free_redirects frees it). */
struct redirect {
    char *name, *file;   /* in the block, after the array */
    uintptr_t func;      /* function entry */
    uint64_t size;       /* function size */
    uintptr_t target;    /* new code */
    uintptr_t chain_at;  /* a second entry jump, or 0: in the replaced code of
                          * the patch below (its own direct calls go there) */
    uint64_t target_size;
    size_t nsites;       /* call sites redirected straight to target */
};

/* A patch's callbacks (callbacks.c), by kind. */
enum { HP_CB_PRE_APPLY, HP_CB_POST_APPLY, HP_CB_PRE_REVERT, HP_CB_POST_REVERT, HP_CB_KINDS };
struct hp_callbacks {
    uintptr_t *fn[HP_CB_KINDS];
    size_t n[HP_CB_KINDS];
};

/* A symbol a patch defines (patchdefs.c). */
struct patch_def {
    const char *name, *file; /* file: "" for a global */
    uintptr_t addr;
    uint64_t size;
    unsigned char type;      /* STT_FUNC or STT_OBJECT */
};

struct applied {
    char *id;
    char *target;        /* the object it patched: "" the executable, or a library */
    uintptr_t obj_lo;    /* that object's start (hp_exe.lo): the same object
                          * whatever name a patch gave it */
    int with_prev;       /* the same apply patched prev's object too (a patch for
                          * several outputs): they are reverted together */
    struct redirect *r;
    size_t n;
    struct span *spans;  /* entry jumps (span i for r[i]), chained entry
                          * jumps (r[i].chain_at), then call sites */
    size_t nspans;
    int call_sites;      /* applied with --redirect call-site */
    struct hp_block text, data; /* its code and data in the arena */
    uintptr_t eh_frame;   /* the patch's .eh_frame in the region, 0 if none */
    size_t eh_size;
    struct hp_callbacks cb;  /* its pre/post revert callbacks run on revert */
    struct patch_def *defs; /* what it defines, names in the same block */
    size_t ndefs;
    struct applied *prev; /* older patch */
};

/* ---- patch.c -------------------------------------------------------------- */
/* Frees what record() allocated for an entry, not the code, redirects and
 * spans it took over (apply.c, when recording several objects fails). */
void hp_unrecord(struct applied *a);
/* Several objects' redirects, spans and busy ranges joined for one switch:
 * a patch for several outputs switches them all at once. */
struct hp_parts {
    struct redirect *r;
    size_t nr;
    struct span *spans;
    size_t nspans;
    struct busy_range *ranges;
    size_t nranges;
};
/* Appends one object's parts (its spans' function indexes shifted past the
 * redirects already there). -1: out of memory. */
int hp_parts_add(struct hp_parts *j, const struct redirect *r, size_t nr, const struct span *s,
                 size_t ns, const struct busy_range *b, size_t nb);
void hp_parts_free(struct hp_parts *j);
/* The newest applied patch (its prev is the next older one); read and
 * changed under hp_lock. */
extern struct applied *hp_patch_top;
void hp_free_redirects(struct redirect *r, size_t n);
/* "name (file)" for a static, "name" for a global. */
const char *hp_fn_label(const char *name, const char *file, char *buf, size_t len);
/* What the applied patches overwrote, for reading the original code under
 * their spans: per patch, newest first, its spans sorted by address.
 * Built under hp_lock and valid until the stack changes. */
struct hp_saved {
    const struct span **by_addr; /* patch g's spans: [first[g], first[g + 1]) */
    size_t *first;
    size_t npatches;
};
int hp_saved_build(struct hp_saved *s); /* -1: out of memory */
void hp_saved_free(struct hp_saved *s);
/* The len bytes at addr before any applied patch rewrote them (where two
 * patches saved the same byte, the oldest save wins). */
void hp_original_bytes(const struct hp_saved *s, uintptr_t addr, size_t len, uint8_t *out);
/* The code that runs today when `func` (an executable entry) is called:
 * the newest applied patch's target for it, or func itself. */
uintptr_t hp_active_code(uintptr_t func);
/* The newest applied patch's redirect of func (and that patch's id), or
 * NULL when func's own code runs. */
const struct redirect *hp_active_redirect(uintptr_t func, const char **patch_id);
/* The code of every applied patch, for the unwinder (malloc'ed array). */
int hp_patch_code_info(struct hp_code_info **out, size_t *n);

/* ---- patchdefs.c: what applied patches define ----------------------------- */
/* The defined functions and data of a linked patch (one malloc'ed block). */
struct patch_def *hp_defs_collect(const struct hp_patchobj *po, const struct hp_linked *l,
                                  size_t *n);
/* Bytes from addr (in an applied patch's region) to the next symbol that
 * patch defines or its region's end; 0 outside every patch. Like
 * hp_exe_room, for a tiny function a patch added. */
uint64_t hp_patch_room(uintptr_t addr);

/* ---- client.c: the conversation with hpctl (protocol.rs) ------------------ */
struct hp_client {
    int fd;
    int can_stop;        /* the request said CLIENTSTOP and no NOSTOP came */
    char buf[8192];      /* line buffer: no malloc while threads are stopped */
    size_t have, pos;
    char nostop[160];    /* why the client could not stop (for the log) */
};
/* Asks the client to stop every thread but the caller; fills set->threads
 * from buf (cap entries). Returns 0 stopped, 1 the client cannot (NOSTOP:
 * use the signal), -1 the conversation failed (threads may run: write
 * nothing). No malloc, no stdio: callable from the switch. */
int hp_client_stop(struct hp_client *c, struct hp_stopset *set, struct hp_thread *buf, size_t cap);
/* Has the client closed its end (timed out, killed)? Then nothing may be
 * changed on its behalf: it can no longer learn the outcome. */
int hp_client_gone(const struct hp_client *c);
/* RESUME / RESUMED. */
int hp_client_resume(struct hp_client *c);
/* TARGETS / SITES (before the stop): the call sites of the replaced
 * functions of `exe` (the executable or a library: its load bias goes with
 * them), as spans checked against the running bytes (sites.c). */
struct hp_site_line {
    uintptr_t addr;
    uint32_t func;
    uint8_t len;
    uint8_t bytes[SPAN_MAX];
};
int hp_client_sites(struct hp_client *c, const struct hp_exe *exe, const struct redirect *r,
                    size_t n, struct hp_site_line **out, size_t *nout, char *err, size_t errlen);

/* ---- sites.c -------------------------------------------------------------- */
/* Turns the client's site lines into spans that redirect each call straight
 * to its function's new code; a line whose bytes do not match the running
 * code, that overlaps another span, or that is out of reach is skipped
 * (counted in *skipped). Appends to spans (capacity checked by caller). */
size_t hp_sites_to_spans(const struct hp_site_line *lines, size_t nlines, const struct hp_exe *exe,
                         struct redirect *r, size_t nr, struct span *spans, size_t nspans,
                         size_t *skipped);

/* ---- switch.c ------------------------------------------------------------- */
/* Where no frame may be for a consistent switch. */
struct busy_range {
    uintptr_t lo, hi;
    const char *name, *file; /* name NULL: "the patch's code" (stubs etc.) */
};

/* One switch: the spans to write (new bytes, or old ones when restoring),
 * the ranges no frame may be in, and how to go about it. */
struct hp_switch {
    const struct redirect *r;   /* the functions (span.func indexes them) */
    size_t nr;
    struct span *spans;
    size_t nspans;
    int restoring;              /* write span.old (revert) instead of span.new */
    const struct busy_range *ranges;
    size_t nranges;
    const char *reverting;      /* the patch id when reverting, else NULL */
    const struct hp_opts *opts;
};
/* Carries out the switch protocol (switch.c). msg: the one-line error;
 * details (may be NULL): extra reply lines. */
int hp_switch(const struct hp_switch *sw, char *err, size_t errlen, char *details, size_t detlen);
/* After fork: forgets the parent's /proc/self/mem descriptor. */
void hp_text_after_fork(void);

/* ---- busy.c --------------------------------------------------------------- */
struct hit {
    pid_t tid;
    const struct busy_range *range;
};

/* State of one stack check, allocated before the stop. */
struct check {
    const struct busy_range *ranges;
    size_t nr;
    struct hit hits[MAX_HITS];
    size_t nhits, total_hits;
    pid_t tid;       /* thread being walked */
    int stop_on_hit; /* consistent: one hit is enough to retry */
    size_t frames;
    const struct busy_range *probes; /* retired patches' code (reclaim.c) */
    uint8_t *probe_hit;              /* per probe: a frame was in it */
    size_t nprobes;
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

/* ---- callbacks.c ----------------------------------------------------------- */
/* The callbacks of a linked patch (each must point into its code). */
int hp_callbacks_collect(const struct hp_patchobj *po, const struct hp_linked *l,
                         struct hp_callbacks *cb, char *err, size_t errlen);
/* Runs the callbacks of one kind in order; a pre-* callback returning
 * non-zero stops there and fails (the reason in err). */
int hp_callbacks_run(const struct hp_callbacks *cb, int kind, const char *patch_id, char *err,
                     size_t errlen);
void hp_callbacks_free(struct hp_callbacks *cb);

/* ---- reclaim.c: code of lazily reverted patches -------------------------- */
/* Takes over a lazily reverted patch's memory and id (a->id becomes NULL). */
void hp_retire(struct applied *a);
/* The retired patches' code, for the unwinder: fills out (when non-NULL)
 * and returns how many there are. */
size_t hp_retired_code_info(struct hp_code_info *out);
/* Before a switch: probe ranges for the retired code (-1: out of memory,
 * then nothing is reclaimed this time). */
int hp_reclaim_prepare(struct check *c);
/* After a switch whose stack check walked every thread to the end
 * (walked_all): frees the retired code no frame was in; frees the probes. */
void hp_reclaim_finish(struct check *c, int walked_all);

#endif
