//! Small C programs built with gcc and clang at several levels and flags: the finder's
//! sites must be exactly the rel32 `call`/`jmp`/`jcc` instructions objdump shows going to
//! the targets, byte for byte, and nothing reached only through a function pointer.

mod common;

use callsites::Kind;
use common::*;
use object::Object;
use std::path::Path;

/// The targets live in their own unit, so callers reach them through a relocation and
/// the assembler keeps the rel32 forms; `h` sits next to its callers, where the
/// assembler relaxes a tail jump to `jmp rel8` (which must not be reported).
const TARGETS_C: &str = r#"
int f(int x) { return x * 3 + 1; }
int g(int x) { return x ^ 0x55; }
"#;

const PROG_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>

int f(int x);
int g(int x);
__attribute__((noinline)) int h(int x) { return x - 3; }

int (*volatile fp)(int) = f;

__attribute__((noinline)) int caller_call(int x) { return f(x) + 1; }
__attribute__((noinline)) int caller_tail(int x) { return f(x); }
__attribute__((noinline)) int caller_cond_tail(int x) {
    if (x > 10)
        return f(x);
    return x - 7;
}
/* Reaches f only through a pointer: never a site. */
__attribute__((noinline)) int caller_ptr(int x) { return fp(x) + 2; }
__attribute__((noinline)) int caller_both(int x) { return f(x) * g(x); }
__attribute__((noinline)) int caller_loop(int n) {
    int s = 0;
    for (int i = 0; i < n; i++)
        s += f(i);
    return s;
}
__attribute__((noinline)) int caller_h(int x) { return h(x); }
__attribute__((noinline)) int caller_h2(int x) { return h(x) + h(x + 1); }

int main(int argc, char **argv) {
    int x = argc > 1 ? atoi(argv[1]) : argc;
    printf("%d\n", caller_call(x) + caller_tail(x) + caller_cond_tail(x) + caller_ptr(x) +
                       caller_both(x) + caller_loop(x) + caller_h(x) + caller_h2(x));
    return 0;
}
"#;

#[derive(Default)]
struct Totals {
    builds: usize,
    by_kind: [usize; 3],
    rel8_seen: usize,
}

/// Builds one configuration and checks it against objdump; returns the number of sites to `f`.
fn check(
    dir: &Path,
    tag: &str,
    compiler: &str,
    cflags: &[&str],
    ldflags: &[&str],
    totals: &mut Totals,
) -> usize {
    let sub = dir.join(tag);
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("prog.c"), PROG_C).unwrap();
    std::fs::write(sub.join("targets.c"), TARGETS_C).unwrap();
    let mut args: Vec<&str> = cflags.to_vec();
    args.extend(["prog.c", "targets.c", "-o", "prog"]);
    args.extend(ldflags);
    cc(&sub, compiler, &args);
    let path = sub.join("prog");
    let elf = std::fs::read(&path).unwrap();
    let targets = [func(&elf, "f").0, func(&elf, "g").0, func(&elf, "h").0];

    let found = callsites::in_elf(&elf, &targets).unwrap_or_else(|e| panic!("{tag}: {e}"));
    let ours = as_seen(&found.sites, &targets);
    let (expected, rel8) = objdump_branches(&path, &targets);
    assert_eq!(ours, expected, "{tag}: finder vs objdump");
    // Undecodable warnings would mean the finder gave up on compiler output.
    for w in &found.warnings {
        assert!(
            matches!(w.kind, callsites::WarningKind::Empty),
            "{tag}: unexpected warning: {w}"
        );
    }
    // Nothing inside the function that calls through the pointer.
    let (p, psize) = func(&elf, "caller_ptr");
    assert!(
        !found
            .sites
            .iter()
            .any(|s| s.addr >= p && s.addr < p + psize),
        "{tag}: a site inside caller_ptr, which reaches f only through fp"
    );
    if cflags.iter().any(|f| f.starts_with("-fcf-protection")) {
        assert_eq!(
            code_at(&elf, func(&elf, "f").0, 4),
            [0xf3, 0x0f, 0x1e, 0xfa],
            "{tag}: no endbr64 at f"
        );
    }
    for s in &found.sites {
        totals.by_kind[match s.kind {
            Kind::Call => 0,
            Kind::Jmp => 1,
            Kind::Jcc => 2,
        }] += 1;
    }
    totals.rel8_seen += rel8.len();
    totals.builds += 1;
    ours.iter().filter(|s| s.target == targets[0]).count()
}

