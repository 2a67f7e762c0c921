/*
 * The running executable's symbol table.
 *
 * Patches name what they replace and what they use by symbol, so we read the
 * full .symtab (not .dynsym, which has no statics) from /proc/self/exe —
 * that is the file actually running, even if it has since been replaced on
 * disk. The mapping is made once and cached for the life of the process,
 * with an index (hash tables by name and by (file, name), the addresses
 * sorted) built at the same time, outside any stop: a lookup costs the same
 * for a program of a hundred symbols or of a million.
 *
 * Runtime address = st_value + load bias; the bias is dlpi_addr of the first
 * dl_iterate_phdr entry (the main program; 0 for a non-PIE executable).
 *
 * Local symbols are grouped after the STT_FILE entry of their source file
 * (basename as the compiler wrote it). In an executable, symbols that had
 * hidden visibility are turned into locals by the linker; a global lookup
 * falls back to them when no real global matches.
 */
#include <fcntl.h>
#include <stdio.h>
#include <link.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hp_internal.h"

static struct hp_exe g_exe;
static int g_exe_loaded;
static struct hp_exe_stats g_stats;

long long hp_exe_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int first_phdr_cb(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    struct hp_exe *exe = data;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    exe->bias = info->dlpi_addr;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD)
            continue;
        uintptr_t a = info->dlpi_addr + ph->p_vaddr, b = a + ph->p_memsz;
        if (a < lo)
            lo = a;
        if (b > hi)
            hi = b;
    }
    exe->lo = lo & ~(uintptr_t)4095;
    exe->hi = (hi + 4095) & ~(uintptr_t)4095;
    return 1; /* only the first entry: the main program */
}

static void rdsym(const struct hp_exe *exe, size_t i, Elf64_Sym *s)
{
    memcpy(s, exe->map + exe->symoff + i * sizeof *s, sizeof *s);
}

static const char *exe_symname(const struct hp_exe *exe, const Elf64_Sym *s)
{
    return s->st_name < exe->strtab_size ? exe->strtab + s->st_name : "";
}

static int index_build(struct hp_exe *exe, char *err, size_t errlen);

/* Maps the ELF file `path` and reads its .symtab into exe; `place` fills
 * the runtime range (bias, lo, hi). `what`: "executable" or the library's
 * name, for the messages. */
static int load_object(struct hp_exe *exe, const char *path, const char *what,
                       void (*place)(struct hp_exe *, const void *), const void *arg, char *err,
                       size_t errlen)
{
    struct stat stbuf;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return hp_fail(err, errlen, "cannot open %s: %m", path);
    if (fstat(fd, &stbuf) < 0 || stbuf.st_size < (off_t)sizeof(Elf64_Ehdr)) {
        close(fd);
        return hp_fail(err, errlen, "cannot read %s", path);
    }
    size_t size = (size_t)stbuf.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return hp_fail(err, errlen, "cannot map %s: %m", path);
    const uint8_t *m = map;
    Elf64_Ehdr eh;
    memcpy(&eh, m, sizeof eh);
    int ok = memcmp(eh.e_ident, ELFMAG, SELFMAG) == 0 && eh.e_ident[EI_CLASS] == ELFCLASS64 &&
             eh.e_shentsize == sizeof(Elf64_Shdr) && eh.e_shoff <= size &&
             (uint64_t)eh.e_shnum * sizeof(Elf64_Shdr) <= size - eh.e_shoff;
    if (!ok) {
        munmap(map, size);
        return hp_fail(err, errlen, "%s is not a readable ELF64 file", path);
    }
    for (size_t i = 0; i < eh.e_shnum; i++) {
        Elf64_Shdr sh, str;
        memcpy(&sh, m + eh.e_shoff + i * sizeof sh, sizeof sh);
        if (sh.sh_type != SHT_SYMTAB || sh.sh_link >= eh.e_shnum)
            continue;
        memcpy(&str, m + eh.e_shoff + sh.sh_link * sizeof str, sizeof str);
        if (sh.sh_offset > size || sh.sh_size > size - sh.sh_offset || str.sh_offset > size ||
            str.sh_size > size - str.sh_offset || str.sh_size == 0 ||
            m[str.sh_offset + str.sh_size - 1] != 0)
            break;
        exe->map = m;
        exe->map_size = size;
        exe->symoff = sh.sh_offset;
        exe->nsyms = sh.sh_size / sizeof(Elf64_Sym);
        exe->first_global = sh.sh_info < exe->nsyms ? sh.sh_info : exe->nsyms;
        exe->strtab = (const char *)m + str.sh_offset;
        exe->strtab_size = str.sh_size;
        place(exe, arg);
        if (index_build(exe, err, errlen)) {
            munmap(map, size);
            return -1;
        }
        hp_log("%s symbols: %zu (bias %#lx, image %#lx-%#lx), indexed", what, exe->nsyms,
               (unsigned long)exe->bias, (unsigned long)exe->lo, (unsigned long)exe->hi);
        return 0;
    }
    munmap(map, size);
    return hp_fail(err, errlen, "%s has no symbol table; keep .symtab (do not strip)", what);
}

