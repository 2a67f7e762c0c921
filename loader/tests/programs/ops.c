/* Test program for tests/operations.rs (many processes of one binary,
 * patches re-applied at start-up), linked with libhotpatch.a. One command
 * per line on stdin, one answer line on stdout:
 *   call N  -> "result R calls C": R = scale(N), C counts every call of this
 *              process (the state an apply must keep)
 * scale() multiplies by FACTOR; the test prepends "#define FACTOR 3" for the
 * patched version, and "#define BUILD_TAG ..." to make another build of the
 * same program. */
#include <stdio.h>

#ifndef FACTOR
#define FACTOR 2
#endif

#ifdef BUILD_TAG
const char build_tag[] = BUILD_TAG; /* other bytes: another build-id */
#endif

static long calls;

__attribute__((noipa)) long scale(long x)
{
    calls++;
    return x * FACTOR;
}

int main(void)
{
    char line[256];
    long x;
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready\n");
    while (fgets(line, sizeof line, stdin)) {
        if (sscanf(line, "call %ld", &x) == 1) {
            long r = scale(x);
            printf("result %ld calls %ld\n", r, calls);
        } else {
            printf("unknown command\n");
        }
    }
    return 0;
}