#[test]
fn executables_match_objdump() {
    let dir = tempfile::tempdir().unwrap();
    let compilers = compilers();
    let mut totals = Totals::default();
    for compiler in &compilers {
        for opt in ["-O0", "-O2", "-Os"] {
            for cf in [None, Some("-fcf-protection=full")] {
                for (link, ldflags) in [("pie", &[][..]), ("nopie", &["-no-pie"][..])] {
                    let mut cflags = vec![opt];
                    if link == "nopie" {
                        cflags.push("-fno-pie");
                    }
                    cflags.extend(cf);
                    let tag = format!(
                        "{compiler}{opt}{}-{link}",
                        if cf.is_some() { "-cf" } else { "" }
                    );
                    let to_f = check(dir.path(), &tag, compiler, &cflags, ldflags, &mut totals);
                    assert!(
                        to_f >= 5,
                        "{tag}: {to_f} sites to f (the program has at least 5 direct calls)"
                    );
                }
            }
        }
    }
    assert_eq!(totals.builds, compilers.len() * 12);
    assert!(totals.by_kind[0] > 0, "no call sites found in any build");
    assert!(
        totals.by_kind[1] > 0,
        "no tail-call jmp sites found in any build"
    );
    if compilers.contains(&"clang") {
        // clang -Os turns `if (x > 10) return f(x);` into `jg f`.
        assert!(
            totals.by_kind[2] > 0,
            "no conditional tail call (jcc) found in any build"
        );
    }
    assert!(
        totals.rel8_seen > 0,
        "no rel8 branch to a target in any build: the rel8 exclusion went untested"
    );
}

/// Shared objects: `f` called through the PLT (default visibility) has no direct sites;
/// with hidden visibility or -Bsymbolic the calls are direct and must all be found.
#[test]
fn shared_objects_match_objdump() {
    let dir = tempfile::tempdir().unwrap();
    let mut direct = 0;
    for compiler in compilers() {
        for (tag, flags) in [
            ("default", &[][..]),
            ("hidden", &["-fvisibility=hidden"][..]),
            ("symbolic", &["-Wl,-Bsymbolic"][..]),
        ] {
            let tag = format!("{compiler}-so-{tag}");
            let mut cflags = vec!["-O2", "-fPIC", "-shared"];
            cflags.extend(flags);
            let n = check(
                dir.path(),
                &tag,
                compiler,
                &cflags,
                &[],
                &mut Totals::default(),
            );
            if tag.ends_with("default") {
                assert_eq!(n, 0, "{tag}: default-visibility calls go through the PLT");
            } else {
                direct += n;
            }
        }
    }
    assert!(
        direct > 0,
        "no direct site in any hidden/-Bsymbolic shared object"
    );
}

/// A stripped executable keeps only .dynsym: with -rdynamic every function here is in it,
/// and the sites must be the same as with .symtab.
#[test]
fn dynsym_fallback_finds_the_same_sites() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("prog.c"), PROG_C).unwrap();
    std::fs::write(d.join("targets.c"), TARGETS_C).unwrap();
    cc(
        d,
        "gcc",
        &["-O2", "-rdynamic", "prog.c", "targets.c", "-o", "prog"],
    );
    let out = std::process::Command::new("strip")
        .current_dir(d)
        .args(["--strip-all", "-o", "prog.stripped", "prog"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "strip: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let full = std::fs::read(d.join("prog")).unwrap();
    let stripped = std::fs::read(d.join("prog.stripped")).unwrap();
    let file = object::File::parse(&*stripped).unwrap();
    assert!(
        file.section_by_name(".symtab").is_none(),
        "strip left .symtab"
    );
    let targets = [func(&full, "f").0, func(&full, "g").0];
    let a = callsites::in_elf(&full, &targets).unwrap();
    let b = callsites::in_elf(&stripped, &targets).unwrap();
    assert!(!a.sites.is_empty());
    assert_eq!(a.sites, b.sites);
}