static void place_main(struct hp_exe *exe, const void *arg)
{
    (void)arg;
    dl_iterate_phdr(first_phdr_cb, exe);
}

static int load_exe(struct hp_exe *exe, char *err, size_t errlen)
{
    exe->name = "";
    return load_object(exe, "/proc/self/exe", "executable", place_main, NULL, err, errlen);
}

int hp_exe_get(const struct hp_exe **out, char *err, size_t errlen)
{
    g_stats.start_us = hp_exe_now_us();
    g_stats.load_us = 0;
    g_stats.lookups = 0;
    if (!g_exe_loaded) {
        if (load_exe(&g_exe, err, errlen))
            return -1;
        g_exe_loaded = 1;
        g_stats.load_us = hp_exe_now_us() - g_stats.start_us;
    }
    *out = &g_exe;
    return 0;
}

const struct hp_exe_stats *hp_exe_stats(void)
{
    return &g_stats;
}

/* ---- the index, built once when the symbols are loaded ------------------
 *
 * Three hash tables of symbol indices, each chain in ascending .symtab order
 * (so matches come out in the order a scan of the table would find them),
 * and the sorted addresses for hp_exe_room:
 *
 *   globals  every defined global or weak, keyed by its name up to the
 *            first '@' (a version suffix is ignored);
 *   locals   every defined local, keyed by (basename of the STT_FILE it
 *            follows, name): "dir/a.c" and "a.c" are the same file;
 *   hidden   the locals that were globals (hidden or internal visibility,
 *            or grouped after an empty STT_FILE), keyed like globals.
 *
 * Entries hold every symbol `usable(s, 0)`; the funcs_only filter is applied
 * at lookup time. */

struct hent {
    uint32_t sym, hash, next; /* next: entry index + 1, 0 ends the chain */
    uint32_t file;            /* locals: index of their STT_FILE symbol, 0 if none */
};

struct symhash {
    struct hent *ent;
    uint32_t *head; /* per bucket: first entry index + 1, 0 if empty */
    uint32_t n, mask;
};

struct hp_exe_index {
    struct symhash globals, locals, hidden;
    uintptr_t *addrs; /* runtime addresses of code and data symbols, sorted */
    size_t naddrs;
};

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

/* FNV-1a over [p, p+len). */
static uint32_t hash_bytes(uint32_t h, const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)p[i];
        h *= 16777619u;
    }
    return h;
}

#define HASH_SEED 2166136261u

/* Key of a global: the name up to its first '@'. A name matching `want`
 * (want itself, or want + "@...") has the same key as want. */
static uint32_t global_hash(const char *name)
{
    return hash_bytes(HASH_SEED, name, strcspn(name, "@"));
}

/* Key of a local: (basename of its file, name); the file part is hashed once
 * per STT_FILE. */
static uint32_t file_hash(const char *file)
{
    const char *b = base_name(file);
    return hash_bytes(HASH_SEED, b, strlen(b) + 1);
}

static uint32_t local_hash(uint32_t file_hash, const char *name)
{
    return hash_bytes(file_hash, name, strlen(name));
}

static int usable(const Elf64_Sym *s, int funcs_only)
{
    unsigned t = ELF64_ST_TYPE(s->st_info);
    if (s->st_shndx == SHN_UNDEF || t == STT_FILE || t == STT_SECTION)
        return 0;
    return !funcs_only || t == STT_FUNC || t == STT_GNU_IFUNC;
}

