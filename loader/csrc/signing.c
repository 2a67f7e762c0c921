/*
 * Signed patches: the process's trusted key and the check every apply
 * makes with it (format/src/signature.rs has the same policy in Rust, in
 * the same words; loader/README.md, "Signed patches", the trust model).
 *
 * The key is read once, at start-up (hp_sig_init, from the constructor,
 * before the patch directory is re-applied and before the listener
 * exists): $HOTPATCH_PUBKEY (an absolute path to a PEM public key), else
 * ROOT/trusted.pub beside the per-build patch directories. Neither: no key,
 * and patches need no signature (signed ones apply too, unchecked).
 *
 * A key that was asked for but cannot be used — missing (HOTPATCH_PUBKEY
 * only), unreadable, not an ed25519 public key, or in a file or directory
 * someone else could write — is ignored with a log line, and since the
 * process then cannot tell a good signature from a bad one, it refuses
 * every patch, saying why: failing open would let whoever broke the key
 * file switch signing off.
 *
 * hp_sig_check runs right after the patch is parsed (hp_apply_mem_locked),
 * before anything is linked or written, for hpctl, the C API and the
 * start-up re-apply alike.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ed25519.h"
#include "hp_internal.h"
#include "sha256.h"

enum key_state { KEY_NONE, KEY_SET, KEY_UNUSABLE };

static struct {
    enum key_state state;
    uint8_t pub[HP_SIG_PUBKEY_SIZE];
    char fingerprint[2 * HP_SHA256_SIZE + 1];
    char source[4200]; /* "HOTPATCH_PUBKEY=/path" or ".../trusted.pub" */
    char why[512];     /* KEY_UNUSABLE: what is wrong with it */
} key;

/* Hex SHA-256 of the key's DER SubjectPublicKeyInfo (what `openssl pkey
 * -pubin -outform DER | sha256sum` prints; format::key_fingerprint). */
static void fingerprint(const uint8_t pub[HP_SIG_PUBKEY_SIZE], char out[2 * HP_SHA256_SIZE + 1])
{
    uint8_t digest[HP_SHA256_SIZE];
    struct hp_sha256 c;
    hp_sha256_init(&c);
    hp_sha256_update(&c, HP_ED25519_SPKI_PREFIX, sizeof HP_ED25519_SPKI_PREFIX - 1);
    hp_sha256_update(&c, pub, HP_SIG_PUBKEY_SIZE);
    hp_sha256_final(&c, digest);
    for (size_t i = 0; i < sizeof digest; i++)
        snprintf(out + 2 * i, 3, "%02x", digest[i]);
}

static int base64_value(char ch)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *at = ch ? strchr(alphabet, ch) : NULL;
    return at ? (int)(at - alphabet) : -1;
}

/* Decodes base64 text [p, end) into out, skipping whitespace and stopping
 * at '='. The length, or -1 on a foreign character or more than cap bytes. */
static long base64_decode(const char *p, const char *end, uint8_t *out, size_t cap)
{
    uint32_t bits = 0;
    int nbits = 0;
    size_t n = 0;
    for (; p < end && *p != '='; p++) {
        if (strchr(" \t\r\n", *p))
            continue;
        int v = base64_value(*p);
        if (v < 0)
            return -1;
        bits = bits << 6 | (uint32_t)v;
        nbits += 6;
        if (nbits >= 8) {
            nbits -= 8;
            if (n == cap)
                return -1;
            out[n++] = (uint8_t)(bits >> nbits);
        }
    }
    return (long)n;
}

/* The ed25519 key of a PEM "PUBLIC KEY" (RFC 7468 around the DER of RFC
 * 8410: a fixed 12-byte prefix, then the 32-byte key). 0, or -1 with why. */
