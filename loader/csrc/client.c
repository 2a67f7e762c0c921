/*
 * The loader's side of the conversation with hpctl (protocol: format/src/
 * protocol.rs, "The conversation before the reply").
 *
 * hp_client_stop and hp_client_resume run inside the switch's stopped
 * section (switch.c, steps 2 and 9): they use only the socket, a fixed line
 * buffer inside struct hp_client and hand-written number conversions — no
 * malloc, no stdio. hp_client_sites runs before the stop and may allocate.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "patch_internal.h"

long long hp_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

int hp_send_all(int fd, const char *s, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, s, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        s += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The next line (without its newline, NUL-terminated, valid until the next
 * call), or NULL on EOF, timeout or a line longer than the buffer. */
static char *read_line(struct hp_client *c)
{
    long long deadline = hp_now_ms() + HP_CONVERSATION_TIMEOUT_MS;
    for (;;) {
        char *nl = memchr(c->buf + c->pos, '\n', c->have - c->pos);
        if (nl) {
            char *line = c->buf + c->pos;
            *nl = 0;
            c->pos = (size_t)(nl - c->buf) + 1;
            return line;
        }
        if (c->pos > 0) { /* keep the partial line at the front */
            memmove(c->buf, c->buf + c->pos, c->have - c->pos);
            c->have -= c->pos;
            c->pos = 0;
        }
        long long left = deadline - hp_now_ms();
        if (c->have == sizeof c->buf || left <= 0)
            return NULL;
        struct pollfd p = {c->fd, POLLIN, 0};
        int pr = poll(&p, 1, (int)left);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            return NULL;
        ssize_t n = recv(c->fd, c->buf + c->have, sizeof c->buf - c->have, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return NULL;
        c->have += (size_t)n;
    }
}

static int starts_with(const char *s, const char *word)
{
    size_t n = strlen(word);
    return strncmp(s, word, n) == 0 && (s[n] == ' ' || s[n] == 0);
}

/* Decimal into buf (no stdio); returns the length. */
static size_t put_uint(char *buf, unsigned long v)
{
    char tmp[24];
    size_t n = 0, k = 0;
    do
        tmp[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (n)
        buf[k++] = tmp[--n];
    return k;
}

static int parse_regs_line(char *line, struct hp_thread *t)
{
    char *p = line, *end;
    unsigned long tid = strtoul(p, &end, 10);
    if (end == p || tid == 0 || tid > 0x7fffffff)
        return -1;
    t->tid = (pid_t)tid;
    for (int i = 0; i < HP_NREGS; i++) {
        p = end;
        if (*p != ' ')
            return -1;
        t->regs[i] = strtoull(p + 1, &end, 16);
        if (end == p + 1)
            return -1;
    }
    if (*end)
        return -1;
    t->rip = t->regs[HP_REG_RA];
    t->rsp = t->regs[7];
    t->rbp = t->regs[6];
    return 0;
}

int hp_client_stop(struct hp_client *c, struct hp_stopset *set, struct hp_thread *buf, size_t cap)
{
    char msg[48];
    size_t k = strlen(HP_MSG_STOP);
    memcpy(msg, HP_MSG_STOP, k);
    msg[k++] = ' ';
    k += put_uint(msg + k, (unsigned long)hp_stop_listener());
    msg[k++] = '\n';
    if (hp_send_all(c->fd, msg, k))
        return -1;
    char *line = read_line(c);
    if (!line)
        return -1;
    if (starts_with(line, HP_MSG_NOSTOP)) {
        size_t n = strlen(line);
        const char *why = n > strlen(HP_MSG_NOSTOP) ? line + strlen(HP_MSG_NOSTOP) + 1 : "";
        strncpy(c->nostop, why, sizeof c->nostop - 1);
        c->can_stop = 0;
        return 1;
    }
    if (!starts_with(line, HP_MSG_REGS))
        return -1;
    char *end;
    unsigned long n = strtoul(line + strlen(HP_MSG_REGS) + 1, &end, 10);
    if (*end)
        return -1;
    int bad = n > cap;
    for (unsigned long i = 0; i < n; i++) {
        line = read_line(c);
        if (!line)
            return -1;
        if (!bad && parse_regs_line(line, &buf[i]))
            bad = 1;
    }
    if (bad) { /* the threads are stopped: let them go before failing */
        hp_client_resume(c);
        return -1;
    }
    set->threads = buf;
    set->n = n;
    set->priv = NULL;
    return 0;
}

int hp_client_gone(const struct hp_client *c)
{
    struct pollfd p = {c->fd, POLLRDHUP, 0};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

int hp_client_resume(struct hp_client *c)
{
    char msg[16];
    size_t k = strlen(HP_MSG_RESUME);
    memcpy(msg, HP_MSG_RESUME, k);
    msg[k++] = '\n';
    if (hp_send_all(c->fd, msg, k))
        return -1;
    char *line = read_line(c);
    return line && starts_with(line, HP_MSG_RESUMED) ? 0 : -1;
}

/* ---- call sites (before the stop) --------------------------------------- */

static size_t count_code_ranges(void)
{
    size_t n = 0;
    for (const struct applied *p = hp_patch_top; p; p = p->prev)
        n += p->n;
    return n;
}

static int send_targets(struct hp_client *c, const struct redirect *r, size_t n, uintptr_t bias)
{
    size_t ncode = count_code_ranges();
    size_t cap = 64 + (n + ncode) * 40, used = 0;
    char *out = malloc(cap);
    if (!out)
        return -1;
    used += (size_t)snprintf(out, cap, "%s %zu %zu %lx\n", HP_MSG_TARGETS, n, ncode,
                             (unsigned long)bias);
    for (size_t i = 0; i < n; i++)
        used += (size_t)snprintf(out + used, cap - used, "F %lx\n", (unsigned long)r[i].func);
    for (const struct applied *p = hp_patch_top; p; p = p->prev)
        for (size_t i = 0; i < p->n; i++)
            used += (size_t)snprintf(out + used, cap - used, "C %lx %lx\n",
                                     (unsigned long)p->r[i].target,
                                     (unsigned long)(p->r[i].target + p->r[i].target_size));
    int rc = hp_send_all(c->fd, out, used);
    free(out);
    return rc;
}

static int hex_byte(const char *p)
{
    int v = 0;
    for (int i = 0; i < 2; i++) {
        char ch = p[i];
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* "<addr> <func> <hex bytes>" */
static int parse_site(char *line, struct hp_site_line *s)
{
    char *end;
    s->addr = (uintptr_t)strtoull(line, &end, 16);
    if (end == line || *end != ' ')
        return -1;
    char *p = end + 1;
    s->func = (uint32_t)strtoul(p, &end, 10);
    if (end == p || *end != ' ')
        return -1;
    p = end + 1;
    size_t len = strlen(p);
    if (len % 2 || len / 2 > SPAN_MAX || len == 0)
        return -1;
    s->len = (uint8_t)(len / 2);
    for (size_t i = 0; i < s->len; i++) {
        int b = hex_byte(p + 2 * i);
        if (b < 0)
            return -1;
        s->bytes[i] = (uint8_t)b;
    }
    return 0;
}

int hp_client_sites(struct hp_client *c, const struct hp_exe *exe, const struct redirect *r,
                    size_t n, struct hp_site_line **out, size_t *nout, char *err, size_t errlen)
{
    *out = NULL;
    *nout = 0;
    if (send_targets(c, r, n, exe->bias))
        return hp_fail(err, errlen, "cannot send the call-site targets to the client");
    char *line = read_line(c);
    char *end = NULL;
    unsigned long k = line && starts_with(line, HP_MSG_SITES)
                          ? strtoul(line + strlen(HP_MSG_SITES) + 1, &end, 10)
                          : 0;
    if (!line || !end || *end || k > HP_MAX_SITES)
        return hp_fail(err, errlen, "the client did not answer %s with %s <count> (at most %u)",
                       HP_MSG_TARGETS, HP_MSG_SITES, (unsigned)HP_MAX_SITES);
    struct hp_site_line *s = calloc(k ? k : 1, sizeof *s);
    if (!s)
        return hp_fail(err, errlen, "out of memory for %lu call sites", k);
    for (unsigned long i = 0; i < k; i++) {
        line = read_line(c);
        if (!line || parse_site(line, &s[i])) {
            free(s);
            return hp_fail(err, errlen, "malformed call-site line %lu from the client", i + 1);
        }
    }
    *out = s;
    *nout = k;
    return 0;
}
