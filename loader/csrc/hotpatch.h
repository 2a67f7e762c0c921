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
 *                          default /tmp/hotpatch.<pid>.log. Never stdout.
 *   HOTPATCH_SIGNAL=N      signal used to stop threads while code is rewritten
 *                          (default SIGRTMIN+5). The program must not block it
 *                          in any thread, or applying a patch fails after 2 s.
 *
 * Side effect on the program: while a patch is applied or reverted every other
 * thread is briefly stopped from a signal handler. Blocking system calls that
 * Linux never restarts after a handler (nanosleep, clock_nanosleep, poll,
 * epoll_wait, select, ...) then return EINTR in those threads; calls that are
 * restartable (read, write, accept, ...) are restarted (SA_RESTART).
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
 * "no patch applied" if there is none. The patch's code stays mapped, since a
 * thread may still be running in it. */
int hotpatch_revert(char *err, size_t errlen);

/* Writes one line per applied patch, oldest first: "<id> <function> ...\n",
 * NUL-terminated, truncated to `buflen`. Returns the number of applied
 * patches. */
int hotpatch_list(char *buf, size_t buflen);

#ifdef __cplusplus
}
#endif

#endif
