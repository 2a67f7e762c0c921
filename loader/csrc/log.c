/*
 * Logging. The loader runs inside somebody else's program, whose stdout is
 * its own business (tests and pipelines read it), so we never write there:
 * default /tmp/hotpatch.<pid>.log, HOTPATCH_LOG=stderr, or HOTPATCH_LOG=path.
 *
 * Messages are formatted into a stack buffer and written with one write(2),
 * without stdio (no FILE locks shared with the program). Each line starts
 * with "[hotpatch PID SECONDS.MICROSECONDS]" (wall clock; `cargo xtask
 * bench` measures the loader's time between two lines).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hp_internal.h"

static int g_log_fd = -1;

void hp_log_init(void)
{
    const char *where = getenv("HOTPATCH_LOG");
    char path[256];
    if (g_log_fd > 2)
        close(g_log_fd); /* after fork: reopen for the new pid */
    g_log_fd = -1;
    if (where && strcmp(where, "stderr") == 0) {
        g_log_fd = 2;
        return;
    }
    if (where && *where) {
        snprintf(path, sizeof path, "%s", where);
    } else {
        snprintf(path, sizeof path, "/tmp/hotpatch.%d.log", (int)getpid());
    }
    g_log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
}

void hp_log(const char *fmt, ...)
{
    char buf[2048];
    struct timespec ts;
    int saved = errno;
    if (g_log_fd < 0) {
        errno = saved;
        return;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    int n = snprintf(buf, sizeof buf, "[hotpatch %d %lld.%06ld] ", (int)getpid(),
                     (long long)ts.tv_sec, ts.tv_nsec / 1000);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof buf - n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof buf - 2)
        len = sizeof buf - 2;
    buf[len++] = '\n';
    ssize_t w = write(g_log_fd, buf, len);
    (void)w;
    errno = saved;
}

int hp_fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
        /* Replies are one line of text: names from a malformed patch may hold
         * control characters, so neutralise them (UTF-8 passes through). */
        for (char *p = err; *p; p++)
            if (*p == '\n' || *p == '\r' || *p == '\t')
                *p = ' ';
            else if ((unsigned char)*p < 0x20 || *p == 0x7f)
                *p = '?';
    }
    return -1;
}
