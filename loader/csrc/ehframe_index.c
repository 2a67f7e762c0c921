/*
 * Where the stack walker finds unwind information (overview in unwind.c).
 *
 * Before the stop (hp_unwind_prepare, which may lock and malloc: a parked
 * thread may hold the dynamic loader's or malloc's lock, so none of this can
 * run while threads are stopped): every loaded object's executable range and
 * PT_GNU_EH_FRAME binary-search table through dl_iterate_phdr (the
 * executable, every shared library, the vDSO); for each applied patch, a
 * sorted FDE table built from its .eh_frame (a patch has no eh_frame_hdr);
 * and a /proc/self/maps snapshot for the safe reads.
 *
 * While stopped: hp_ehframe_find_obj / hp_ehframe_find_fde look a pc up in
 * those tables, reading only through hp_unwind_read_mem.
 */
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "unwind_internal.h"

/* ---- FDE lookup ----------------------------------------------------------- */

const struct obj *hp_ehframe_find_obj(const struct hp_unwind *u, uintptr_t pc)
{
    for (size_t i = 0; i < u->nobjs; i++)
        if (pc >= u->objs[i].lo && pc < u->objs[i].hi)
            return &u->objs[i];
    return NULL;
}

/* Finds the FDE covering pc: 0 found, -1 none. */
int hp_ehframe_find_fde(struct hp_unwind *u, const struct obj *o, uintptr_t pc, struct fde *f)
{
    uintptr_t fde = 0;
    size_t lo = 0, hi = o->count;
    while (lo < hi) { /* last entry with start <= pc */
        size_t mid = (lo + hi) / 2;
        uintptr_t start, addr;
        if (o->patch_tab) {
            start = o->patch_tab[2 * mid];
            addr = o->patch_tab[2 * mid + 1];
        } else {
            int32_t e[2]; /* DW_EH_PE_datarel|sdata4, relative to the hdr */
            if (hp_unwind_read_mem(u, o->table + mid * 8, e, 8))
                return -1;
            start = o->hdr + (intptr_t)e[0];
            addr = o->hdr + (intptr_t)e[1];
        }
        if (start <= pc) {
            fde = addr;
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (!fde || hp_cfi_parse_fde(u, fde, f))
        return -1;
    return pc >= f->pc_lo && pc < f->pc_hi ? 0 : -1;
}

/* ---- preparation (before the stop: may lock and malloc) ------------------------ */

static struct obj *new_obj(struct hp_unwind *u)
{
    if (u->nobjs == u->capobjs) {
        size_t cap = u->capobjs ? u->capobjs * 2 : 32;
        struct obj *n = realloc(u->objs, cap * sizeof *n);
        if (!n)
            return NULL;
        u->objs = n;
        u->capobjs = cap;
    }
    struct obj *o = &u->objs[u->nobjs++];
    memset(o, 0, sizeof *o);
    return o;
}

static int phdr_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    struct hp_unwind *u = arg;
    uintptr_t lo = UINTPTR_MAX, hi = 0, hdr = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *p = &info->dlpi_phdr[i];
        if (p->p_type == PT_LOAD && (p->p_flags & PF_X)) {
            uintptr_t a = info->dlpi_addr + p->p_vaddr;
            if (a < lo)
                lo = a;
            if (a + p->p_memsz > hi)
                hi = a + p->p_memsz;
        } else if (p->p_type == PT_GNU_EH_FRAME) {
            hdr = info->dlpi_addr + p->p_vaddr;
        }
    }
    if (hi == 0)
        return 0;
    struct obj *o = new_obj(u);
    if (!o)
        return 1;
    o->lo = lo;
    o->hi = hi;
    o->hdr = hdr;
    const char *name = info->dlpi_name && *info->dlpi_name ? info->dlpi_name : "the program";
    const char *slash = strrchr(name, '/');
    snprintf(o->name, sizeof o->name, "%s", slash ? slash + 1 : name);
    /* version 1, eh_frame_ptr enc, fde_count enc, table enc = datarel|sdata4 */
    uint8_t h[4];
    if (hdr && hp_unwind_read_mem(u, hdr, h, 4) == 0 && h[0] == 1 && h[3] == 0x3b) {
        struct cur c = {u, hdr + 4, hdr + 32, 0};
        hp_cfi_ptr(&c, h[1], 0);
        uint64_t n = hp_cfi_ptr(&c, h[2], 0);
        if (!c.bad && n < (1u << 26)) {
            o->table = c.p;
            o->count = (size_t)n;
        }
    }
    return 0;
}

