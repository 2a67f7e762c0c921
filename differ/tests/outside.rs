//! Shipped code that reaches outside data (`stderr`) is taken from a compile
//! that goes through the GOT (`differ::ship_from`), unless a function around
//! it would compile differently there.

mod common;

use common::*;
use differ::{Change, Route};
use object::{Object, ObjectSection, ObjectSymbol, RelocationFlags, RelocationTarget};
use std::path::Path;
use std::process::Command;

const UNIT: &str = r#"
#include <stdio.h>
volatile int limit = 100;
int balance = 500;
__attribute__((noinline)) int withdraw(int amount)
{
    if (amount > limit)
        return -1;
    balance -= amount;
    return balance;
}
int handle(int n) { return withdraw(n) + 1; }
"#;

fn fixed(unit: &str) -> String {
    unit.replace(
        "    if (amount > limit)\n        return -1;",
        "    if (amount > limit) {\n        fprintf(stderr, \"over %d\\n\", amount);\n        \
         return -1;\n    }",
    )
}

/// `src` as main.c, compiled as hpbuild compiles the patched side, plus
/// `-mno-direct-extern-access`.
fn compile_got(dir: &Path, src: &str, opt: &str) -> Vec<u8> {
    let sub = dir.join("got");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("main.c"), src).unwrap();
    let out = Command::new("gcc")
        .args([opt, "-g", "-c", "-ffunction-sections", "-fdata-sections"])
        .args(["-mno-direct-extern-access", "main.c", "-o", "main.o"])
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

/// The relocation types of shipped sections of `obj` against `name`.
fn reloc_types_to(obj: &[u8], sections: &[usize], name: &str) -> Vec<u32> {
    let file = object::File::parse(obj).unwrap();
    let mut out = Vec::new();
    for &i in sections {
        let sec = file.section_by_index(object::SectionIndex(i)).unwrap();
        for (_, r) in sec.relocations() {
            let RelocationTarget::Symbol(s) = r.target() else {
                continue;
            };
            let RelocationFlags::Elf { r_type } = r.flags() else {
                continue;
            };
            if file.symbol_by_index(s).unwrap().name() == Ok(name) {
                out.push(r_type);
            }
        }
    }
    out
}

#[test]
fn stderr_is_shipped_through_the_got() {
    for opt in ["-O0", "-O2"] {
        let c = diff(UNIT, &fixed(UNIT), opt);
        assert_eq!(c.change("withdraw"), Change::Changed, "{opt}");
        assert_eq!(
            differ::direct_outside_refs(&c.diff, &c.pat),
            ["stderr"],
            "{opt}: gcc reaches stderr with a PC32 in PIE code"
        );
        let dir = tempfile::tempdir().unwrap();
        let got = compile_got(dir.path(), &fixed(UNIT), opt);
        let d = differ::ship_from(&c.diff, &c.orig, &got, &differ::Hints::default())
            .unwrap_or_else(|e| panic!("{opt}: {e}"));
        assert!(differ::direct_outside_refs(&d, &got).is_empty(), "{opt}");
        assert_eq!(
            reloc_types_to(&got, &d.ship_sections, "stderr"),
            [object::elf::R_X86_64_REX_GOTPCRELX],
            "{opt}"
        );
        // The same replacements, now pointing into the GOT-shaped object.
        assert_eq!(d.replacements.len(), c.diff.replacements.len(), "{opt}");
        for (new, old) in d.replacements.iter().zip(&c.diff.replacements) {
            assert_eq!(
                (&new.name, new.old_size, new.fingerprint),
                (&old.name, old.old_size, old.fingerprint),
                "{opt}"
            );
            assert_eq!(Some(new.patched_symbol), symbol_index(&got, &new.name));
        }
        let stderr = symbol_index(&got, "stderr").unwrap();
        assert_eq!(
            d.routes.get(&stderr),
            Some(&Route::BaseGlobal("stderr".into()))
        );
    }
}

#[test]
fn neighbour_that_compiles_differently_keeps_the_ordinary_code() {
    // withdraw() calls audit(), which reads `stdout` (outside data) and does
    // not change: its GOT-shaped code differs from what the running program
    // has, and under -fipa-ra the shipped withdraw() could rely on
    // registers the running audit() clobbers.
    let unit = UNIT
        .replace(
            "__attribute__((noinline)) int withdraw",
            "__attribute__((noinline)) int audit(int x) { return x + (stdout != 0); }\n\
             __attribute__((noinline)) int withdraw",
        )
        .replace("return balance;", "return audit(balance);");
    let c = diff(&unit, &fixed(&unit), "-O2");
    assert_eq!(c.change("withdraw"), Change::Changed);
    assert_eq!(c.change("audit"), Change::Unchanged);
    let dir = tempfile::tempdir().unwrap();
    let got = compile_got(dir.path(), &fixed(&unit), "-O2");
    let err = differ::ship_from(&c.diff, &c.orig, &got, &differ::Hints::default())
        .expect_err("audit differs in the GOT-shaped compile");
    assert!(err.starts_with("audit compiles differently"), "{err}");
}