/* Sized for `cap` entries; filled by hash_add, chained by hash_link. */
static int hash_init(struct symhash *h, size_t cap)
{
    size_t nb = 16;
    while (nb < 2 * cap)
        nb *= 2;
    h->ent = malloc((cap ? cap : 1) * sizeof *h->ent);
    h->head = calloc(nb, sizeof *h->head);
    h->n = 0;
    h->mask = (uint32_t)(nb - 1);
    return h->ent && h->head ? 0 : -1;
}

static void hash_add(struct symhash *h, size_t sym, uint32_t hash, size_t file)
{
    h->ent[h->n++] = (struct hent){(uint32_t)sym, hash, 0, (uint32_t)file};
}

/* Chains the entries, the last first, so each chain is in .symtab order. */
static void hash_link(struct symhash *h)
{
    for (uint32_t e = h->n; e-- > 0;) {
        uint32_t *b = &h->head[h->ent[e].hash & h->mask];
        h->ent[e].next = *b;
        *b = e + 1;
    }
}

static void hash_free(struct symhash *h)
{
    free(h->ent);
    free(h->head);
}

static void index_free(struct hp_exe_index *x)
{
    if (!x)
        return;
    hash_free(&x->globals);
    hash_free(&x->locals);
    hash_free(&x->hidden);
    free(x->addrs);
    free(x);
}

/* Sorts a[0..n) with tmp[0..n) as scratch: LSD radix sort by bytes, skipping
 * the bytes all addresses share (glibc's qsort takes ~35 ns an element). */
static void sort_addrs(uintptr_t *a, uintptr_t *tmp, size_t n)
{
    for (unsigned shift = 0; shift < 8 * sizeof *a; shift += 8) {
        size_t count[257] = {0};
        for (size_t i = 0; i < n; i++)
            count[((a[i] >> shift) & 0xff) + 1]++;
        if (n == 0 || count[((a[0] >> shift) & 0xff) + 1] == n)
            continue; /* this byte is the same everywhere */
        for (int d = 0; d < 256; d++)
            count[d + 1] += count[d];
        for (size_t i = 0; i < n; i++)
            tmp[count[(a[i] >> shift) & 0xff]++] = a[i];
        memcpy(a, tmp, n * sizeof *a);
    }
}

/* The symbols hp_exe_room measures to: code and data with an address. */
static int has_address(const Elf64_Sym *s)
{
    return usable(s, 0) && s->st_shndx != SHN_ABS && ELF64_ST_TYPE(s->st_info) != STT_TLS;
}

static void index_fill(const struct hp_exe *exe, struct hp_exe_index *x, uintptr_t *tmp)
{
    Elf64_Sym s;
    size_t file = 0;        /* the STT_FILE the current locals follow (0: none yet) */
    const char *group = ""; /* its name */
    uint32_t fh = file_hash(group);
    for (size_t i = 1; i < exe->nsyms; i++) {
        rdsym(exe, i, &s);
        const char *name = exe_symname(exe, &s);
        if (i < exe->first_global && ELF64_ST_TYPE(s.st_info) == STT_FILE) {
            file = i;
            group = name;
            fh = file_hash(group);
        }
        if (has_address(&s))
            x->addrs[x->naddrs++] = s.st_value + exe->bias;
        if (!usable(&s, 0))
            continue;
        if (i >= exe->first_global) {
            hash_add(&x->globals, i, global_hash(name), 0);
            continue;
        }
        hash_add(&x->locals, i, local_hash(fh, name), file);
        unsigned vis = ELF64_ST_VISIBILITY(s.st_other);
        if (vis == STV_HIDDEN || vis == STV_INTERNAL || !*group)
            hash_add(&x->hidden, i, global_hash(name), 0);
    }
    hash_link(&x->globals);
    hash_link(&x->locals);
    hash_link(&x->hidden);
    sort_addrs(x->addrs, tmp, x->naddrs);
}

