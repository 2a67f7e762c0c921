//! The deployed shape folded from the original compile's assembly
//! (src/shape.rs): GCC run with `-B` to a directory whose `as` is
//! `hpbuild as-wrap` must leave the sectioned object exactly as GCC makes it,
//! and write beside it an object whose code sections and relocations are
//! those of a compile without `-ffunction-sections` — what the base check
//! compares with the running program.

use object::{Object, ObjectSection};
use std::path::Path;
use std::process::Command;

const HPBUILD: &str = env!("CARGO_BIN_EXE_hpbuild");

/// A jump between neighbouring functions (relaxed to 2 bytes only within one
/// `.text`), a cold part (`.text.unlikely`) and `main` (`.text.startup`).
const SOURCE: &str = r#"
#include <stdio.h>
static int count;
__attribute__((noinline)) static int hello(int x) { count++; return printf("hello %d %d\n", x, count); }
int greet(int x) { return hello(x); }
__attribute__((cold, noinline)) static void report(int x) { fprintf(stderr, "bad %d\n", x); }
int check(int x)
{
    if (__builtin_expect(x < 0, 0)) { report(x); return -1; }
    return greet(x) + 1;
}
int main(int argc, char **argv) { (void)argv; return check(argc); }
"#;

fn gcc(dir: &Path, extra: &[&str], out: &str, pipe: bool) {
    let mut cmd = Command::new("gcc");
    cmd.current_dir(dir)
        .args(["-O2", "-g", "-c", "m.c", "-o", out])
        .args(extra);
    if pipe {
        cmd.arg("-pipe");
    }
    let st = cmd.status().expect("gcc runs");
    assert!(st.success(), "gcc {extra:?} failed");
}

/// A code section: name, bytes, (offset, relocation kind) pairs.
type Code = (String, Vec<u8>, Vec<(u64, String)>);

/// The code sections by name.
fn code(path: &Path) -> Vec<Code> {
    let bytes = std::fs::read(path).unwrap();
    let obj = object::File::parse(&*bytes).unwrap();
    let mut out: Vec<_> = obj
        .sections()
        .filter(|s| s.kind() == object::SectionKind::Text)
        .map(|s| {
            let relocs = s
                .relocations()
                .map(|(off, r)| (off, format!("{:?}", r.flags())))
                .collect();
            (
                s.name().unwrap().to_string(),
                s.data().unwrap().to_vec(),
                relocs,
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn the_folded_assembly_assembles_to_the_deployed_code() {
    if Command::new("gcc").arg("--version").output().is_err() {
        eprintln!("skipped: no gcc");
        return;
    }
    for pipe in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join("m.c"), SOURCE).unwrap();
        let tap = dir.join("tap");
        std::fs::create_dir(&tap).unwrap();
        let shim = tap.join("as");
        let derived = dir.join("derived.o");
        std::fs::write(
            &shim,
            format!(
                "#!/bin/sh\nexec '{HPBUILD}' as-wrap '{}' \"$@\"\n",
                derived.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();

        let sections = ["-ffunction-sections", "-fdata-sections"];
        let b = format!("-B{}/", tap.display());
        gcc(dir, &[sections[0], sections[1], &b], "tapped.o", pipe);
        gcc(dir, &sections, "sectioned.o", pipe);
        gcc(dir, &["-g0"], "deployed.o", pipe);

        assert_eq!(
            std::fs::read(dir.join("tapped.o")).unwrap(),
            std::fs::read(dir.join("sectioned.o")).unwrap(),
            "the tap changed the compile's own object (pipe {pipe})"
        );
        assert!(
            derived.is_file(),
            "as-wrap wrote no derived object (pipe {pipe})"
        );
        let (want, got) = (code(&dir.join("deployed.o")), code(&derived));
        let names = |c: &[Code]| c.iter().map(|s| s.0.clone()).collect::<Vec<_>>();
        assert_eq!(names(&got), names(&want), "code sections (pipe {pipe})");
        assert!(names(&want).contains(&".text.unlikely".to_string()));
        assert_eq!(got, want, "code or relocations differ (pipe {pipe})");
    }
}
