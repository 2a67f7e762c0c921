/*
 * The running executable's symbol table.
 *
 * Patches name what they replace and what they use by symbol, so we read the
 * full .symtab (not .dynsym, which has no statics) from /proc/self/exe —
 * that is the file actually running, even if it has since been replaced on
 * disk. The mapping is made once and cached for the life of the process.
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
#include <link.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hp_internal.h"

static struct hp_exe g_exe;
static int g_exe_loaded;

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

static int load_exe(struct hp_exe *exe, char *err, size_t errlen)
{
    struct stat stbuf;
    int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return hp_fail(err, errlen, "cannot open /proc/self/exe: %m");
    if (fstat(fd, &stbuf) < 0 || stbuf.st_size < (off_t)sizeof(Elf64_Ehdr)) {
        close(fd);
        return hp_fail(err, errlen, "cannot read /proc/self/exe");
    }
    size_t size = (size_t)stbuf.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return hp_fail(err, errlen, "cannot map /proc/self/exe: %m");
    const uint8_t *m = map;
    Elf64_Ehdr eh;
    memcpy(&eh, m, sizeof eh);
    int ok = memcmp(eh.e_ident, ELFMAG, SELFMAG) == 0 && eh.e_ident[EI_CLASS] == ELFCLASS64 &&
             eh.e_shentsize == sizeof(Elf64_Shdr) && eh.e_shoff <= size &&
             (uint64_t)eh.e_shnum * sizeof(Elf64_Shdr) <= size - eh.e_shoff;
    if (!ok) {
        munmap(map, size);
        return hp_fail(err, errlen, "/proc/self/exe is not a readable ELF64 file");
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
        dl_iterate_phdr(first_phdr_cb, exe);
        hp_log("executable symbols: %zu (bias %#lx, image %#lx-%#lx)", exe->nsyms,
               (unsigned long)exe->bias, (unsigned long)exe->lo, (unsigned long)exe->hi);
        return 0;
    }
    munmap(map, size);
    return hp_fail(err, errlen, "executable has no symbol table; keep .symtab (do not strip)");
}

int hp_exe_get(const struct hp_exe **out, char *err, size_t errlen)
{
    if (!g_exe_loaded) {
        if (load_exe(&g_exe, err, errlen))
            return -1;
        g_exe_loaded = 1;
    }
    *out = &g_exe;
    return 0;
}

/* "name" equals "want", ignoring a version suffix "@VER" / "@@VER" on name. */
static int name_eq(const char *name, const char *want)
{
    size_t n = strlen(want);
    return strncmp(name, want, n) == 0 && (name[n] == 0 || name[n] == '@');
}

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static int file_eq(const char *have, const char *want)
{
    return strcmp(have, want) == 0 || strcmp(base_name(have), base_name(want)) == 0;
}

static int usable(const Elf64_Sym *s, int funcs_only)
{
    unsigned t = ELF64_ST_TYPE(s->st_info);
    if (s->st_shndx == SHN_UNDEF || t == STT_FILE || t == STT_SECTION)
        return 0;
    return !funcs_only || t == STT_FUNC || t == STT_GNU_IFUNC;
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

int hp_exe_lookup(const struct hp_exe *exe, const char *file, const char *name, int funcs_only,
                  struct hp_symref *out, int max)
{
    Elf64_Sym s;
    int n = 0;
    if (file && *file) {
        const char *cur = "";
        for (size_t i = 1; i < exe->first_global; i++) {
            rdsym(exe, i, &s);
            if (ELF64_ST_TYPE(s.st_info) == STT_FILE) {
                cur = exe_symname(exe, &s);
                continue;
            }
            if (usable(&s, funcs_only) && file_eq(cur, file) &&
                strcmp(exe_symname(exe, &s), name) == 0)
                add(exe, &s, out, max, &n);
        }
        return n;
    }
    /* Globals: prefer STB_GLOBAL over STB_WEAK. */
    int weak_n = 0;
    struct hp_symref weak[4];
    for (size_t i = exe->first_global; i < exe->nsyms; i++) {
        rdsym(exe, i, &s);
        if (!usable(&s, funcs_only) || !name_eq(exe_symname(exe, &s), name))
            continue;
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
    const char *group = "";
    for (size_t i = 1; i < exe->first_global; i++) {
        rdsym(exe, i, &s);
        if (ELF64_ST_TYPE(s.st_info) == STT_FILE) {
            group = exe_symname(exe, &s);
            continue;
        }
        unsigned vis = ELF64_ST_VISIBILITY(s.st_other);
        int was_global = vis == STV_HIDDEN || vis == STV_INTERNAL || !*group;
        if (was_global && usable(&s, funcs_only) && name_eq(exe_symname(exe, &s), name))
            add(exe, &s, out, max, &n);
    }
    return n;
}

uint64_t hp_exe_room(const struct hp_exe *exe, uintptr_t addr)
{
    uintptr_t next = exe->hi;
    Elf64_Sym s;
    for (size_t i = 1; i < exe->nsyms; i++) {
        rdsym(exe, i, &s);
        if (!usable(&s, 0) || s.st_shndx == SHN_ABS || ELF64_ST_TYPE(s.st_info) == STT_TLS)
            continue;
        uintptr_t a = s.st_value + exe->bias;
        if (a > addr && a < next)
            next = a;
    }
    return addr < next ? (uint64_t)(next - addr) : 0;
}
