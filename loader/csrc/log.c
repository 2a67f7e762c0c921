/*
 * Logging. The loader runs inside somebody else's program, whose stdout is
 * its own business (tests and pipelines read it), so we never write there:
 * HOTPATCH_LOG=stderr, HOTPATCH_LOG=path, or by default one file per process
 * in one directory, $TMPDIR/hotpatch-<uid>/<pid>.log (TMPDIR unset: /tmp).
 *
 * A build that links the loader into every program it makes (a server, its
 * CLI, its benchmark tool) would otherwise leave a file per process run, so
 * the default file is removed when the process exits cleanly (exit() or a
 * return from main) unless something failed (hp_fail), and at start-up the
 * directory is trimmed to the newest MAX_LOGS files of processes that are
 * gone (killed ones never reach exit). A HOTPATCH_LOG file is the user's:
 * never removed.
 *
 * Messages are formatted into a stack buffer and written with one write(2),
 * without stdio (no FILE locks shared with the program). Each line starts
 * with "[hotpatch PID 2025-06-01T12:34:56.123456Z]": ISO-8601, UTC (no
 * time-zone lock), microseconds (`cargo xtask bench` measures the loader's
 * time between two lines).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hp_internal.h"

#define MAX_LOGS 64

static int g_log_fd = -1;
/* The default file of this process ("" otherwise), removed at clean exit. */
static char g_default_path[512];
/* Something failed: the default file is kept for whoever looks into it. */
static volatile int g_keep;
/* The process the default file belongs to (a child re-initialises). */
static pid_t g_owner;

/* $TMPDIR/hotpatch-<uid>, created 0700; 0 if it is a directory of ours
 * (not a link, not another user's, not writable by others). */
static int log_dir(char *dir, size_t len)
{
    const char *tmp = getenv("TMPDIR");
    struct stat st;
    snprintf(dir, len, "%s/hotpatch-%u", tmp && *tmp ? tmp : "/tmp", (unsigned)geteuid());
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return -1;
    if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid() ||
        (st.st_mode & 022))
        return -1;
    return 0;
}

/* "<digits>.log" of a process that no longer runs. */
static int stale_log(const char *name)
{
    char proc[64];
    char *end;
    long pid = strtol(name, &end, 10);
    if (end == name || strcmp(end, ".log") != 0 || pid <= 0)
        return 0;
    snprintf(proc, sizeof proc, "/proc/%ld", pid);
    return access(proc, F_OK) != 0;
}

/* Removes the oldest stale logs until at most MAX_LOGS remain. Start-up
 * only (allocates nothing, but walks the directory once per removal). */
static void trim(const char *dir)
{
    for (;;) {
        DIR *d = opendir(dir);
        struct dirent *e;
        char oldest[300] = "", path[800];
        time_t when = 0;
        int n = 0;
        struct stat st;
        if (!d)
            return;
        while ((e = readdir(d))) {
            if (!stale_log(e->d_name))
                continue;
            n++;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            if (stat(path, &st) == 0 && (!*oldest || st.st_mtime < when)) {
                when = st.st_mtime;
                snprintf(oldest, sizeof oldest, "%s", e->d_name);
            }
        }
        closedir(d);
        if (n <= MAX_LOGS || !*oldest)
            return;
        snprintf(path, sizeof path, "%s/%s", dir, oldest);
        if (unlink(path) != 0)
            return;
    }
}

static void remove_at_exit(void)
{
    if (g_default_path[0] && !g_keep && getpid() == g_owner)
        unlink(g_default_path);
}

void hp_log_init(void)
{
    static int registered;
    const char *where = getenv("HOTPATCH_LOG");
    char dir[300];
    if (g_log_fd > 2)
        close(g_log_fd); /* after fork: reopen for the new pid */
    g_log_fd = -1;
    g_default_path[0] = 0;
    g_keep = 0;
    if (where && strcmp(where, "stderr") == 0) {
        g_log_fd = 2;
        return;
    }
    if (where && *where) {
        g_log_fd = open(where, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        return;
    }
    if (log_dir(dir, sizeof dir) != 0)
        return; /* no safe place: no log rather than someone else's file */
    trim(dir);
    g_owner = getpid();
    snprintf(g_default_path, sizeof g_default_path, "%s/%d.log", dir, (int)getpid());
    g_log_fd = open(g_default_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (g_log_fd < 0)
        g_default_path[0] = 0;
    else if (!registered++)
        atexit(remove_at_exit);
}

void hp_log(const char *fmt, ...)
{
    char buf[2048];
    struct timespec ts;
    struct tm tm;
    int saved = errno;
    if (g_log_fd < 0) {
        errno = saved;
        return;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(buf, sizeof buf, "[hotpatch %d %04d-%02d-%02dT%02d:%02d:%02d.%06ldZ] ",
                     (int)getpid(), tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000);
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
    g_keep = 1;
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