static int index_build(struct hp_exe *exe, char *err, size_t errlen)
{
    if (exe->nsyms >= UINT32_MAX)
        return hp_fail(err, errlen, "the executable has too many symbols (%zu)", exe->nsyms);
    struct hp_exe_index *x = calloc(1, sizeof *x);
    uintptr_t *tmp = NULL; /* scratch for sorting the addresses */
    size_t nlocal = exe->first_global, nglobal = exe->nsyms - exe->first_global;
    if (!x || hash_init(&x->globals, nglobal) || hash_init(&x->locals, nlocal) ||
        hash_init(&x->hidden, nlocal) || !(x->addrs = malloc((exe->nsyms + 1) * sizeof *x->addrs)) ||
        !(tmp = malloc((exe->nsyms + 1) * sizeof *tmp))) {
        index_free(x);
        free(tmp);
        return hp_fail(err, errlen, "out of memory indexing the executable's %zu symbols",
                       exe->nsyms);
    }
    index_fill(exe, x, tmp);
    free(tmp);
    exe->index = x;
    return 0;
}

/* ---- lookups -------------------------------------------------------------- */

/* "name" equals "want", ignoring a version suffix "@VER" / "@@VER" on name. */
static int name_eq(const char *name, const char *want)
{
    size_t n = strlen(want);
    return strncmp(name, want, n) == 0 && (name[n] == 0 || name[n] == '@');
}

static void add(const struct hp_exe *exe, const Elf64_Sym *s, struct hp_symref *out, int max,
                int *n)
{
    if (*n < max) {
        /* A thread-local's st_value is its offset in the TLS block, not an address. */
        int absolute = s->st_shndx == SHN_ABS || ELF64_ST_TYPE(s->st_info) == STT_TLS;
        out[*n].addr = absolute ? s->st_value : s->st_value + exe->bias;
        out[*n].size = s->st_size;
        out[*n].type = ELF64_ST_TYPE(s->st_info);
        out[*n].bind = ELF64_ST_BIND(s->st_info);
    }
    (*n)++;
}

/* The static `name` of `file` (same file: equal paths or equal basenames). */
static int lookup_local(const struct hp_exe *exe, const char *file, const char *name,
                        int funcs_only, struct hp_symref *out, int max)
{
    const struct symhash *h = &exe->index->locals;
    uint32_t hash = local_hash(file_hash(file), name);
    const char *want_base = base_name(file);
    Elf64_Sym s, fs;
    int n = 0;
    for (uint32_t e = h->head[hash & h->mask]; e; e = h->ent[e - 1].next) {
        const struct hent *en = &h->ent[e - 1];
        if (en->hash != hash)
            continue;
        rdsym(exe, en->sym, &s);
        rdsym(exe, en->file, &fs);
        const char *group = en->file ? exe_symname(exe, &fs) : "";
        if (usable(&s, funcs_only) && strcmp(exe_symname(exe, &s), name) == 0 &&
            strcmp(base_name(group), want_base) == 0)
            add(exe, &s, out, max, &n);
    }
    return n;
}

/* The entry (1-based) after `e` (0: from the start) in the chain of `hash`
 * of a globals-keyed table that is a usable `name`, version suffix ignored;
 * 0 at the end. The symbol is read into *s. */
static uint32_t next_global(const struct hp_exe *exe, const struct symhash *h, uint32_t e,
                            uint32_t hash, const char *name, int funcs_only, Elf64_Sym *s)
{
    for (e = e ? h->ent[e - 1].next : h->head[hash & h->mask]; e; e = h->ent[e - 1].next) {
        if (h->ent[e - 1].hash != hash)
            continue;
        rdsym(exe, h->ent[e - 1].sym, s);
        if (usable(s, funcs_only) && name_eq(exe_symname(exe, s), name))
            return e;
    }
    return 0;
}

int hp_exe_lookup(const struct hp_exe *exe, const char *file, const char *name, int funcs_only,
                  struct hp_symref *out, int max)
{
    Elf64_Sym s;
    int n = 0;
    g_stats.lookups++;
    if (file && *file)
        return lookup_local(exe, file, name, funcs_only, out, max);
    /* Globals: prefer STB_GLOBAL over STB_WEAK. */
    int weak_n = 0;
    struct hp_symref weak[4];
    uint32_t hash = global_hash(name);
    const struct hp_exe_index *x = exe->index;
    for (uint32_t e = 0; (e = next_global(exe, &x->globals, e, hash, name, funcs_only, &s));) {
        if (ELF64_ST_BIND(s.st_info) == STB_WEAK)
            add(exe, &s, weak, 4, &weak_n);
        else
            add(exe, &s, out, max, &n);
    }
    if (n == 0 && weak_n > 0) {
        for (int i = 0; i < weak_n && i < 4 && i < max; i++)
            out[i] = weak[i];
        n = weak_n;
    }
    if (n)
        return n;
    /* Hidden globals became locals at link time. GNU ld keeps their
     * visibility in some builds and resets it to DEFAULT in others (Lua's
     * LUAI_FUNC, visibility "internal"), but always lists them after a final
     * STT_FILE entry with an empty name, apart from every file's statics. */
    for (uint32_t e = 0; (e = next_global(exe, &x->hidden, e, hash, name, funcs_only, &s));)
        add(exe, &s, out, max, &n);
    return n;
}

