//! End-to-end tests of `differ::compare` on objects compiled by GCC.

mod common;

use common::*;
use differ::{Change, Route};
use std::collections::BTreeSet;

const OPTS: [&str; 2] = ["-O0", "-O2"];

fn mask_bytes(masks: &[(u32, u32)]) -> BTreeSet<u32> {
    masks.iter().flat_map(|&(o, l)| o..o + l).collect()
}

const BODY_ORIG: &str = r#"
int limit = 5;
int unchanged(int x) { return x + limit; }
__attribute__((noinline)) int target(int x) { return x * limit + 3; }
int user(int x) { return target(x) + 1; }
"#;

#[test]
fn body_change_is_replaced_with_fingerprint_of_original() {
    for opt in OPTS {
        let c = diff(BODY_ORIG, &BODY_ORIG.replace("+ 3;", "+ 4;"), opt);
        assert_eq!(c.change("target"), Change::Changed, "{opt}: {:#?}", c.diff);
        assert!(
            c.reasons("target").contains("code differs at offset"),
            "{opt}: {}",
            c.reasons("target")
        );
        assert_eq!(c.change("unchanged"), Change::Unchanged, "{opt}");
        assert_eq!(c.change("user"), Change::Unchanged, "{opt}");
        assert!(
            c.ships("target") && !c.ships("unchanged") && !c.ships("user"),
            "{opt}"
        );

        assert_eq!(
            c.diff.replacements.len(),
            1,
            "{opt}: {:#?}",
            c.diff.replacements
        );
        let r = &c.diff.replacements[0];
        assert_eq!(r.name, "target");
        assert!(!r.local);
        assert_eq!(Some(r.patched_symbol), symbol_index(&c.pat, "target"));
        let (size, masks, fingerprint) = expected_fingerprint(&c.orig, "target");
        assert_eq!(r.old_size, size, "{opt}");
        assert_eq!(mask_bytes(&r.masks), mask_bytes(&masks), "{opt}");
        assert!(
            !r.masks.is_empty(),
            "{opt}: target reads `limit` through a relocation"
        );
        assert_eq!(r.fingerprint, fingerprint, "{opt}");
        // The fingerprint is of the original code, not the patched one.
        let (_, pmasks, pfinger) = expected_fingerprint(&c.pat, "target");
        assert_eq!(mask_bytes(&pmasks), mask_bytes(&masks));
        assert_ne!(r.fingerprint, pfinger, "{opt}");

        assert_eq!(
            c.routes_to("limit"),
            vec![Route::BaseGlobal("limit".into())],
            "{opt}"
        );
        assert!(c.diff.refusals.is_empty(), "{opt}: {:#?}", c.diff.refusals);
    }
}

#[test]
fn identical_sources_ship_nothing() {
    for opt in OPTS {
        let c = diff(BODY_ORIG, BODY_ORIG, opt);
        assert!(c.diff.is_empty(), "{opt}: {:#?}", c.diff);
        assert!(
            c.diff.replacements.is_empty()
                && c.diff.refusals.is_empty()
                && c.diff.routes.is_empty()
        );
        assert!(c
            .diff
            .functions
            .iter()
            .all(|f| f.change == Change::Unchanged));
        assert_eq!(c.diff.file, "main.c");
    }
}

const PRINT_ORIG: &str = r#"
#include <stdio.h>
void greet(const char *n) { printf("hello %s %d\n", n, 1); }
void bye(void) { puts("bye"); }
"#;

#[test]
fn string_literal_change_is_found_by_content() {
    for opt in OPTS {
        let c = diff(PRINT_ORIG, &PRINT_ORIG.replace("hello %s", "howdy %s"), opt);
        assert_eq!(c.change("greet"), Change::Changed, "{opt}");
        let why = c.reasons("greet");
        assert!(
            why.contains("string literal changed")
                && why.contains("hello")
                && why.contains("howdy"),
            "{opt}: {why}"
        );
        assert_eq!(c.change("bye"), Change::Unchanged, "{opt}");
        assert_eq!(c.diff.replacements.len(), 1);
        // The literal ships with the code that uses it.
        let greet_relocs = relocations_of(&c.pat, "greet");
        assert!(greet_relocs
            .iter()
            .any(|(_, _, t, _)| t.starts_with(".LC") || t.starts_with(".rodata")));
        assert!(
            c.diff.ship_sections.len() >= 2,
            "{opt}: {:?}",
            c.diff.ship_sections
        );
    }
}

