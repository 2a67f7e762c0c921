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

/* Thread-locals of the library: an exported one (general-dynamic access
 * from -fPIC code) and the library's own (local-dynamic). */
__thread int lib_tls_total;
static __thread int tls_calls;
#ifndef LIB_TLS_FACTOR
#define LIB_TLS_FACTOR 2
#endif

__attribute__((noinline)) int lib_tls(int x)
{
    lib_tls_total += x;
    return ++tls_calls * 1000 + lib_tls_total * LIB_TLS_FACTOR;
}
