//! Static locals that share a name across functions (sqlite's several
//! `static const sqlite3_mutex_methods sMutex`, the `__PRETTY_FUNCTION__`
//! every `assert()` makes): when one function inlines two of their owners,
//! its code references both, and the functions using a static no longer say
//! which original storage it continues. DWARF does: the variable's DIE sits
//! in its function. Compiled with gcc and (when installed) clang.

use differ::{Change, Route, UnitDiff};
use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SymbolKind};
use std::path::Path;
use std::process::Command;

fn compilers() -> Vec<&'static str> {
    let mut out = vec!["gcc"];
    if Command::new("clang")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        out.push("clang");
    }
    out
}

fn compile(dir: &Path, tag: &str, cc: &str, src: &str, flags: &[&str]) -> Vec<u8> {
    let sub = dir.join(tag);
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("main.c"), src).unwrap();
    // Relative, so that assert's __FILE__ is the same on both sides.
    let out = Command::new(cc)
        .current_dir(&sub)
        .args(flags)
        .args(["-c", "-ffunction-sections", "-fdata-sections"])
        .args(["-o", "main.o", "main.c"])
        .output()
        .expect("compiler runs");
    assert!(
        out.status.success(),
        "{cc} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(sub.join("main.o")).unwrap()
}

struct Pair {
    orig: Vec<u8>,
    pat: Vec<u8>,
    diff: UnitDiff,
}

fn diff(cc: &str, original: &str, patched: &str, flags: &[&str]) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let orig = compile(dir.path(), "orig", cc, original, flags);
    let pat = compile(dir.path(), "patched", cc, patched, flags);
    let diff = differ::compare(&orig, &pat).expect("compare succeeds");
    Pair { orig, pat, diff }
}

