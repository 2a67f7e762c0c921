/*
 * Start-up and the control socket.
 *
 * The program calls nothing: a constructor starts one listener thread on the
 * abstract Unix socket "\0hotpatch.<pid>" (protocol in hp_protocol.h,
 * generated from loader/src/protocol.rs, which documents it). The thread is
 * created with every signal blocked, so the program's signals (and our own
 * stop signal) never land on it; stop.c skips it when stopping threads since
 * it only ever runs loader code.
 *
 * One connection at a time; every read has a timeout and the whole request a
 * deadline, so a stalled client cannot wedge the listener.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "patch_internal.h"

static void reply(int fd, int ok, const char *text, const char *details)
{
    char line[1200];
    int n = snprintf(line, sizeof line, "%s%s%s\n", ok ? HP_REPLY_OK : HP_REPLY_ERR,
                     *text ? " " : "", text);
    if (n >= (int)sizeof line) {
        line[sizeof line - 2] = '\n';
        n = sizeof line - 1;
    }
    hp_send_all(fd, line, (size_t)n);
    if (details)
        hp_send_all(fd, details, strlen(details));
}

/* Reads up to `len` bytes before the deadline; returns bytes read, -1 on
 * error/timeout. Stops early only at EOF. */
static ssize_t read_full(int fd, uint8_t *buf, size_t len, long long deadline)
{
    size_t got = 0;
    while (got < len) {
        long long left = deadline - hp_now_ms();
        if (left <= 0)
            return -1;
        struct pollfd p = {fd, POLLIN, 0};
        int pr = poll(&p, 1, left > (long long)HP_IO_TIMEOUT_MS ? (int)HP_IO_TIMEOUT_MS : (int)left);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            return -1;
        ssize_t n = recv(fd, buf + got, len - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

/* Parses the options after a request word (protocol.rs): CONSISTENT <ms>
 * (the default) or LAZY, CALLSITES, CLIENTSTOP, in any order. -1 if
 * malformed. */
static int parse_opts(const char *p, struct hp_opts *o, struct hp_client *c)
{
    char words[HP_MAX_REQUEST_LINE + 1];
    int seen_mode = 0;
    *o = (struct hp_opts){.consistent = 1, .timeout_ms = HP_DEFAULT_CONSISTENT_TIMEOUT_MS};
    snprintf(words, sizeof words, "%s", p);
    for (char *save = NULL, *w = strtok_r(words, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
        if (strcmp(w, HP_OPT_CONSISTENT) == 0 && !seen_mode++) {
            char *ms_text = strtok_r(NULL, " ", &save), *end;
            errno = 0;
            unsigned long ms = ms_text ? strtoul(ms_text, &end, 10) : 0;
            if (!ms_text || *ms_text < '0' || *ms_text > '9' || *end || errno || ms == 0 ||
                ms > HP_MAX_CONSISTENT_TIMEOUT_MS)
                return -1;
            o->timeout_ms = (unsigned)ms;
        } else if (strcmp(w, HP_OPT_LAZY) == 0 && !seen_mode++) {
            o->consistent = 0;
        } else if (strcmp(w, HP_OPT_CALLSITES) == 0 && !o->call_sites) {
            o->call_sites = 1;
        } else if (strcmp(w, HP_OPT_CLIENTSTOP) == 0 && !c->can_stop) {
            c->can_stop = 1;
        } else {
            return -1;
        }
    }
    o->client = c;
    return 0;
}

/* Makes text safe to echo in a one-line reply. */
static void printable(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
            *s = '?';
}

static void serve(int fd, struct hp_client *client)
{
    struct ucred cred;
    socklen_t clen = sizeof cred;
    char msg[1024];
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0) {
        reply(fd, 0, "cannot identify the peer (SO_PEERCRED)", NULL);
        return;
    }
    if (cred.uid != geteuid() && cred.uid != 0) {
        snprintf(msg, sizeof msg,
                 "permission denied: uid %u may not patch this process (owner uid %u or root "
                 "only)",
                 (unsigned)cred.uid, (unsigned)geteuid());
        hp_log("refused connection from pid %d: %s", (int)cred.pid, msg);
        reply(fd, 0, msg, NULL);
        return;
    }
    /* Let this client ptrace us (it stops the threads during a switch),
     * also under Yama's ptrace_scope=1; EINVAL without Yama is fine. */
    prctl(PR_SET_PTRACER, (unsigned long)cred.pid, 0, 0, 0);
    struct timeval tv = {HP_IO_TIMEOUT_MS / 1000, (HP_IO_TIMEOUT_MS % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    long long deadline = hp_now_ms() + HP_REQUEST_DEADLINE_MS;

    /* Request line, read byte by byte so nothing of the payload is consumed. */
    char line[HP_MAX_REQUEST_LINE + 1];
    size_t len = 0;
    for (;;) {
        if (len == HP_MAX_REQUEST_LINE) {
            reply(fd, 0, "request line too long", NULL);
            return;
        }
        ssize_t n = read_full(fd, (uint8_t *)line + len, 1, deadline);
        if (n != 1) {
            reply(fd, 0, n == 0 ? "connection closed before a complete request line"
                                : "timed out reading the request line",
                  NULL);
            return;
        }
        if (line[len] == '\n')
            break;
        len++;
    }
    line[len] = 0;
    if (len && line[len - 1] == '\r')
        line[--len] = 0;
    hp_log("request from pid %d uid %u: %.80s", (int)cred.pid, (unsigned)cred.uid, line);

    size_t cmdlen = strlen(HP_CMD_APPLY);
    if (strncmp(line, HP_CMD_APPLY, cmdlen) == 0 && line[cmdlen] == ' ') {
        const char *num = line + cmdlen + 1;
        char *end;
        struct hp_opts opts;
        errno = 0;
        unsigned long long size = strtoull(num, &end, 10);
        if (*num < '0' || *num > '9' || errno || parse_opts(end, &opts, client)) {
            reply(fd, 0,
                  "malformed APPLY request: expected APPLY <nbytes> [CONSISTENT <ms> | LAZY] "
                  "[CALLSITES] [CLIENTSTOP]",
                  NULL);
            return;
        }
        if (size == 0 || size > HP_MAX_PATCH_SIZE) {
            snprintf(msg, sizeof msg, "patch size %llu is out of range (1..%llu bytes)", size,
                     (unsigned long long)HP_MAX_PATCH_SIZE);
            reply(fd, 0, msg, NULL);
            return;
        }
        uint8_t *buf = malloc(size);
        if (!buf) {
            reply(fd, 0, "out of memory for the patch", NULL);
            return;
        }
        ssize_t got = read_full(fd, buf, size, deadline);
        if (got != (ssize_t)size) {
            if (got < 0)
                snprintf(msg, sizeof msg, "timed out reading the patch (%llu bytes expected)",
                         size);
            else
                snprintf(msg, sizeof msg,
                         "truncated request: expected %llu patch bytes, got %zd", size, got);
            free(buf);
            hp_log("%s", msg);
            reply(fd, 0, msg, NULL);
            return;
        }
        char details[8192];
        hp_lock();
        int rc = hp_apply_mem_locked(buf, size, &opts, msg, sizeof msg, details, sizeof details);
        hp_unlock();
        free(buf);
        reply(fd, rc == 0, msg, rc == 0 ? details : NULL);
    } else if (strncmp(line, HP_CMD_REVERT, strlen(HP_CMD_REVERT)) == 0 &&
               (line[strlen(HP_CMD_REVERT)] == 0 || line[strlen(HP_CMD_REVERT)] == ' ')) {
        struct hp_opts opts;
        char details[8192];
        if (parse_opts(line + strlen(HP_CMD_REVERT), &opts, client) || opts.call_sites) {
            reply(fd, 0,
                  "malformed REVERT request: expected REVERT [CONSISTENT <ms> | LAZY] "
                  "[CLIENTSTOP]",
                  NULL);
            return;
        }
        hp_lock();
        int rc = hp_revert_locked(&opts, msg, sizeof msg, details, sizeof details);
        hp_unlock();
        reply(fd, rc == 0, msg, rc == 0 ? details : NULL);
    } else if (strcmp(line, HP_CMD_LIST) == 0) {
        size_t cap = 1 << 20;
        char *list = malloc(cap);
        if (!list) {
            reply(fd, 0, "out of memory", NULL);
            return;
        }
        hp_lock();
        hp_list_locked(list, cap);
        hp_unlock();
        reply(fd, 1, "", list);
        free(list);
    } else {
        char shown[64];
        snprintf(shown, sizeof shown, "%.60s", line);
        printable(shown);
        snprintf(msg, sizeof msg, "unknown request \"%s\" (expected APPLY, REVERT or LIST)",
                 shown);
        reply(fd, 0, msg, NULL);
    }
}

/* Binds the socket in the calling thread (the constructor), so that it
 * exists before main() runs: a client that sees the program's first output
 * can always connect. Returns the listening fd, or -1. */
static int open_socket(void)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        hp_log("listener: socket: %m");
        return -1;
    }
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    int n = snprintf(addr.sun_path + 1, sizeof addr.sun_path - 1, "%s%d", HP_SOCKET_PREFIX,
                     (int)getpid());
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
    if (bind(fd, (struct sockaddr *)&addr, alen) < 0 || listen(fd, 8) < 0) {
        hp_log("listener: cannot listen on @%s: %m", addr.sun_path + 1);
        close(fd);
        return -1;
    }
    hp_log("listening on @%s (stop signal %d)", addr.sun_path + 1, hp_stop_signal());
    return fd;
}

static void *listener_main(void *arg)
{
    int fd = (int)(intptr_t)arg;
    hp_stop_set_listener((pid_t)syscall(SYS_gettid));
    for (;;) {
        int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE ||
                errno == ENOBUFS || errno == ENOMEM) {
                if (errno != EINTR && errno != ECONNABORTED)
                    sleep(1);
                continue;
            }
            hp_log("listener: accept: %m; stopping");
            break;
        }
        /* The line buffer of the conversation; static: one connection at a
         * time, and too big for the listener's stack to carry twice. */
        static struct hp_client client;
        memset(&client, 0, sizeof client);
        client.fd = c;
        serve(c, &client);
        close(c);
    }
    close(fd);
    return NULL;
}

void hp_listener_start(void)
{
    int fd = open_socket();
    if (fd < 0)
        return;
    pthread_t th;
    pthread_attr_t attr;
    sigset_t all, old;
    sigfillset(&all);
    /* The new thread inherits this mask: it never runs a signal handler. */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&th, &attr, listener_main, (void *)(intptr_t)fd);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        hp_log("cannot start the listener thread: %s", strerror(rc));
        close(fd);
    } else
        pthread_setname_np(th, "hotpatch");
}

