/*
 * hotpatch.h — the in-process live-patch loader (libhotpatch.a).
 *
 * Link it into the program you want to patch later:
 *
 *     cc ... -Wl,--whole-archive libhotpatch.a -Wl,--no-whole-archive -lpthread
 *
 * (--whole-archive is needed because the program calls nothing: the loader
 * starts itself from a constructor.) Keep the executable's symbol table
 * (do not strip it): patches name the functions and statics they replace.
 *
 * At start-up the loader spawns one thread that listens on the abstract Unix
 * socket "\0hotpatch.<pid>"; `hpctl apply|revert|list <pid>` talks to it.
 * Only the process owner (same effective uid) or root may connect.
 *
 * Environment:
 *   HOTPATCH_DISABLE=1     do not start the listener (the C API still works)
 *   HOTPATCH_LOG=stderr    log to stderr; HOTPATCH_LOG=/path logs to that file;
 *                          default $TMPDIR/hotpatch-<uid>/<pid>.log. Never stdout.
 *   HOTPATCH_SIGNAL=N      signal the loader stops threads with when hpctl
 *                          cannot (the C API below, a process under a
 *                          debugger); default SIGRTMIN+5. A thread that keeps
 *                          it blocked makes such an apply fail at once.
 *
 * Side effect on the program: while a patch is applied or reverted every other
 * thread is briefly stopped. hpctl stops them with ptrace, which restarts
 * nanosleep, poll and select transparently (epoll_wait may return EINTR, as
 * after any stop); the loader's own signal stop makes blocking calls that
 * Linux never restarts after a handler return EINTR once.
 *
 * The functions below let a program drive the loader itself. They are
 * thread-safe (serialised with the socket listener). Each returns 0 on
 * success and -1 on failure; `err` (if non-NULL, `errlen` bytes) receives a
 * one-line, NUL-terminated reason on failure, or the summary line on success.
 */
#ifndef HOTPATCH_H
#define HOTPATCH_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Reads a patch object (patch format v1, e.g. made by `hpbuild`) from `path`
 * and applies it. Success message: "applied <id>: <n> functions". */
int hotpatch_apply_file(const char *path, char *err, size_t errlen);

/* Same, from `size` bytes in memory (the loader makes its own copy). */
int hotpatch_apply_mem(const void *data, size_t size, char *err, size_t errlen);

/* Reverts the most recently applied patch ("reverted <id>"). Fails with
 * "no patch applied" if there is none. The patch's code is freed by a later
 * apply or revert that finds no thread in it. */
int hotpatch_revert(char *err, size_t errlen);

/* Writes one line per applied patch, oldest first: "<id> <function> ...\n",
 * NUL-terminated, truncated to `buflen`. Returns the number of applied
 * patches. */
int hotpatch_list(char *buf, size_t buflen);

/* ---- For the code of a patch: data migration --------------------------------
 *
 * A fix that needs a new field in a struct whose objects already exist in the
 * running program cannot change the struct (hpbuild refuses a layout change):
 * attach the field to each object as a shadow variable instead, keyed by the
 * object's address and an id of your choice. Shadows are zero-initialised,
 * thread-safe, and outlive the patch unless a post-revert callback frees
 * them. Example (the fix counts errors per connection):
 *
 *     #define CONN_ERRORS 0x636f6e6e  // any id unique to this field
 *     int *errors = hotpatch_shadow_get_or_alloc(conn, CONN_ERRORS, sizeof *errors);
 *     if (errors) (*errors)++;
 *     ...
 *     hotpatch_shadow_free(conn, CONN_ERRORS);        // where conn is freed
 */
/* The shadow `id` of `obj`, or NULL if there is none. */
void *hotpatch_shadow_get(const void *obj, unsigned long id);
/* The shadow `id` of `obj`, allocated (`size` zero bytes, 16-byte aligned)
 * if there is none yet; NULL only when out of memory. */
void *hotpatch_shadow_get_or_alloc(const void *obj, unsigned long id, size_t size);
/* Frees the shadow `id` of `obj` (if any). */
void hotpatch_shadow_free(const void *obj, unsigned long id);
/* Frees the shadow `id` of every object; returns how many there were. */
size_t hotpatch_shadow_free_all(unsigned long id);

/* ---- For the code of a patch: callbacks --------------------------------------
 *
 * Write `HOTPATCH_PRE_APPLY(fn);` (at file scope, fn an `int fn(void)` of the
 * patched source) and the loader calls fn before the switch: a non-zero
 * return cancels the apply and nothing is changed. POST_APPLY runs right
 * after the switch, PRE_REVERT before a revert (non-zero cancels it),
 * POST_REVERT right after one. Use them to migrate or convert state, to
 * refuse to go live in a state the fix cannot handle, and to free shadows.
 * They run in the loader's thread while the program's threads run, and
 * must not apply or revert patches themselves. If an apply fails after its
 * pre-apply callbacks all succeeded, its post-revert callbacks run (undo);
 * if a revert fails after its pre-revert callbacks succeeded, its
 * post-apply callbacks run.
 * The section names are part of the patch format (format/src/layout.rs).
 */
#define HOTPATCH_CALLBACK_(kind, fn)                                                       \
    static int (*const hotpatch_##kind##_##fn)(void)                                       \
        __attribute__((used, section(".hotpatch." #kind))) = fn
#define HOTPATCH_PRE_APPLY(fn) HOTPATCH_CALLBACK_(pre_apply, fn)
#define HOTPATCH_POST_APPLY(fn) HOTPATCH_CALLBACK_(post_apply, fn)
#define HOTPATCH_PRE_REVERT(fn) HOTPATCH_CALLBACK_(pre_revert, fn)
#define HOTPATCH_POST_REVERT(fn) HOTPATCH_CALLBACK_(post_revert, fn)

#ifdef __cplusplus
}
#endif

#endif