static int pem_public_key(const char *text, uint8_t pub[HP_SIG_PUBKEY_SIZE], char *why,
                          size_t whylen)
{
    static const char begin[] = "-----BEGIN PUBLIC KEY-----", end[] = "-----END PUBLIC KEY-----";
    static const char make[] = "make one with: openssl pkey -in key.pem -pubout -out key.pub";
    const char *body = strstr(text, begin), *stop;
    uint8_t der[64];
    if (!body && strstr(text, "PRIVATE KEY"))
        return hp_fail(why, whylen,
                       "it holds a private key; give the process the public key only (%s)", make);
    if (!body)
        return hp_fail(why, whylen, "it is not a PEM public key (%s)", make);
    body += sizeof begin - 1;
    if (!(stop = strstr(body, end)))
        return hp_fail(why, whylen, "its PUBLIC KEY block has no END line");
    long n = base64_decode(body, stop, der, sizeof der);
    size_t prefix = sizeof HP_ED25519_SPKI_PREFIX - 1;
    if (n != (long)(prefix + HP_SIG_PUBKEY_SIZE) || memcmp(der, HP_ED25519_SPKI_PREFIX, prefix))
        return hp_fail(why, whylen,
                       "it is not an ed25519 public key (make the pair with: openssl genpkey "
                       "-algorithm ed25519 -out key.pem; then %s)",
                       make);
    memcpy(pub, der + prefix, HP_SIG_PUBKEY_SIZE);
    if (!hp_ed25519_key_ok(pub))
        return hp_fail(why, whylen, "its key is not a point of the ed25519 curve");
    return 0;
}

/* Owned by us or root, writable by nobody else (the rule of persist.c):
 * whoever could write the key could sign patches. */
static int owned_safely(int fd, const char *what, char *why, size_t whylen)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return hp_fail(why, whylen, "cannot inspect %s: %s", what, strerror(errno));
    if ((st.st_uid != geteuid() && st.st_uid != 0) || (st.st_mode & 022))
        return hp_fail(why, whylen,
                       "%s is owned by uid %u with mode %03o (must be ours or root's and "
                       "writable by nobody else)",
                       what, (unsigned)st.st_uid, (unsigned)(st.st_mode & 0777));
    return 0;
}

/* Reads the key file `path` into buf (NUL-terminated): 1, or 0 when it does
 * not exist and need not, or -1 with why. The directory is checked too: who
 * can write it can replace the file. */
static int read_key_file(const char *path, int must_exist, char *buf, size_t cap, char *why,
                         size_t whylen)
{
    char dir[4096];
    const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) + (slash == path) : 1,
             slash ? path : ".");
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0 && errno == ENOENT && !must_exist)
        return 0;
    if (dirfd < 0)
        return hp_fail(why, whylen, "cannot open its directory %s: %s", dir, strerror(errno));
    int fd = openat(dirfd, base, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    int rc = -1;
    struct stat st;
    if (fd < 0 && errno == ENOENT && !must_exist)
        rc = 0;
    else if (fd < 0 && errno == ELOOP)
        hp_fail(why, whylen, "it is a symbolic link; name the file itself");
    else if (fd < 0)
        hp_fail(why, whylen, "cannot open it: %s", strerror(errno));
    else if (owned_safely(dirfd, "its directory", why, whylen) == 0 &&
             owned_safely(fd, "the file", why, whylen) == 0) {
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size >= (off_t)cap)
            hp_fail(why, whylen, "it is not a regular file of at most %zu bytes", cap - 1);
        else {
            ssize_t n = read(fd, buf, (size_t)st.st_size);
            if (n == st.st_size) {
                buf[n] = '\0';
                rc = 1;
            } else
                hp_fail(why, whylen, "cannot read it");
        }
    }
    if (fd >= 0)
        close(fd);
    close(dirfd);
    return rc;
}

/* Loads the key from `path` into `key` (left KEY_NONE when the file need
 * not exist and does not). */
static void load_key(const char *path, int must_exist)
{
    char text[HP_KEY_FILE_MAX + 1];
    int rc = read_key_file(path, must_exist, text, sizeof text, key.why, sizeof key.why);
    if (rc == 0)
        return;
    if (rc < 0 || pem_public_key(text, key.pub, key.why, sizeof key.why) < 0) {
        key.state = KEY_UNUSABLE;
        return;
    }
    fingerprint(key.pub, key.fingerprint);
    key.state = KEY_SET;
}