impl Pair {
    fn change(&self, name: &str) -> Change {
        self.diff
            .functions
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no verdict for {name}: {:#?}", self.diff.functions))
            .change
    }

    fn shipped_functions(&self) -> Vec<String> {
        self.diff
            .functions
            .iter()
            .filter(|f| matches!(f.change, Change::Changed | Change::New))
            .map(|f| f.name.clone())
            .collect()
    }

    /// The routes of the patched symbol `name` and of its section's symbol.
    fn routes_to(&self, name: &str) -> Vec<Route> {
        let file = object::File::parse(&*self.pat).unwrap();
        let sym = file.symbols().find(|s| s.name() == Ok(name)).unwrap();
        let sec = sym.section_index();
        file.symbols()
            .filter(|s| {
                s.index() == sym.index()
                    || (s.kind() == SymbolKind::Section && s.section_index() == sec)
            })
            .filter_map(|s| self.diff.routes.get(&s.index().0).cloned())
            .collect()
    }
}

/// The data symbol whose name contains `base` and whose bytes (or
/// relocations) say `mark`: a relocation to a symbol or section named with
/// `mark`, or the bytes holding `mark` as text.
fn storage_marked(obj: &[u8], base: &str, mark: &str) -> String {
    let file = object::File::parse(obj).unwrap();
    let mut found = Vec::new();
    for s in file.symbols() {
        let name = s.name().unwrap_or("");
        if s.kind() != SymbolKind::Data || !name.contains(base) {
            continue;
        }
        let sec = file.section_by_index(s.section_index().unwrap()).unwrap();
        let data = sec.data().unwrap();
        let start = s.address() as usize;
        let bytes = &data[start..(start + s.size() as usize).min(data.len())];
        let in_bytes = bytes.windows(mark.len()).any(|w| w == mark.as_bytes());
        let in_relocs = sec.relocations().any(|(off, r)| {
            let within = off >= s.address() && off < s.address() + s.size();
            let RelocationTarget::Symbol(t) = r.target() else {
                return false;
            };
            let t = file.symbol_by_index(t).unwrap();
            let tname = match t.kind() {
                SymbolKind::Section => file
                    .section_by_index(t.section_index().unwrap())
                    .unwrap()
                    .name()
                    .unwrap_or("")
                    .to_string(),
                _ => t.name().unwrap_or("").to_string(),
            };
            within && tname.contains(mark)
        });
        if in_bytes || in_relocs {
            found.push(name.to_string());
        }
    }
    assert_eq!(found.len(), 1, "{base} marked {mark}: {found:?}");
    found.remove(0)
}

/// Two static functions, each with its own `static const` table named
/// `sMutex` (as sqlite3NoopMutex and sqlite3DefaultMutex have), both inlined
/// into `pick`; `sleep_ms` uses neither.
const MUTEX: &str = r#"
struct methods { int (*init)(void); int (*end)(void); };
__attribute__((noinline)) static int noop_init(void) { return 1; }
__attribute__((noinline)) static int noop_end(void) { return 2; }
__attribute__((noinline)) static int real_init(void) { return 3; }
__attribute__((noinline)) static int real_end(void) { return 4; }
static const struct methods *noop_methods(void) {
    static const struct methods sMutex = { noop_init, noop_end };
    return &sMutex;
}
static const struct methods *default_methods(void) {
    static const struct methods sMutex = { real_init, real_end };
    return &sMutex;
}
extern volatile int use_noop;
const struct methods *pick(void) {
    return use_noop ? noop_methods() : default_methods();
}
int sleep_ms(int ms) { return ms / 1000; }
"#;

#[test]
fn fix_elsewhere_in_a_unit_with_same_name_static_tables_builds() {
    for cc in compilers() {
        for opt in ["-O0", "-O2"] {
            let patched = MUTEX.replace("ms / 1000", "(ms + 999) / 1000");
            let c = diff(cc, MUTEX, &patched, &[opt, "-g"]);
            assert!(
                c.diff.refusals.is_empty(),
                "{cc} {opt}: {:#?}",
                c.diff.refusals
            );
            assert_eq!(c.shipped_functions(), vec!["sleep_ms"], "{cc} {opt}");
        }
    }
}

#[test]
fn same_name_static_tables_keep_their_own_storage() {
    // The owners swap places (GCC renumbers the tables) and pick changes:
    // each table pick uses must be the running program's table of the same
    // function.
    let swapped = {
        let noop = MUTEX
            .split_once("static const struct methods *noop_methods")
            .unwrap();
        let (noop_fn, rest) = noop
            .1
            .split_once("static const struct methods *default")
            .unwrap();
        let (default_fn, tail) = rest.split_once("extern volatile").unwrap();
        format!(
            "{}static const struct methods *default{default_fn}\
             static const struct methods *noop_methods{noop_fn}extern volatile{tail}",
            noop.0
        )
    };
    let patched = swapped.replace("use_noop ?", "use_noop > 0 ?");
    for cc in compilers() {
        for opt in ["-O0", "-O2"] {
            let c = diff(cc, MUTEX, &patched, &[opt, "-g"]);
            assert!(
                c.diff.refusals.is_empty(),
                "{cc} {opt}: {:#?}",
                c.diff.refusals
            );
            assert_eq!(c.change("pick"), Change::Changed, "{cc} {opt}");
            for mark in ["noop_init", "real_init"] {
                let o = storage_marked(&c.orig, "sMutex", mark);
                let p = storage_marked(&c.pat, "sMutex", mark);
                // At -O0 pick only calls the owners, which did not change.
                let want = match opt {
                    "-O0" => vec![],
                    _ => vec![Route::BaseLocal(o.clone())],
                };
                assert_eq!(
                    c.routes_to(&p),
                    want,
                    "{cc} {opt}: {p} must continue {o}: {:#?}",
                    c.diff.routes
                );
            }
        }
    }
}

#[test]
fn without_debug_info_only_shipped_code_refuses_an_ambiguous_static() {
    // No DWARF: nothing says which table is whose. A fix that does not use
    // them still builds; one that does is refused, naming the static.
    let unrelated = MUTEX.replace("ms / 1000", "(ms + 999) / 1000");
    let c = diff("gcc", MUTEX, &unrelated, &["-O2"]);
    assert!(c.diff.refusals.is_empty(), "{:#?}", c.diff.refusals);
    assert_eq!(c.shipped_functions(), vec!["sleep_ms"]);

    let user = MUTEX.replace("use_noop ?", "use_noop > 0 ?");
    let c = diff("gcc", MUTEX, &user, &["-O2"]);
    assert!(
        c.diff
            .refusals
            .iter()
            .any(|r| r.message.contains("static local `sMutex`")
                && r.message.contains("cannot tell which original storage")),
        "{:#?}",
        c.diff.refusals
    );
}

/// One function inlining two functions that each `assert()`: GCC gives each
/// its own `__PRETTY_FUNCTION__.N`, and `both` references the two.
const ASSERTS: &str = r#"
#include <assert.h>
extern volatile int sink;
static int check_a(int x) { assert(x > 0); return x + sink; }
static int check_b(int x) { assert(x < 100); return x * sink; }
int both(int x) { return check_a(x) + check_b(x); }
int other(int x) { return x - 1; }
"#;

#[test]
fn unit_with_only_debug_info_changed_is_not_refused() {
    // A comment line above everything moves every line: the code and data
    // are the same (assert's __LINE__ aside, which a line-only change
    // explains); a change in a header would do the same.
    let moved = format!("/* header grew */\n{ASSERTS}");
    let unchanged_code = format!("{ASSERTS}\n/* trailing */\n");
    for cc in compilers() {
        for opt in ["-O0", "-O2"] {
            for patched in [&unchanged_code, &moved] {
                let c = diff(cc, ASSERTS, patched, &[opt, "-g"]);
                assert!(
                    c.diff.refusals.is_empty(),
                    "{cc} {opt}: {:#?}",
                    c.diff.refusals
                );
            }
            let c = diff(cc, ASSERTS, &unchanged_code, &[opt, "-g"]);
            assert!(c.diff.is_empty(), "{cc} {opt}: {:#?}", c.diff);
        }
    }
}

#[test]
fn asserting_functions_inlined_together_keep_their_names() {
    let patched = ASSERTS.replace("x - 1", "x - 2");
    let edited = ASSERTS.replace(
        "int both(int x) { return check_a(x) + check_b(x); }",
        "int both(int x) { return check_b(x) + check_a(x) + 1; }",
    );
    for cc in compilers() {
        for opt in ["-O0", "-O2"] {
            let c = diff(cc, ASSERTS, &patched, &[opt, "-g"]);
            assert!(
                c.diff.refusals.is_empty(),
                "{cc} {opt}: {:#?}",
                c.diff.refusals
            );
            assert_eq!(c.shipped_functions(), vec!["other"], "{cc} {opt}");

            let c = diff(cc, ASSERTS, &edited, &[opt, "-g"]);
            assert!(
                c.diff.refusals.is_empty(),
                "{cc} {opt}: {:#?}",
                c.diff.refusals
            );
            assert_eq!(c.change("both"), Change::Changed, "{cc} {opt}");
            if cc == "gcc" && opt == "-O2" {
                // Each name string is the running program's own.
                for mark in ["check_a", "check_b"] {
                    let o = storage_marked(&c.orig, "__PRETTY_FUNCTION__", mark);
                    let p = storage_marked(&c.pat, "__PRETTY_FUNCTION__", mark);
                    assert_eq!(
                        c.routes_to(&p),
                        vec![Route::BaseLocal(o.clone())],
                        "{p} must continue {o}: {:#?}",
                        c.diff.routes
                    );
                }
            }
        }
    }
}

/// Writable state: two counters named `hits`, both inlined into one caller.
const COUNTERS: &str = r#"
static int hit_a(void) { static int hits; return ++hits; }
static int hit_b(void) { static int hits = 10; return hits += 2; }
int count_both(void) { return hit_a() * 100 + hit_b(); }
int other(int x) { return x - 1; }
"#;

/// The section of the patched or original symbol `name`.
fn section_name(obj: &[u8], name: &str) -> String {
    let file = object::File::parse(obj).unwrap();
    let s = file.symbols().find(|s| s.name() == Ok(name)).unwrap();
    let sec = file.section_by_index(s.section_index().unwrap()).unwrap();
    sec.name().unwrap().to_string()
}

#[test]
fn same_name_counters_keep_their_state() {
    let unrelated = COUNTERS.replace("x - 1", "x - 2");
    let user = COUNTERS.replace("* 100", "* 1000");
    for opt in ["-O2", "-O3"] {
        // Without DWARF: only code using the counters is refused (not the
        // original counters as "gone" either).
        let c = diff("gcc", COUNTERS, &unrelated, &[opt]);
        assert!(c.diff.refusals.is_empty(), "{opt}: {:#?}", c.diff.refusals);
        assert_eq!(c.shipped_functions(), vec!["other"], "{opt}");
        let c = diff("gcc", COUNTERS, &user, &[opt]);
        assert!(
            c.diff
                .refusals
                .iter()
                .any(|r| r.message.contains("static local `hits`")),
            "{opt}: {:#?}",
            c.diff.refusals
        );

        // With DWARF, each counter continues its own storage: the zeroed
        // one in .bss, the other in .data.
        let c = diff("gcc", COUNTERS, &user, &[opt, "-g"]);
        assert!(c.diff.refusals.is_empty(), "{opt}: {:#?}", c.diff.refusals);
        assert_eq!(c.shipped_functions(), vec!["count_both"], "{opt}");
        let file = object::File::parse(&*c.pat).unwrap();
        let hits: Vec<String> = file
            .symbols()
            .filter_map(|s| s.name().ok().map(str::to_string))
            .filter(|n| n.starts_with("hits."))
            .collect();
        assert_eq!(hits.len(), 2, "{opt}: {hits:?}");
        for p in hits {
            let routes = c.routes_to(&p);
            let [Route::BaseLocal(o)] = routes.as_slice() else {
                panic!("{opt}: {p}: {routes:?}");
            };
            let kind =
                |obj: &[u8], n: &str| section_name(obj, n).split('.').nth(1).unwrap().to_string();
            assert_eq!(kind(&c.pat, &p), kind(&c.orig, o), "{opt}: {p} → {o}");
        }
    }
}
