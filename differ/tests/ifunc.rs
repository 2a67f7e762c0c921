//! Units that define an IFUNC or a target_clones function: the IFUNC symbol
//! sits on its resolver (same section, same address), which is no reason to
//! refuse a fix elsewhere in the file; references to it go to the running
//! program's IFUNC; a changed resolver or a new IFUNC is refused by name.

mod common;

use common::*;
use differ::{Change, Route};

const UNIT: &str = r#"
volatile int bias;
volatile int use_wide;
static int add_narrow(int a, int b) { return a + b + bias; }
static int add_wide(int a, int b) { return (int)((long)a + b) + bias; }
static int (*resolve_add(void))(int, int) { return use_wide ? add_wide : add_narrow; }
int add(int a, int b) __attribute__((ifunc("resolve_add")));
__attribute__((target_clones("default", "avx2"))) int scale(int x) { return x * 3 + bias; }
__attribute__((noinline)) int compute(int x) { return add(x, 1) * 2; }
"#;

fn refusal_texts(c: &Case) -> String {
    c.diff
        .refusals
        .iter()
        .map(|r| r.message.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn fix_beside_an_ifunc_ships_and_calls_the_running_ifunc() {
    let fixed = UNIT.replace("return add(x, 1) * 2;", "return add(x, 1) * 2 + scale(x);");
    for opt in ["-O0", "-O2"] {
        let c = diff(UNIT, &fixed, opt);
        assert!(c.diff.refusals.is_empty(), "{opt}: {}", refusal_texts(&c));
        assert_eq!(c.change("compute"), Change::Changed, "{opt}");
        assert_eq!(c.change("resolve_add"), Change::Unchanged, "{opt}");
        // IFUNC symbols are names, not functions of their own.
        assert!(
            !c.diff
                .functions
                .iter()
                .any(|f| f.name == "add" || f.name == "scale"),
            "{opt}: {:#?}",
            c.diff.functions
        );
        assert!(
            !c.ships("resolve_add") && !c.ships("scale.resolver"),
            "{opt}"
        );
        assert_eq!(
            c.routes_to("add"),
            vec![Route::BaseGlobal("add".into())],
            "{opt}"
        );
        assert_eq!(
            c.routes_to("scale"),
            vec![Route::BaseGlobal("scale".into())],
            "{opt}"
        );
        let names: Vec<&str> = c
            .diff
            .replacements
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["compute"], "{opt}");
    }
}

#[test]
fn target_clones_body_change_replaces_each_clone() {
    let fixed = UNIT.replace("x * 3 + bias", "x * 4 + bias");
    let c = diff(UNIT, &fixed, "-O2");
    assert!(c.diff.refusals.is_empty(), "{}", refusal_texts(&c));
    let mut names: Vec<&str> = c
        .diff
        .replacements
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["scale.avx2", "scale.default"],
        "{:#?}",
        c.diff.functions
    );
    assert_eq!(c.change("scale.resolver"), Change::Unchanged);
}

#[test]
fn changed_resolver_is_refused_naming_it_and_its_ifunc() {
    let fixed = UNIT.replace("use_wide ? add_wide : add_narrow", "add_wide");
    let c = diff(UNIT, &fixed, "-O2");
    let text = refusal_texts(&c);
    assert!(
        text.contains("resolver `resolve_add` of IFUNC `add`") && text.contains("restart"),
        "{text}"
    );
}

#[test]
fn new_ifunc_is_refused_by_name() {
    let fixed = format!(
        "{UNIT}\nint sub(int a, int b) __attribute__((ifunc(\"resolve_add\")));\n\
         int use_sub(int x) {{ return sub(x, 1); }}\n"
    );
    let c = diff(UNIT, &fixed, "-O2");
    let text = refusal_texts(&c);
    assert!(text.contains("new IFUNC `sub`"), "{text}");
}
