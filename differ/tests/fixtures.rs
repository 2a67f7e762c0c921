//! Runs the object-pair cases under fixtures/differ/: each directory holds
//! `orig.c`, `patched.c` and `expect.json`. Both sources are compiled at test
//! time (as `main.c`, so `__FILE__` agrees) with gcc — and clang when it is
//! installed — at -O0, -O2 and -O3 with `-g -ffunction-sections
//! -fdata-sections` plus the case's flags, and the differ's verdicts are
//! checked against the expectations. The format is described in
//! fixtures/differ/README.md.

use differ::names::strip_numeric;
use differ::{Change, Hints, Route, UnitDiff};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const OPTS: [&str; 3] = ["-O0", "-O2", "-O3"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    #[allow(dead_code)]
    about: String,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    edited: Vec<String>,
    checks: Vec<Check>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Check {
    /// Optimization levels and compilers the check applies to (all if empty).
    opt: Vec<String>,
    cc: Vec<String>,
    changed: Vec<String>,
    unchanged: Vec<String>,
    new: Vec<String>,
    removed: Vec<String>,
    /// Shipped code (a function's section is in `ship_sections`).
    ships: Vec<String>,
    not_shipped: Vec<String>,
    /// Functions of the running program that get redirected.
    replaced: Vec<String>,
    not_replaced: Vec<String>,
    /// Functions that must exist in the patched object (guards the case:
    /// the compiler made the clone the case is about).
    exists: Vec<String>,
    reasons: BTreeMap<String, Vec<String>>,
    refusals: Vec<RefusalExpect>,
    no_refusals: bool,
    notes: Vec<String>,
    /// function → static local base name: the patched function's static
    /// local must be routed to the storage the original function used.
    keeps_static: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefusalExpect {
    symbol: String,
    contains: Vec<String>,
    /// Substrings the message must not hold (members of another struct).
    #[serde(default)]
    lacks: Vec<String>,
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/differ")
}

fn compilers() -> Vec<&'static str> {
    let mut out = vec!["gcc"];
    let has_clang = Command::new("clang")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if has_clang {
        out.push("clang");
    } else {
        eprintln!("note: clang is not installed; differ fixtures run with gcc only");
    }
    out
}

fn compile(dir: &Path, tag: &str, src: &Path, cc: &str, opt: &str, flags: &[String]) -> Vec<u8> {
    let sub = dir.join(tag);
    std::fs::create_dir_all(&sub).unwrap();
    let (c, o) = (sub.join("main.c"), sub.join("main.o"));
    std::fs::copy(src, &c).unwrap();
    let out = Command::new(cc)
        .args([opt, "-g", "-c", "-ffunction-sections", "-fdata-sections"])
        .args(flags)
        // Relative names: __FILE__ must read the same on both sides.
        .args(["-o", "main.o", "main.c"])
        .current_dir(&sub)
        .output()
        .unwrap_or_else(|e| panic!("{cc} runs: {e}"));
    assert!(
        out.status.success(),
        "{cc} failed on {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&o).unwrap()
}

/// A name in expect.json matches a symbol exactly or without its numeric
/// components (`scale.constprop` matches `scale.constprop.1`).
fn matches(pattern: &str, name: &str) -> bool {
    name == pattern || strip_numeric(name) == pattern
}

struct Run<'a> {
    what: String,
    diff: &'a UnitDiff,
    orig: &'a [u8],
    pat: &'a [u8],
    errors: Vec<String>,
}

impl Run<'_> {
    fn fail(&mut self, msg: String) {
        self.errors.push(format!("{}: {msg}", self.what));
    }

    fn verdicts(&self, pattern: &str) -> Vec<&differ::FunctionVerdict> {
        self.diff
            .functions
            .iter()
            .filter(|f| matches(pattern, &f.name))
            .collect()
    }

    /// Every verdict named like `n` has `want`; a removed function may share
    /// its name with a patched one (renumbered clones), so removed verdicts
    /// are only looked at when `want` is Removed.
    fn expect_change(&mut self, names: &[String], want: Change) {
        for n in names {
            let vs: Vec<(String, Change)> = self
                .verdicts(n)
                .iter()
                .filter(|v| (v.change == Change::Removed) == (want == Change::Removed))
                .map(|v| (v.name.clone(), v.change))
                .collect();
            if vs.is_empty() {
                self.fail(format!("no function {n} (expected {want:?})"));
            }
            for (name, got) in vs {
                if got != want {
                    self.fail(format!("{name} is {got:?}, expected {want:?}"));
                }
            }
        }
    }

    /// Patched section indices of functions matching `pattern`.
    fn sections(&self, pattern: &str) -> Vec<(String, usize)> {
        let file = object::File::parse(self.pat).unwrap();
        file.symbols()
            .filter(|s| s.kind() == SymbolKind::Text && s.name().is_ok_and(|n| matches(pattern, n)))
            .filter_map(|s| Some((s.name().ok()?.to_string(), s.section_index()?.0)))
            .collect()
    }

    fn check(&mut self, c: &Check) {
        self.expect_change(&c.changed, Change::Changed);
        self.expect_change(&c.unchanged, Change::Unchanged);
        self.expect_change(&c.new, Change::New);
        self.expect_change(&c.removed, Change::Removed);
        for n in &c.exists {
            if self.sections(n).is_empty() {
                self.fail(format!(
                    "the compiler made no {n}; the case no longer tests what it is about"
                ));
            }
        }
        for (list, want) in [(&c.ships, true), (&c.not_shipped, false)] {
            for n in list {
                let secs = self.sections(n);
                if secs.is_empty() {
                    self.fail(format!("no function {n} in the patched object"));
                }
                for (name, sec) in secs {
                    if self.diff.ship_sections.contains(&sec) != want {
                        self.fail(format!("{name} shipped: {}, expected {want}", !want));
                    }
                }
            }
        }
        for n in &c.replaced {
            if !self.diff.replacements.iter().any(|r| matches(n, &r.name)) {
                self.fail(format!(
                    "{n} is not redirected; replacements: {:?}",
                    names(&self.diff.replacements)
                ));
            }
        }
        for n in &c.not_replaced {
            if self.diff.replacements.iter().any(|r| matches(n, &r.name)) {
                self.fail(format!(
                    "{n} is redirected; replacements: {:?}",
                    names(&self.diff.replacements)
                ));
            }
        }
        for (n, wants) in &c.reasons {
            let vs = self.verdicts(n);
            let all: Vec<String> = vs.iter().flat_map(|v| v.reasons.clone()).collect();
            for w in wants {
                if !all.iter().any(|r| r.contains(w.as_str())) {
                    self.fail(format!("reasons of {n} lack {w:?}: {all:?}"));
                }
            }
        }
        if c.no_refusals && !self.diff.refusals.is_empty() {
            self.fail(format!("unexpected refusals: {:#?}", self.diff.refusals));
        }
        for r in &c.refusals {
            // clang names a static local after its function: `count.calls`.
            let found = self.diff.refusals.iter().find(|x| {
                matches(&r.symbol, &x.symbol) || x.symbol.ends_with(&format!(".{}", r.symbol))
            });
            match found {
                None => self.fail(format!(
                    "no refusal for {}: {:#?}",
                    r.symbol, self.diff.refusals
                )),
                Some(x) => {
                    for w in &r.contains {
                        if !x.message.contains(w.as_str()) {
                            self.fail(format!(
                                "refusal of {} lacks {w:?}: {}",
                                r.symbol, x.message
                            ));
                        }
                    }
                    for w in r.lacks.iter().filter(|w| x.message.contains(w.as_str())) {
                        self.fail(format!(
                            "refusal of {} holds {w:?}: {}",
                            r.symbol, x.message
                        ));
                    }
                }
            }
        }
        for w in &c.notes {
            if !self.diff.notes.iter().any(|n| n.contains(w.as_str())) {
                self.fail(format!("notes lack {w:?}: {:?}", self.diff.notes));
            }
        }
        for (f, base) in &c.keeps_static {
            let want = static_local_used_by(self.orig, f, base);
            let got = static_local_used_by(self.pat, f, base);
            let file = object::File::parse(self.pat).unwrap();
            let idx: Vec<usize> = file
                .symbols()
                .filter(|s| {
                    s.name() == Ok(got.as_str())
                        || (s.kind() == SymbolKind::Section
                            && section_of(&file, &got) == s.section_index().map(|i| i.0))
                })
                .map(|s| s.index().0)
                .collect();
            let routes: Vec<&Route> = idx.iter().filter_map(|i| self.diff.routes.get(i)).collect();
            if routes.is_empty() || routes.iter().any(|r| **r != Route::BaseLocal(want.clone())) {
                self.fail(format!(
                    "{f}'s static {base} ({got}) routes to {routes:?}, expected {want}"
                ));
            }
        }
    }
}

