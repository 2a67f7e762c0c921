/*
 * Ed25519 signature verification (RFC 8032 section 5.1.7), written for the
 * loader: a process configured with a public key checks each patch's
 * signature (signing.c) with it. Verification only — signing happens in
 * hpbuild (crate format, ed25519-dalek). Variable time: every input is
 * public (the key, the patch, its signature).
 */
#ifndef HP_ED25519_H
#define HP_ED25519_H

#include <stddef.h>
#include <stdint.h>

/* Why hp_ed25519_verify said no. */
enum {
    HP_ED25519_OK = 0,
    HP_ED25519_BAD_KEY = -1,  /* the public key is not the encoding of a curve point */
    HP_ED25519_BAD_S = -2,    /* S is not below the group order L (malleable form) */
    HP_ED25519_MISMATCH = -3, /* well-formed, but [S]B != R + [k]A */
};

/* Checks `sig` (R || S, 64 bytes) over msg[0..len) with the public key
 * `pub` (32 bytes): HP_ED25519_OK or one of the reasons above. The check is
 * RFC 8032's cofactorless one, the same as ed25519-dalek's `verify`: the
 * encoding of [S]B - [k]A must equal R byte for byte, with k = SHA-512(R ||
 * pub || msg) mod L. */
int hp_ed25519_verify(const uint8_t sig[64], const uint8_t *msg, size_t len,
                      const uint8_t pub[32]);

/* Whether `pub` decodes to a curve point (a key worth configuring). */
int hp_ed25519_key_ok(const uint8_t pub[32]);

#endif