static int cmp_pair(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

/* A patch's .eh_frame has no search table: scan it once and sort the FDEs
 * that describe code inside the patch region (FDEs of functions the patch
 * did not include point elsewhere and are ignored). */
static int add_patch(struct hp_unwind *u, const struct hp_code_info *ci)
{
    struct obj *o = new_obj(u);
    if (!o)
        return -1;
    o->lo = ci->lo;
    o->hi = ci->hi;
    snprintf(o->name, sizeof o->name, "patch %s", ci->name);
    if (!ci->eh_frame)
        return 0;
    size_t cap = 64, n = 0;
    uintptr_t *tab = malloc(cap * 2 * sizeof *tab);
    for (uintptr_t at = ci->eh_frame; tab && at + 4 <= ci->eh_frame + ci->eh_size;) {
        uintptr_t body;
        uint64_t len = hp_cfi_entry_len(u, at, &body);
        struct fde f;
        if (!len)
            break;
        uint32_t id = 0;
        hp_unwind_read_mem(u, body, &id, 4);
        if (id != 0 && hp_cfi_parse_fde(u, at, &f) == 0 && f.pc_lo >= ci->lo && f.pc_lo < ci->hi) {
            if (n == cap) {
                uintptr_t *t2 = realloc(tab, cap * 4 * sizeof *tab);
                if (!t2)
                    break;
                tab = t2;
                cap *= 2;
            }
            tab[2 * n] = f.pc_lo;
            tab[2 * n + 1] = at;
            n++;
        }
        at = body + len;
    }
    if (!tab)
        return -1;
    qsort(tab, n, 2 * sizeof *tab, cmp_pair);
    o->patch_tab = tab;
    o->count = n;
    return 0;
}

static int read_maps(struct hp_unwind *u)
{
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f)
        return -1;
    size_t cap = 0;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char perm[5];
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, perm) != 3)
            continue;
        if (u->nmaps == cap) {
            cap = cap ? cap * 2 : 128;
            struct map *n = realloc(u->maps, cap * sizeof *n);
            if (!n) {
                fclose(f);
                return -1;
            }
            u->maps = n;
        }
        u->maps[u->nmaps++] = (struct map){lo, hi, perm[0] == 'r', perm[1] == 'w', perm[2] == 'x'};
    }
    fclose(f);
    return 0; /* the kernel lists mappings sorted by address */
}

int hp_unwind_prepare(struct hp_unwind **out, const struct hp_code_info *extra, size_t nextra,
                      char *err, size_t errlen)
{
    struct hp_unwind *u = calloc(1, sizeof *u);
    if (!u)
        return hp_fail(err, errlen, "out of memory");
    u->pid = getpid();
    if (read_maps(u)) {
        hp_unwind_free(u);
        return hp_fail(err, errlen, "cannot read /proc/self/maps: %m");
    }
    uint64_t probe = 0x1234, got = 0;
    struct iovec l = {&got, 8}, r = {&probe, 8};
    u->vm_ok = process_vm_readv(u->pid, &l, 1, &r, 1, 0) == 8 && got == probe;
    for (size_t i = 0; i < nextra; i++)
        if (add_patch(u, &extra[i])) {
            hp_unwind_free(u);
            return hp_fail(err, errlen, "out of memory");
        }
    /* Patches first: hp_ehframe_find_obj takes the first match. */
    if (dl_iterate_phdr(phdr_cb, u)) {
        hp_unwind_free(u);
        return hp_fail(err, errlen, "out of memory");
    }
    *out = u;
    return 0;
}

void hp_unwind_free(struct hp_unwind *u)
{
    if (!u)
        return;
    for (size_t i = 0; i < u->nobjs; i++)
        free(u->objs[i].patch_tab);
    free(u->objs);
    free(u->maps);
    free(u);
}
