/* Test program for the malformed-metadata table (tests/malformed.rs): applies
 * each patch file named on the command line through the public C API,
 * hotpatch_apply_mem, and prints one line per file: "ok <message>" or
 * "err <message>" (on one line); an applied patch is reverted before the next file.
 * target() is what the table's good patch replaces; the test prepends
 * "#define NEW" for the patched version (which also adds a static). */
#include <stdio.h>
#include <stdlib.h>

#include "hotpatch.h"

int g_bias = 1;

#ifdef NEW
static int extra = 5;
#define TERM (extra++)
#else
#define TERM 0
#endif

__attribute__((noipa)) int target(int x)
{
    return x * 2 + g_bias + TERM;
}

static char *slurp(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0, got;
    char *buf = malloc(cap);
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap)
            buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    *size = n;
    return buf;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        size_t size = 0;
        char *data = slurp(argv[i], &size), err[1024] = "";
        if (!data) {
            printf("cannot read %s\n", argv[i]);
            return 1;
        }
        int rc = hotpatch_apply_mem(data, size, err, sizeof err);
        for (char *p = err; *p; p++)
            if (*p == '\n')
                *p = '|'; /* one line per file */
        printf("%s %s\n", rc == 0 ? "ok" : "err", err);
        if (rc == 0 && hotpatch_revert(err, sizeof err) != 0) {
            printf("revert failed: %s\n", err);
            return 1;
        }
        free(data);
    }
    printf("target(1) = %d\n", target(1));
    return 0;
}
