/*
 * SHA-256 (FIPS 180-4), for the patch's content hash (format/README.md):
 * patchobj.c checks it before it reads anything else of a patch. Streaming,
 * so the hash field can be fed as zeros without copying the patch.
 */
#ifndef HP_SHA256_H
#define HP_SHA256_H

#include <stddef.h>
#include <stdint.h>

struct hp_sha256 {
    uint32_t state[8];
    uint64_t total;       /* bytes hashed so far */
    uint8_t block[64];    /* a partial block */
    size_t used;          /* bytes in it */
};

void hp_sha256_init(struct hp_sha256 *c);
void hp_sha256_update(struct hp_sha256 *c, const void *data, size_t len);
void hp_sha256_final(struct hp_sha256 *c, uint8_t digest[32]);

/* Whether blocks are compressed with the x86 SHA extensions (asked once). */
int hp_sha256_accelerated(void);
/* From now on, the portable code only (tests compare both ways). */
void hp_sha256_force_portable(void);

#endif