fn names(r: &[differ::Replacement]) -> Vec<&str> {
    r.iter().map(|r| r.name.as_str()).collect()
}

fn section_of(file: &object::File, name: &str) -> Option<usize> {
    file.symbols()
        .find(|s| s.name() == Ok(name))
        .and_then(|s| s.section_index())
        .map(|i| i.0)
}

/// The static local `base.N` (GCC) or `f.base` (clang) that `f` references.
fn static_local_used_by(obj: &[u8], f: &str, base: &str) -> String {
    let file = object::File::parse(obj).unwrap();
    let sec = section_of(&file, f).unwrap_or_else(|| panic!("no function {f}"));
    let section = file.section_by_index(object::SectionIndex(sec)).unwrap();
    for (_, r) in section.relocations() {
        let object::RelocationTarget::Symbol(i) = r.target() else {
            continue;
        };
        let t = file.symbol_by_index(i).unwrap();
        let name = if t.kind() == SymbolKind::Section {
            file.symbols()
                .find(|s| s.section_index() == t.section_index() && s.kind() == SymbolKind::Data)
                .and_then(|s| s.name().ok().map(str::to_string))
        } else {
            t.name().ok().map(str::to_string)
        };
        // GCC: `calls.N`; clang: `function.calls`.
        let is_it =
            |n: &String| (strip_numeric(n) == base && n != base) || *n == format!("{f}.{base}");
        if let Some(n) = name.filter(is_it) {
            return n;
        }
    }
    let targets: Vec<String> = section
        .relocations()
        .map(|(_, r)| match r.target() {
            object::RelocationTarget::Symbol(i) => {
                let t = file.symbol_by_index(i).unwrap();
                format!("{:?} {:?} {:?}", t.name(), t.kind(), t.section_index())
            }
            x => format!("{x:?}"),
        })
        .collect();
    panic!("{f} uses no static local {base} (section {sec}, relocation targets {targets:?})");
}

