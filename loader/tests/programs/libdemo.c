/* A shared library the test patches live (LIB_FACTOR/LIB_EXTRA are set by
 * the test): lib_scale is exported, bump is a static of the library that
 * keeps state across the patch. */
static int bumps;

__attribute__((noinline)) static int bump(void)
{
    return ++bumps;
}

__attribute__((noinline)) int lib_scale(int x)
{
    return x * LIB_FACTOR + bump() LIB_EXTRA;
}