#[test]
fn printf_is_routed_to_the_base_global() {
    for opt in OPTS {
        let c = diff(PRINT_ORIG, &PRINT_ORIG.replace("n, 1)", "n, 2)"), opt);
        assert_eq!(c.change("greet"), Change::Changed, "{opt}");
        let printf = symbol_index(&c.pat, "printf").unwrap();
        assert_eq!(
            c.diff.routes.get(&printf),
            Some(&Route::BaseGlobal("printf".into())),
            "{opt}"
        );
        // `puts` is only used by the unchanged `bye`: no route needed.
        let puts = symbol_index(&c.pat, "puts").unwrap();
        assert_eq!(c.diff.routes.get(&puts), None, "{opt}");
    }
}

#[test]
fn callee_change_is_described() {
    let c = diff(
        PRINT_ORIG,
        &PRINT_ORIG.replace("puts(\"bye\")", "perror(\"bye\")"),
        "-O2",
    );
    assert_eq!(c.change("bye"), Change::Changed);
    assert!(
        c.reasons("bye").contains("now calls perror (was puts)"),
        "{}",
        c.reasons("bye")
    );
}

const SHIFT_ORIG: &str = r#"
#include <stdio.h>
void a(void) { puts("alpha"); }
void b(void) { puts("beta"); }
void c(void) { puts("gamma"); }
"#;

#[test]
fn shifted_string_offsets_do_not_change_other_functions() {
    for opt in OPTS {
        let patched = SHIFT_ORIG.replace(
            "puts(\"alpha\");",
            "puts(\"alpha\"); puts(\"a new, rather long string\");",
        );
        let c = diff(SHIFT_ORIG, &patched, opt);
        assert_eq!(c.change("a"), Change::Changed, "{opt}");
        assert!(
            c.reasons("a").contains("a new, rather long string"),
            "{opt}: {}",
            c.reasons("a")
        );
        assert_eq!(
            c.change("b"),
            Change::Unchanged,
            "{opt}: {}",
            c.reasons("b")
        );
        assert_eq!(
            c.change("c"),
            Change::Unchanged,
            "{opt}: {}",
            c.reasons("c")
        );
        assert_eq!(
            c.diff
                .replacements
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>(),
            ["a"]
        );
        if opt == "-O0" {
            // At -O0 all literals share `.rodata`: the new string really moved
            // `gamma`, so this test exercises content comparison.
            let (o, p) = (relocations_of(&c.orig, "c"), relocations_of(&c.pat, "c"));
            let addend =
                |v: &[(u64, u32, String, i64)]| v.iter().find(|r| r.2 == ".rodata").map(|r| r.3);
            assert!(
                addend(&o).is_some() && addend(&o) != addend(&p),
                "{o:?} {p:?}"
            );
        }
    }
}

const STATICS_ORIG: &str = r#"
int count(void) { static int calls; return ++calls; }
int other(void) { static int calls = 3; return calls--; }
"#;

#[test]
fn static_local_keeps_original_storage() {
    for opt in OPTS {
        // A new function with its own `calls` renumbers GCC's statics.
        let patched = STATICS_ORIG.replace("++calls;", "calls += 2, calls;")
            + "int fresh(void) { static int calls = 7; return calls++; }\n";
        let c = diff(STATICS_ORIG, &patched, opt);
        let orig_name = static_local_used_by(&c.orig, "count", "calls");
        let pat_name = static_local_used_by(&c.pat, "count", "calls");
        assert_ne!(
            orig_name, pat_name,
            "{opt}: GCC did not renumber; test would prove nothing"
        );

        assert_eq!(c.change("count"), Change::Changed, "{opt}");
        assert_eq!(c.change("other"), Change::Unchanged, "{opt}");
        assert_eq!(c.change("fresh"), Change::New, "{opt}");
        assert_eq!(
            c.routes_to(&pat_name),
            vec![Route::BaseLocal(orig_name.clone())],
            "{opt}: {:#?}",
            c.diff
        );
        assert!(!c.ships(&pat_name), "{opt}");
        assert!(
            c.reasons("count").contains(&format!(
                "uses static local calls (kept: original storage {orig_name})"
            )),
            "{opt}: {}",
            c.reasons("count")
        );
        // fresh's static is new: it ships and stays inside the patch.
        let fresh_static = static_local_used_by(&c.pat, "fresh", "calls");
        assert!(c.ships(&fresh_static), "{opt}");
        assert!(
            c.routes_to(&fresh_static)
                .iter()
                .all(|r| *r == Route::Shipped),
            "{opt}"
        );
        assert!(c.diff.refusals.is_empty(), "{opt}: {:#?}", c.diff.refusals);
    }
}

