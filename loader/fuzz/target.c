/*
 * The program the seed patches are built against (the diffs in seeds/
 * change this file), linked into the fuzzer itself: hp_link resolves a
 * patch's undefined symbols in the running executable — here, the fuzzer —
 * so a seed's references to these globals, statics and thread-locals
 * resolve, and mutations of a seed get past symbol resolution into layout
 * and relocation. Nothing calls these functions.
 */
#include <stdio.h>

int fz_calls;
__thread int fz_per_thread;
static int fz_hidden = 7;
static const char fz_greeting[] = "result";

static int fz_twice(int x)
{
    return 2 * x;
}

int fz_compute(int x)
{
    fz_calls++;
    fz_per_thread++;
    return fz_twice(x) + fz_hidden;
}

int fz_format(char *buf, size_t n, int x)
{
    return snprintf(buf, n, "%s %d (%d calls)", fz_greeting, fz_compute(x), fz_calls);
}
