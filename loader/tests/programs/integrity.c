/* Test program for tests/integrity.rs, linked with libhotpatch.a. One
 * command per line on stdin, one answer line on stdout:
 *   call N        -> "result R calls C": R = scale(N), C counts every call
 *                    (the state a refused patch must leave alone)
 *   apply PATH    -> "ok <message>" / "err <message>": the public C API,
 *                    hotpatch_apply_file
 *   hash PATH K   -> the loader's SHA-256 (sha256.c) of the file, fed K
 *                    bytes at a time, in hex
 *   portable      -> "sha-ni" or "portable": how blocks were compressed so
 *                    far; from now on, portably
 * scale() multiplies by FACTOR; the test prepends "#define FACTOR 3" for
 * the patched version. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hotpatch.h"
#include "sha256.h"

#ifndef FACTOR
#define FACTOR 2
#endif

static long calls;

__attribute__((noipa)) long scale(long x)
{
    calls++;
    return x * FACTOR;
}

static void hash(const char *path, size_t step)
{
    FILE *f = fopen(path, "rb");
    if (!f || step == 0) {
        printf("cannot hash %s\n", path);
        if (f)
            fclose(f);
        return;
    }
    struct hp_sha256 c;
    uint8_t digest[32];
    char *buf = malloc(step);
    size_t n;
    hp_sha256_init(&c);
    while ((n = fread(buf, 1, step, f)) > 0)
        hp_sha256_update(&c, buf, n);
    hp_sha256_final(&c, digest);
    fclose(f);
    free(buf);
    for (int i = 0; i < 32; i++)
        printf("%02x", digest[i]);
    printf("\n");
}

int main(void)
{
    char line[4096], path[4000], err[1024];
    long x;
    size_t step;
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready\n");
    while (fgets(line, sizeof line, stdin)) {
        if (sscanf(line, "call %ld", &x) == 1) {
            long r = scale(x);
            printf("result %ld calls %ld\n", r, calls);
        } else if (sscanf(line, "apply %3999s", path) == 1) {
            err[0] = '\0';
            int rc = hotpatch_apply_file(path, err, sizeof err);
            printf("%s %s\n", rc == 0 ? "ok" : "err", err);
        } else if (sscanf(line, "hash %3999s %zu", path, &step) == 2) {
            hash(path, step);
        } else if (strcmp(line, "portable\n") == 0) {
            printf("%s\n", hp_sha256_accelerated() ? "sha-ni" : "portable");
            hp_sha256_force_portable();
        } else {
            printf("unknown command\n");
        }
    }
    return 0;
}