uint64_t hp_exe_room(const struct hp_exe *exe, uintptr_t addr)
{
    const struct hp_exe_index *x = exe->index;
    size_t lo = 0, hi = x->naddrs; /* first address > addr */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (x->addrs[mid] > addr)
            hi = mid;
        else
            lo = mid + 1;
    }
    uintptr_t next = lo < x->naddrs && x->addrs[lo] < exe->hi ? x->addrs[lo] : exe->hi;
    return addr < next ? (uint64_t)(next - addr) : 0;
}

/* ---- shared libraries a patch is for ------------------------------------ */

/* A loaded library, found by its path, file name or soname. */
struct lib_find {
    const char *want;
    char path[4096];
    uintptr_t bias, lo, hi;
    int found;
};

static const char *file_part(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

/* "liblua5.4.so.0" names "/usr/lib/liblua5.4.so.0" (the soname, which is
 * how the dynamic linker found it) and "liblua5.4.so" names it too. */
static int names_library(const char *want, const char *path)
{
    if (!*path)
        return 0;
    const char *f = file_part(path);
    size_t n = strlen(want);
    return strcmp(want, path) == 0 || strcmp(file_part(want), f) == 0 ||
           (strncmp(f, want, n) == 0 && f[n] == '.');
}

static int lib_phdr_cb(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    struct lib_find *lf = data;
    if (!info->dlpi_name || !names_library(lf->want, info->dlpi_name))
        return 0;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD)
            continue;
        uintptr_t a = info->dlpi_addr + ph->p_vaddr, b = a + ph->p_memsz;
        lo = a < lo ? a : lo;
        hi = b > hi ? b : hi;
    }
    snprintf(lf->path, sizeof lf->path, "%s", info->dlpi_name);
    lf->bias = info->dlpi_addr;
    lf->lo = lo & ~(uintptr_t)4095;
    lf->hi = (hi + 4095) & ~(uintptr_t)4095;
    lf->found = 1;
    return 1;
}

static void place_lib(struct hp_exe *exe, const void *arg)
{
    const struct lib_find *lf = arg;
    exe->bias = lf->bias;
    exe->lo = lf->lo;
    exe->hi = lf->hi;
}

struct lib_entry {
    struct hp_exe obj;
    char *want;
    struct lib_entry *next;
};
static struct lib_entry *g_libs;

int hp_target_get(const char *target, const struct hp_exe **out, char *err, size_t errlen)
{
    if (!target || !*target)
        return hp_exe_get(out, err, errlen);
    g_stats.start_us = hp_exe_now_us();
    g_stats.load_us = 0;
    g_stats.lookups = 0;
    struct lib_find lf = {.want = target};
    dl_iterate_phdr(lib_phdr_cb, &lf);
    if (!lf.found) {
        hp_fail(err, errlen,
                "the patch is for shared library %s, which this process has not loaded", target);
        return 1;
    }
    for (struct lib_entry *e = g_libs; e; e = e->next) /* loaded before, same place */
        if (strcmp(e->want, target) == 0 && e->obj.bias == lf.bias) {
            *out = &e->obj;
            return 0;
        }
    struct lib_entry *e = calloc(1, sizeof *e);
    if (!e || !(e->want = strdup(target))) {
        free(e);
        return hp_fail(err, errlen, "out of memory");
    }
    e->obj.name = e->want;
    if (load_object(&e->obj, lf.path, target, place_lib, &lf, err, errlen)) {
        free(e->want);
        free(e);
        return -1;
    }
    g_stats.load_us = hp_exe_now_us() - g_stats.start_us;
    e->next = g_libs;
    g_libs = e;
    *out = &e->obj;
    return 0;
}
