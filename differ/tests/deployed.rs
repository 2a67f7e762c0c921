//! `differ::use_deployed_shape`: the base check of a replaced function comes
//! from the unit compiled as the deployed build was (one `.text`), where the
//! assembler encodes jumps between the unit's functions differently.

mod common;

use common::*;
use object::{Object, ObjectSection, ObjectSymbol, RelocationFlags};
use std::path::Path;
use std::process::Command;

const GREET: &str = r#"
volatile int mood = 1;
static __attribute__((noinline)) int hello(void) { return mood + 1; }
static __attribute__((noinline)) int shout(void) { return mood * 10; }
int greet(void) { return hello(); }
int (*volatile use_shout)(void) = shout;
"#;

/// `src` as `main.c` compiled with `gcc <opt> -c` and nothing else: the
/// shape of a deployed build.
fn compile_deployed(dir: &Path, src: &str, opt: &str) -> Vec<u8> {
    let sub = dir.join("deployed");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("main.c"), src).unwrap();
    let out = Command::new("gcc")
        .args([opt, "-c", "main.c", "-o", "main.o"])
        .current_dir(&sub)
        .output()
        .expect("gcc runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(sub.join("main.o")).unwrap()
}

/// Size, masks and fingerprint of `function` in `obj`, read with the
/// `object` crate: only the relocations inside the function count.
fn check_of(obj: &[u8], function: &str) -> (u64, Vec<(u32, u32)>, u64) {
    let file = object::File::parse(obj).unwrap();
    let sym = file.symbols().find(|s| s.name() == Ok(function)).unwrap();
    let sec = file.section_by_index(sym.section_index().unwrap()).unwrap();
    let (start, end) = (sym.address(), sym.address() + sym.size());
    let code = &sec.data().unwrap()[start as usize..end as usize];
    let mut masks = Vec::new();
    for (off, r) in sec.relocations() {
        if off < start || off >= end {
            continue;
        }
        let RelocationFlags::Elf { r_type } = r.flags() else {
            panic!("not ELF")
        };
        assert_eq!(r.size(), 32, "only 4-byte fields expected here");
        assert!(r_type == object::elf::R_X86_64_PC32 || r_type == object::elf::R_X86_64_PLT32);
        masks.push(((off - start) as u32, 4));
    }
    (sym.size(), masks.clone(), format::fingerprint(code, &masks))
}

#[test]
fn relaxed_tail_call_is_checked_as_deployed() {
    let patched = GREET.replace("return hello();", "return shout();");
    let mut c = diff(GREET, &patched, "-O2");
    let dir = tempfile::tempdir().unwrap();
    let deployed = compile_deployed(dir.path(), GREET, "-O2");
    let sectioned = check_of(&c.orig, "greet");
    let r = c
        .diff
        .replacements
        .iter()
        .find(|r| r.name == "greet")
        .unwrap();
    assert_eq!(r.old_size, 5, "jmp rel32 in its own section: {:#?}", c.diff);
    assert_eq!((r.old_size, r.fingerprint), (sectioned.0, sectioned.2));

    differ::use_deployed_shape(&mut c.diff, &c.orig, &deployed).unwrap();
    let r = c
        .diff
        .replacements
        .iter()
        .find(|r| r.name == "greet")
        .unwrap();
    let (size, masks, fingerprint) = check_of(&deployed, "greet");
    assert_eq!(size, 2, "gcc -O2 encodes the tail call as jmp rel8");
    assert!(masks.is_empty(), "the assembler resolved the jump itself");
    assert_eq!(
        (r.old_size, &r.masks, r.fingerprint),
        (size, &masks, fingerprint)
    );
    assert!(
        c.diff
            .notes
            .iter()
            .any(|n| n.starts_with("greet:") && n.contains("2 bytes") && n.contains("in 5")),
        "{:#?}",
        c.diff.notes
    );
}

#[test]
fn same_code_in_both_shapes_keeps_the_check_and_adds_no_note() {
    // -O0: the call stays 5 bytes; only the masked field differs.
    let patched = GREET.replace("return hello();", "return shout();");
    let mut c = diff(GREET, &patched, "-O0");
    let dir = tempfile::tempdir().unwrap();
    let deployed = compile_deployed(dir.path(), GREET, "-O0");
    let before = c.diff.replacements.clone();
    differ::use_deployed_shape(&mut c.diff, &c.orig, &deployed).unwrap();
    let greet = |rs: &[differ::Replacement]| {
        let r = rs.iter().find(|r| r.name == "greet").unwrap();
        (r.old_size, r.fingerprint)
    };
    assert_eq!(greet(&before).0, greet(&c.diff.replacements).0);
    // The deployed call to hello() carries no relocation (the assembler
    // resolved it), so its field is checked exactly; otherwise the code is
    // the same, and no note is due.
    assert!(
        !c.diff.notes.iter().any(|n| n.starts_with("greet:")),
        "{:#?}",
        c.diff.notes
    );
}

#[test]
fn function_missing_from_the_deployed_shape_keeps_the_sectioned_check() {
    let patched = GREET.replace("return hello();", "return shout();");
    let mut c = diff(GREET, &patched, "-O2");
    let dir = tempfile::tempdir().unwrap();
    // A deployed object without greet() (renamed): nothing to take.
    let deployed = compile_deployed(dir.path(), &GREET.replace("greet", "welcome"), "-O2");
    let before = c.diff.replacements.clone();
    differ::use_deployed_shape(&mut c.diff, &c.orig, &deployed).unwrap();
    let r = c
        .diff
        .replacements
        .iter()
        .find(|r| r.name == "greet")
        .unwrap();
    let b = before.iter().find(|r| r.name == "greet").unwrap();
    assert_eq!(
        (r.old_size, r.fingerprint, &r.masks),
        (b.old_size, b.fingerprint, &b.masks)
    );
    assert!(
        c.diff
            .notes
            .iter()
            .any(|n| n.starts_with("greet: not found unambiguously")),
        "{:#?}",
        c.diff.notes
    );
}

#[test]
fn malformed_deployed_object_is_an_error() {
    let mut c = diff(GREET, &GREET.replace("hello();", "shout();"), "-O2");
    let err = differ::use_deployed_shape(&mut c.diff, &c.orig, b"not an object").unwrap_err();
    assert!(err.to_string().contains("deployed-shape"), "{err}");
}