void hp_sig_init(void)
{
    const char *env = getenv(HP_PUBKEY_ENV);
    char root[4096];
    memset(&key, 0, sizeof key);
    if (env && *env) {
        snprintf(key.source, sizeof key.source, "%s=%s", HP_PUBKEY_ENV, env);
        if (env[0] != '/') {
            key.state = KEY_UNUSABLE;
            snprintf(key.why, sizeof key.why, "it is not an absolute path");
        } else
            load_key(env, 1);
    } else if (hp_persist_root(root, sizeof root) == 0) {
        snprintf(key.source, sizeof key.source, "%s/%s", root, HP_TRUSTED_KEY_FILE);
        load_key(key.source, 0);
    }
    if (key.state == KEY_SET)
        hp_log("signing: every patch must be signed with key %.*s (%s)",
               (int)HP_FINGERPRINT_SHOWN, key.fingerprint, key.source);
    else if (key.state == KEY_UNUSABLE)
        hp_log("signing: the key %s is ignored: %s. This process requires signed patches but "
               "cannot check them, so it refuses every patch; fix the key and restart it",
               key.source, key.why);
}

/* SHA-256 of data[0..size) with the two fields [a, a+alen) and [b, b+blen)
 * read as zero (both in bounds, at most 64 bytes each; they may overlap). */
static void hash_zeroing(uint8_t digest[HP_SHA256_SIZE], const uint8_t *data, size_t size,
                         uint64_t a, size_t alen, uint64_t b, size_t blen)
{
    static const uint8_t zeros[64];
    uint64_t at[2] = {a < b ? a : b, a < b ? b : a};
    size_t len[2] = {a < b ? alen : blen, a < b ? blen : alen};
    uint64_t pos = 0;
    struct hp_sha256 c;
    hp_sha256_init(&c);
    for (int i = 0; i < 2; i++) {
        uint64_t start = at[i] > pos ? at[i] : pos, end = at[i] + len[i];
        if (at[i] > pos)
            hp_sha256_update(&c, data + pos, at[i] - pos);
        if (end > start)
            hp_sha256_update(&c, zeros, end - start);
        if (end > pos)
            pos = end;
    }
    hp_sha256_update(&c, data + pos, size - pos);
    hp_sha256_final(&c, digest);
}

/* Does the patch's signature verify with the key? (format::signed_message) */
static int signature_verifies(const struct hp_patchobj *po)
{
    uint8_t msg[sizeof HP_SIG_CONTEXT + HP_SHA256_SIZE];
    memcpy(msg, HP_SIG_CONTEXT, sizeof HP_SIG_CONTEXT); /* with its NUL */
    hash_zeroing(msg + sizeof HP_SIG_CONTEXT, po->data, po->size, po->meta_off + HP_HDR_SHA256,
                 HP_SHA256_SIZE, po->sig_off + HP_SIG_SIGNATURE, HP_SIG_SIGNATURE_SIZE);
    return hp_ed25519_verify(po->sig + HP_SIG_SIGNATURE, msg, sizeof msg, key.pub) ==
           HP_ED25519_OK;
}

int hp_sig_check(const struct hp_patchobj *po, char *err, size_t errlen)
{
    const int shown = (int)HP_FINGERPRINT_SHOWN;
    if (key.state == KEY_NONE)
        return 0;
    if (key.state == KEY_UNUSABLE)
        return hp_fail(err, errlen,
                       "patch %s refused: this process requires signed patches, but its key %s "
                       "is unusable (%s); fix the key and restart the process",
                       po->patch_id, key.source, key.why);
    if (!po->sig)
        return hp_fail(err, errlen,
                       "patch %s is not signed, and this process requires signed patches (key "
                       "%.*s, %s)",
                       po->patch_id, shown, key.fingerprint, key.source);
    if (signature_verifies(po))
        return 0;
    char signer[2 * HP_SHA256_SIZE + 1], why[128];
    fingerprint(po->sig + HP_SIG_PUBKEY, signer);
    if (strcmp(signer, key.fingerprint) == 0)
        snprintf(why, sizeof why, "the patch or its signature was changed after it was signed");
    else
        snprintf(why, sizeof why, "it was signed with key %.*s", shown, signer);
    return hp_fail(err, errlen,
                   "patch %s: signature does not verify with the configured key %.*s (%s): %s",
                   po->patch_id, shown, key.fingerprint, key.source, why);
}