#[test]
fn differ_fixtures() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures/differ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expect.json").exists())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 10,
        "expected the differ cases in {}",
        fixtures_dir().display()
    );
    let mut errors = Vec::new();
    let ccs = compilers();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(case.join("expect.json")).unwrap();
        let expect: Expect =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}/expect.json: {e}"));
        for cc in &ccs {
            for opt in OPTS {
                let dir = tempfile::tempdir().unwrap();
                let orig = compile(
                    dir.path(),
                    "orig",
                    &case.join("orig.c"),
                    cc,
                    opt,
                    &expect.flags,
                );
                let pat = compile(
                    dir.path(),
                    "patched",
                    &case.join("patched.c"),
                    cc,
                    opt,
                    &expect.flags,
                );
                let hints = Hints {
                    edited: expect.edited.clone(),
                    ..Hints::default()
                };
                let diff = match differ::compare_with(&orig, &pat, &hints) {
                    Ok(d) => d,
                    Err(e) => {
                        errors.push(format!("{name} {cc} {opt}: compare failed: {e}"));
                        continue;
                    }
                };
                let mut run = Run {
                    what: format!("{name} {cc} {opt}"),
                    diff: &diff,
                    orig: &orig,
                    pat: &pat,
                    errors: Vec::new(),
                };
                for c in &expect.checks {
                    let applies = (c.opt.is_empty() || c.opt.iter().any(|o| o == opt))
                        && (c.cc.is_empty() || c.cc.iter().any(|x| x == cc));
                    if applies {
                        run.check(c);
                    }
                }
                if !run.errors.is_empty() {
                    run.errors.push(format!(
                        "{name} {cc} {opt}: verdicts were {:#?}\nrefusals {:#?}\nnotes {:?}",
                        diff.functions, diff.refusals, diff.notes
                    ));
                }
                errors.append(&mut run.errors);
            }
        }
    }
    assert!(
        errors.is_empty(),
        "{} problem(s):\n{}",
        errors.len(),
        errors.join("\n")
    );
}