const DATA_ORIG: &str = r#"
int limit = 5;
static int counter = 1;
int get(void) { static int seen = 2; return limit + counter++ + seen++; }
"#;

#[test]
fn changed_initializers_are_refused_by_name() {
    for opt in OPTS {
        let c = diff(DATA_ORIG, &DATA_ORIG.replace("limit = 5", "limit = 6"), opt);
        let r = c
            .refusal_for("limit")
            .unwrap_or_else(|| panic!("{opt}: {:#?}", c.diff.refusals));
        assert!(
            r.message.contains("global `limit` (main.c)")
                && r.message.contains("initializer changed"),
            "{}",
            r.message
        );
        assert_eq!(c.diff.refusals.len(), 1, "{opt}: {:#?}", c.diff.refusals);
        assert_eq!(c.change("get"), Change::Unchanged, "{opt}");

        let c = diff(
            DATA_ORIG,
            &DATA_ORIG.replace("counter = 1", "counter = 9"),
            opt,
        );
        let r = c
            .refusal_for("counter")
            .unwrap_or_else(|| panic!("{opt}: {:#?}", c.diff.refusals));
        assert!(r.message.contains("static `counter`"), "{}", r.message);

        let c = diff(DATA_ORIG, &DATA_ORIG.replace("seen = 2", "seen = 3"), opt);
        let r = &c
            .diff
            .refusals
            .first()
            .unwrap_or_else(|| panic!("{opt}: no refusal"));
        assert!(r.symbol.starts_with("seen"), "{opt}: {r:?}");
        assert!(
            r.message.contains("static local `seen` in get()"),
            "{}",
            r.message
        );
    }
}

#[test]
fn data_size_change_is_refused() {
    let orig = "int table[4] = {1, 2, 3, 4};\nint sum(void) { return table[0] + table[3]; }\n";
    let c = diff(orig, &orig.replace("[4]", "[8]"), "-O2");
    let r = c
        .refusal_for("table")
        .unwrap_or_else(|| panic!("{:#?}", c.diff));
    assert!(
        r.message.contains("size changed from 16 to 32"),
        "{}",
        r.message
    );
}

#[test]
fn zero_initialised_variable_may_move_between_bss_and_data() {
    // `= 0` lands in .bss; comparing NOBITS by size makes it equal to
    // itself whatever else changes.
    let orig = "int zero = 0;\nint get(void) { return zero + 1; }\n";
    let c = diff(orig, &orig.replace("+ 1", "+ 2"), "-O2");
    assert!(c.diff.refusals.is_empty(), "{:#?}", c.diff.refusals);
    assert_eq!(c.routes_to("zero"), vec![Route::BaseGlobal("zero".into())]);
}

#[test]
fn new_function_and_new_global_ship() {
    for opt in OPTS {
        let patched = format!(
            "{BODY_ORIG}int added_global = 42;\n__attribute__((noinline)) int added(int x) {{ return added_global * x + limit; }}\n"
        );
        let patched = patched.replace("return target(x) + 1;", "return target(x) + added(x);");
        let c = diff(BODY_ORIG, &patched, opt);
        assert_eq!(c.change("added"), Change::New, "{opt}");
        assert_eq!(c.reasons("added"), "new function");
        assert_eq!(c.change("user"), Change::Changed, "{opt}");
        assert!(
            c.ships("added") && c.ships("added_global") && c.ships("user"),
            "{opt}"
        );
        let added = symbol_index(&c.pat, "added").unwrap();
        assert_eq!(c.diff.routes.get(&added), Some(&Route::Shipped), "{opt}");
        assert!(!c.routes_to("added_global").is_empty());
        assert!(
            c.routes_to("added_global")
                .iter()
                .all(|r| *r == Route::Shipped),
            "{opt}"
        );
        assert_eq!(
            c.routes_to("limit"),
            vec![Route::BaseGlobal("limit".into())],
            "{opt}"
        );
        // New code is not redirected; only `user` is.
        let names: Vec<_> = c
            .diff
            .replacements
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["user"], "{opt}");
        assert!(c.diff.refusals.is_empty(), "{opt}: {:#?}", c.diff.refusals);
    }
}

