/*
 * SHA-512 (FIPS 180-4), for ed25519.c only: Ed25519 hashes with SHA-512
 * (RFC 8032 section 5.1). Streaming, like sha256.h.
 */
#ifndef HP_SHA512_H
#define HP_SHA512_H

#include <stddef.h>
#include <stdint.h>

struct hp_sha512 {
    uint64_t state[8];
    uint64_t total;     /* bytes hashed so far (a patch is far below 2^61) */
    uint8_t block[128]; /* a partial block */
    size_t used;        /* bytes in it */
};

void hp_sha512_init(struct hp_sha512 *c);
void hp_sha512_update(struct hp_sha512 *c, const void *data, size_t len);
void hp_sha512_final(struct hp_sha512 *c, uint8_t digest[64]);

#endif
