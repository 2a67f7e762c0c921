/* Test program for tests/signing.rs: the loader's own Ed25519 verifier
 * (csrc/ed25519.c) and SHA-512 (csrc/sha512.c), reached through
 * libhotpatch.a. One command per line on stdin, one answer line on stdout:
 *   verify PUB SIG MSG  -> "ok", "bad-key", "bad-s" or "mismatch"
 *                          (hex arguments; "-" for an empty message)
 *   sha512 DATA         -> the digest in hex ("-" for no bytes)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ed25519.h"
#include "sha512.h"

/* Hex text to bytes; the count, or -1. "-" is zero bytes. */
static long unhex(const char *hex, unsigned char *out, size_t cap)
{
    size_t n = strcmp(hex, "-") == 0 ? 0 : strlen(hex);
    if (n % 2 || n / 2 > cap)
        return -1;
    for (size_t i = 0; i < n / 2; i++)
        if (sscanf(hex + 2 * i, "%2hhx", &out[i]) != 1)
            return -1;
    return (long)(n / 2);
}

static void verify(const char *pub_hex, const char *sig_hex, const char *msg_hex)
{
    static unsigned char msg[1 << 16];
    unsigned char pub[32], sig[64];
    long n = unhex(msg_hex, msg, sizeof msg);
    if (unhex(pub_hex, pub, 32) != 32 || unhex(sig_hex, sig, 64) != 64 || n < 0) {
        printf("bad arguments\n");
        return;
    }
    switch (hp_ed25519_verify(sig, msg, (size_t)n, pub)) {
    case HP_ED25519_OK: printf("ok\n"); break;
    case HP_ED25519_BAD_KEY: printf("bad-key\n"); break;
    case HP_ED25519_BAD_S: printf("bad-s\n"); break;
    default: printf("mismatch\n"); break;
    }
}

static void sha512(const char *hex)
{
    static unsigned char data[1 << 16];
    unsigned char digest[64];
    struct hp_sha512 c;
    long n = unhex(hex, data, sizeof data);
    if (n < 0) {
        printf("bad arguments\n");
        return;
    }
    hp_sha512_init(&c);
    /* In two pieces, so a block straddles the calls. */
    hp_sha512_update(&c, data, (size_t)n / 3);
    hp_sha512_update(&c, data + n / 3, (size_t)(n - n / 3));
    hp_sha512_final(&c, digest);
    for (int i = 0; i < 64; i++)
        printf("%02x", digest[i]);
    printf("\n");
}

int main(void)
{
    static char line[1 << 18], a[1 << 17], b[256], m[1 << 17];
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);
    while (fgets(line, sizeof line, stdin)) {
        if (sscanf(line, "verify %131071s %255s %131071s", a, b, m) == 3)
            verify(a, b, m);
        else if (sscanf(line, "sha512 %131071s", a) == 1)
            sha512(a);
        else
            printf("unknown command\n");
    }
    return 0;
}