static void atfork_prepare(void)
{
    hp_lock(); /* never fork in the middle of an apply */
}

static void atfork_parent(void)
{
    hp_unlock();
}

static void atfork_child(void)
{
    /* Threads do not survive fork: the child gets its own listener, socket
     * name (new pid), log file and /proc/self/mem. Applied patches are
     * inherited (the code is in the child's memory too). */
    hp_patch_after_fork(); /* re-initialises the (held) lock */
    hp_stop_after_fork();
    hp_log_init();
    const char *off = getenv("HOTPATCH_DISABLE");
    if (!(off && strcmp(off, "1") == 0))
        hp_listener_start();
}

/* Order: the persisted patches go in before the listener starts (so no
 * client can interleave with them, and only this thread exists) and before
 * main (so the program never runs the code they fix). A fork child keeps
 * its parent's patches; an exec starts here again. */
__attribute__((constructor)) static void hp_init(void)
{
    const char *off = getenv("HOTPATCH_DISABLE");
    hp_log_init();
    hp_sig_init(); /* before any patch can be applied, the C API's included */
    hp_stop_init();
    hp_membarrier_init();
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
    if (off && strcmp(off, "1") == 0) {
        hp_log("HOTPATCH_DISABLE=1: not listening, nothing re-applied");
        return;
    }
    hp_persist_reapply();
    hp_listener_start();
}
