/*
 * Thread-local variables of the executable, for patch code that uses them.
 *
 * x86-64 uses TLS variant II: the thread pointer (TP, %fs:0 holds its own
 * value) points just past the static TLS blocks, and the executable's block
 * (module 1) comes first, ending at TP. Code in the executable reaches a
 * thread-local with a constant "TP offset": local-exec code has it as an
 * immediate (R_X86_64_TPOFF32), initial-exec code loads it from a GOT slot
 * (R_X86_64_GOTTPOFF). The offset is the same in every thread, so the patch
 * needs exactly that constant.
 *
 * glibc places the executable's block at TP - off with
 *   off = roundup(p_memsz - firstbyte, p_align) + firstbyte,
 *   firstbyte = (-p_vaddr) & (p_align - 1)      (0 when p_vaddr is aligned)
 * which is roundup(p_memsz, p_align) in the usual case; a TLS symbol's
 * st_value in an executable is its offset inside the block, so
 * TP offset = st_value - off. We cross-check this against the running
 * thread: dl_iterate_phdr's dlpi_tls_data is this thread's block address,
 * which must equal TP - off; on disagreement the measured value wins (and
 * is logged), since it is what the program's own code uses.
 *
 * General- and local-dynamic TLS (TLSGD/TLSLD) appears in -fPIC code for
 * shared objects and needs __tls_get_addr with the module id: a patch for
 * the executable never has it (link.c refuses it there), a patch for a
 * shared library uses it for that library's thread-locals (below).
 */
#include <link.h>

#include "hp_internal.h"

static uintptr_t thread_pointer(void)
{
    uintptr_t tp;
    __asm__ volatile("mov %%fs:0, %0" : "=r"(tp));
    return tp;
}

struct tls_probe {
    int found;
    uint64_t memsz, align, vaddr;
    void *data; /* this thread's block, NULL if unknown */
};

static int first_tls_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    struct tls_probe *p = arg;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_TLS)
            continue;
        p->found = 1;
        p->memsz = ph->p_memsz;
        p->align = ph->p_align ? ph->p_align : 1;
        p->vaddr = ph->p_vaddr;
        /* dlpi_tls_data exists since glibc 2.4; check the struct is that new. */
        if (size >= offsetof(struct dl_phdr_info, dlpi_tls_data) + sizeof(void *))
            p->data = info->dlpi_tls_data;
    }
    return 1; /* the first entry is the main program */
}

int hp_tls_block_offset(int64_t *out, char *err, size_t errlen)
{
    static int done;
    static int64_t cached;
    if (done) {
        *out = cached;
        return 0;
    }
    struct tls_probe p = {0};
    dl_iterate_phdr(first_tls_cb, &p);
    if (!p.found)
        return hp_fail(err, errlen,
                       "the patch uses thread-local variables but the executable has no TLS "
                       "segment");
    if (p.align & (p.align - 1))
        return hp_fail(err, errlen, "the executable's TLS segment has a bad alignment %llu",
                       (unsigned long long)p.align);
    uint64_t firstbyte = (-p.vaddr) & (p.align - 1);
    uint64_t off = ((p.memsz - firstbyte + p.align - 1) & ~(p.align - 1)) + firstbyte;
    int64_t computed = -(int64_t)off;
    if (p.data) {
        int64_t measured = (int64_t)((uintptr_t)p.data - thread_pointer());
        if (measured != computed) {
            hp_log("TLS: block offset from PT_TLS is %lld, this thread's block is at TP%+lld; "
                   "using the measured one",
                   (long long)computed, (long long)measured);
            computed = measured;
        }
    }
    hp_log("TLS: executable block at TP%+lld (p_memsz %llu, p_align %llu)", (long long)computed,
           (unsigned long long)p.memsz, (unsigned long long)p.align);
    cached = computed;
    done = 1;
    *out = cached;
    return 0;
}

/*
 * Thread-locals of a shared library the patch is for. The library's own
 * code (-fPIC) reaches them through __tls_get_addr with a (module id,
 * offset) pair: general-dynamic (R_X86_64_TLSGD: the pair of one
 * variable) or local-dynamic (R_X86_64_TLSLD: the pair (module, 0), then
 * R_X86_64_DTPOFF32 adds each variable's offset). Patch code built the same
 * way needs only the library's module id, which dl_iterate_phdr reports;
 * the offset is the symbol's st_value. This works whether the library's
 * block is in static TLS or allocated on first use, in every thread.
 */
struct modid_probe {
    uintptr_t bias;
    size_t modid;
    int found;
};

static int modid_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    struct modid_probe *p = arg;
    if (size < offsetof(struct dl_phdr_info, dlpi_tls_modid) + sizeof info->dlpi_tls_modid)
        return 0;
    if (info->dlpi_addr != p->bias)
        return 0;
    p->found = 1;
    p->modid = info->dlpi_tls_modid;
    return 1;
}

int hp_tls_library_modid(uintptr_t bias, const char *name, size_t *modid, char *err,
                         size_t errlen)
{
    struct modid_probe p = {.bias = bias};
    dl_iterate_phdr(modid_cb, &p);
    if (!p.found)
        return hp_fail(err, errlen, "shared library %s is not in the dynamic linker's list",
                       name);
    if (p.modid == 0)
        return hp_fail(err, errlen,
                       "shared library %s has no TLS segment, but the patch uses a thread-local "
                       "of it",
                       name);
    *modid = p.modid;
    return 0;
}