#[test]
fn removed_function_is_reported_and_not_shipped() {
    let c = diff(
        BODY_ORIG,
        &BODY_ORIG.replace("int unchanged(int x) { return x + limit; }", ""),
        "-O2",
    );
    assert_eq!(c.change("unchanged"), Change::Removed);
    assert!(c.diff.is_empty(), "{:#?}", c.diff);
}

const INLINE_ORIG: &str = r#"
static int helper(int x) { return x * 3; }
int caller(int x) { return helper(x) + 1; }
int bystander(int x) { return x - 1; }
"#;

#[test]
fn change_of_inlined_static_helper_changes_its_caller() {
    let c = diff(INLINE_ORIG, &INLINE_ORIG.replace("x * 3", "x * 5"), "-O2");
    assert!(
        !has_symbol(&c.orig, "helper"),
        "helper was expected to be inlined away"
    );
    assert_eq!(c.change("caller"), Change::Changed, "{:#?}", c.diff);
    assert_eq!(c.change("bystander"), Change::Unchanged);
    assert_eq!(c.diff.replacements.len(), 1);
    assert_eq!(c.diff.replacements[0].name, "caller");
}

#[test]
fn static_function_replacement_is_local_and_unchanged_callee_is_base_local() {
    let orig = r#"
__attribute__((noinline)) static int helper(int x) { return x * 3; }
int caller(int x) { return helper(x) + 1; }
"#;
    let c = diff(orig, &orig.replace("+ 1", "+ 2"), "-O2");
    assert_eq!(c.change("caller"), Change::Changed);
    let helper = c.routes_to("helper");
    assert!(
        !helper.is_empty()
            && helper
                .iter()
                .all(|r| *r == Route::BaseLocal("helper".into())),
        "{:#?}",
        c.diff
    );

    let c = diff(orig, &orig.replace("x * 3", "x * 7"), "-O2");
    let r = c
        .diff
        .replacements
        .iter()
        .find(|r| r.name == "helper")
        .expect("helper replaced");
    assert!(r.local);
}

#[test]
fn switch_table_change_ships_the_table() {
    let orig = r#"
int pick(int x) {
    switch (x) { case 0: return 11; case 1: return 22; case 2: return 35;
                 case 3: return 47; case 4: return 51; case 5: return 99; default: return 0; }
}
int keep(int x) { return x + 1; }
"#;
    let c = diff(orig, &orig.replace("return 35", "return 36"), "-O2");
    assert_eq!(c.change("pick"), Change::Changed, "{:#?}", c.diff);
    assert_eq!(c.change("keep"), Change::Unchanged);
    assert!(c.diff.refusals.is_empty(), "{:#?}", c.diff.refusals);
    // Whatever the table is (CSWTCH object or jump table), pick's code and
    // every read-only section it references ship; nothing routes to a
    // stale copy of the table.
    assert!(c.diff.ship_sections.len() >= 2, "{:#?}", c.diff);
    for (&sym, route) in &c.diff.routes {
        if let Route::BaseLocal(n) = route {
            panic!("symbol {sym} routed to the running program's {n}");
        }
    }
}

#[test]
fn cold_part_ships_with_its_parent_and_is_not_redirected() {
    let orig = r#"
extern void die(const char *m) __attribute__((cold, noreturn));
int g;
int work(int *p, int n) { int s = 0; for (int i = 0; i < n; i++) { if (p[i] < 0) die("neg"); s += p[i] * 2; g++; } return s; }
"#;
    let c = diff(orig, &orig.replace("p[i] * 2", "p[i] * 3"), "-O2");
    assert!(
        has_symbol(&c.pat, "work.cold"),
        "GCC made no cold part; test proves nothing"
    );
    assert_eq!(c.change("work"), Change::Changed);
    assert!(c.ships("work") && c.ships("work.cold"), "{:#?}", c.diff);
    assert_eq!(
        c.diff
            .replacements
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["work"]
    );
    assert_eq!(c.routes_to("die"), vec![Route::BaseGlobal("die".into())]);
}

#[test]
fn garbage_input_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = compile(dir.path(), "good", BODY_ORIG, "-O2");
    assert!(differ::compare(&good, &good).is_ok());

    let e = differ::compare(b"definitely not an object file", &good).unwrap_err();
    assert!(e.to_string().contains("original"), "{e}");
    let e = differ::compare(&good, &[]).unwrap_err();
    assert!(e.to_string().contains("patched"), "{e}");
    assert!(differ::compare(&good, &good[..good.len() / 2]).is_err());
    assert!(differ::compare(&good[..40], &good).is_err());

    let mut arm = good.clone();
    arm[18] = 183; // e_machine = EM_AARCH64
    let e = differ::compare(&arm, &good).unwrap_err();
    assert!(e.to_string().contains("x86-64"), "{e}");

    let mut exec = good.clone();
    exec[16] = 2; // e_type = ET_EXEC
    let e = differ::compare(&good, &exec).unwrap_err();
    assert!(e.to_string().contains("relocatable"), "{e}");

    assert_eq!(
        e.to_string().lines().count(),
        1,
        "error is not one line: {e}"
    );
}

