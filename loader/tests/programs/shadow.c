/* Test program for shadow variables and callbacks: connections whose struct
 * the fix cannot change. v1 counts a failed read (n < 0) as negative bytes;
 * the fix (FIX defined) counts errors per connection in a shadow field
 * instead, with callbacks around it. The test drives it one command per
 * stdin line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hotpatch.h"

struct conn {
    int fd;
    long bytes;
};
static struct conn conns[4];
int refuse_apply, refuse_revert; /* what the fix's pre-callbacks answer */
int callbacks_seen;              /* bits the fix's callbacks set */

#ifdef FIX
#define CONN_ERRORS 0x6572726fUL

static int before_apply(void)
{
    callbacks_seen |= 1;
    return refuse_apply;
}
HOTPATCH_PRE_APPLY(before_apply);

static int after_apply(void)
{
    callbacks_seen |= 2;
    return 0;
}
HOTPATCH_POST_APPLY(after_apply);

static int before_revert(void)
{
    callbacks_seen |= 4;
    return refuse_revert;
}
HOTPATCH_PRE_REVERT(before_revert);

static int after_revert(void)
{
    callbacks_seen |= 8;
    hotpatch_shadow_free_all(CONN_ERRORS);
    return 0;
}
HOTPATCH_POST_REVERT(after_revert);
#endif

__attribute__((noinline)) long conn_read(struct conn *c, int n)
{
#ifdef FIX
    if (n < 0) {
        int *errors = hotpatch_shadow_get_or_alloc(c, CONN_ERRORS, sizeof *errors);
        return errors ? -(long)++*errors : -1000;
    }
#endif
    c->bytes += n;
    return c->bytes;
}

int main(void)
{
    char line[256];
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready %d\n", (int)getpid());
    while (fgets(line, sizeof line, stdin)) {
        int i, n;
        if (sscanf(line, "read %d %d", &i, &n) == 2)
            printf("%ld\n", conn_read(&conns[i & 3], n));
        else if (sscanf(line, "refuse %d %d", &i, &n) == 2) {
            refuse_apply = i;
            refuse_revert = n;
            printf("ok\n");
        } else if (strncmp(line, "seen", 4) == 0) {
            printf("%d\n", callbacks_seen);
            callbacks_seen = 0;
        } else
            printf("?\n");
    }
    return 0;
}