#[test]
fn corrupted_objects_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let good = compile(dir.path(), "good", STATICS_ORIG, "-O2");
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..400 {
        let mut bad = good.clone();
        for _ in 0..1 + next() % 8 {
            let at = (next() % bad.len() as u64) as usize;
            bad[at] = next() as u8;
        }
        // Either outcome is fine; a panic fails the test.
        let _ = differ::compare(&good, &bad);
        let _ = differ::compare(&bad, &good);
    }
}

const JUMP_ORIG: &str = r#"
#include <stdio.h>
int dispatch(int x) {
    switch (x) {
    case 0: return puts("zero");
    case 1: return x * 7;
    case 2: return puts("two");
    case 3: return x + 9;
    case 4: return x ^ 3;
    case 5: return x * x;
    case 6: return puts("six");
    default: return 0;
    }
}
int other(int x) { return puts("other") + x; }
"#;

/// Sections of `obj` whose name starts with `prefix` and that have a
/// relocation against `target_section`.
fn tables_pointing_into(obj: &[u8], target_section: usize) -> Vec<usize> {
    use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget};
    let file = object::File::parse(obj).unwrap();
    file.sections()
        .filter(|s| {
            !s.name().unwrap_or("").starts_with(".rela")
                && !s.name().unwrap_or("").contains("debug")
        })
        .filter(|s| !s.name().unwrap_or("").starts_with(".eh_frame"))
        .filter(|s| {
            s.relocations().any(|(_, r)| match r.target() {
                RelocationTarget::Symbol(i) => {
                    file.symbol_by_index(i)
                        .unwrap()
                        .section_index()
                        .map(|x| x.0)
                        == Some(target_section)
                }
                _ => false,
            })
        })
        .map(|s| s.index().0)
        .collect()
}

#[test]
fn jump_tables_compare_by_content_and_ship_with_their_function() {
    for opt in OPTS {
        // Only `other` changes: the jump table's entries point into
        // `dispatch`, which must still compare equal.
        let c = diff(
            JUMP_ORIG,
            &JUMP_ORIG.replace("\"other\") + x", "\"other\") - x"),
            opt,
        );
        assert_eq!(c.change("other"), Change::Changed, "{opt}");
        assert_eq!(
            c.change("dispatch"),
            Change::Unchanged,
            "{opt}: {}",
            c.reasons("dispatch")
        );

        let c = diff(JUMP_ORIG, &JUMP_ORIG.replace("x + 9", "x + 10"), opt);
        assert_eq!(c.change("dispatch"), Change::Changed, "{opt}");
        let text = symbol_section(&c.pat, "dispatch").unwrap();
        let tables = tables_pointing_into(&c.pat, text);
        assert!(
            !tables.is_empty(),
            "{opt}: no jump table found; test proves nothing"
        );
        for t in tables {
            assert!(
                c.diff.ship_sections.contains(&t),
                "{opt}: table section {t} not shipped: {:#?}",
                c.diff
            );
        }
        assert_eq!(c.change("other"), Change::Unchanged, "{opt}");
    }
}

#[test]
fn shared_function_section_and_new_thread_local_are_refused() {
    let orig = "int foo(int x) { return x + 1; }\nint bar(int) __attribute__((alias(\"foo\")));\n";
    let c = diff(orig, &orig.replace("x + 1", "x + 2"), "-O2");
    let r = c
        .diff
        .refusals
        .iter()
        .find(|r| r.message.contains("shares section"))
        .expect("refused");
    assert!(
        r.message.contains("foo") && r.message.contains("bar"),
        "{}",
        r.message
    );

    let orig = "int get(void) { return 1; }\n";
    let patched = "__thread int t;\nint get(void) { return ++t; }\n";
    let c = diff(orig, patched, "-O2");
    let r = c
        .refusal_for("t")
        .unwrap_or_else(|| panic!("{:#?}", c.diff));
    assert!(r.message.contains("thread-local"), "{}", r.message);
    assert!(!c.ships("t"));
}
