//! The CLI contract of hpbuild and hpctl: error cases, refusals, bad input.
//! See tests/README.md.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tests::*;

// ---------------------------------------------------------------------------
// helpers for the CLI tests

fn must<T>(r: Res<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// The body-change fixture copied and compiled (no loader needed): a valid
/// hpbuild base.
fn plain_base() -> (tempfile::TempDir, PathBuf) {
    let f = must(Fixture::load("body-change"));
    let tmp = tempfile::Builder::new()
        .prefix("hp-e2e-cli-")
        .tempdir()
        .unwrap();
    let base = tmp.path().join("base");
    must(copy_fixture(&f, &base, false));
    must(build_tree(&f, &base, &must(f.build(DEFAULT_CONFIG)), None));
    (tmp, base)
}

/// The tool failed with exactly one non-empty line on stderr, holding every needle.
fn one_line_refusal(out: &Output, needles: &[&str], what: &str) {
    let needles: Vec<String> = needles.iter().map(|s| s.to_string()).collect();
    must(check_refusal(out, &needles, what));
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(
        lines.len() == 1,
        "{what}: the reason should be one line, got {} lines\n{}",
        lines.len(),
        out.report()
    );
}

fn hpctl(args: &[&str]) -> Output {
    let bin = must(hpctl_bin());
    must(run_timeout(Command::new(bin).args(args), HPCTL_TIMEOUT))
}

/// A PID that no process has right now.
fn unused_pid() -> u32 {
    let max: u32 = fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    (1..1000)
        .map(|i| max - i)
        .find(|p| !Path::new(&format!("/proc/{p}")).exists())
        .expect("a free pid")
}

/// Checks the body-change program answers `call 3` the old way, with its counter at `calls`.
fn still_old(s: &mut Started, calls: u32, after: &str) {
    let want = format!("result 6 calls {calls}");
    if let Err(e) = s.prog.expect("call 3", &want, None) {
        panic!(
            "after {after}, the program no longer answers correctly: {e}\n{}",
            s.prog.report()
        );
    }
}

// ---------------------------------------------------------------------------
// hpbuild CLI contract

#[test]
fn loader_out_writes_archive_and_header() {
    let bin = must(hpbuild_bin());
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("hp");
    let out = must(run_timeout(
        Command::new(bin).arg("loader").arg("--out").arg(&out_dir),
        HPBUILD_TIMEOUT,
    ));
    assert!(
        out.status.success(),
        "hpbuild loader --out failed\n{}",
        out.report()
    );
    let archive = fs::read(out_dir.join("libhotpatch.a")).unwrap_or_default();
    assert!(
        archive.starts_with(b"!<arch>\n"),
        "DIR/libhotpatch.a is missing or not an ar archive\n{}",
        out.report()
    );
    let header = fs::read_to_string(out_dir.join("hotpatch.h")).unwrap_or_default();
    assert!(
        !header.trim().is_empty(),
        "DIR/hotpatch.h is missing or empty\n{}",
        out.report()
    );
}

#[test]
fn hpbuild_rejects_malformed_diff() {
    let (tmp, base) = plain_base();
    let diff = tmp.path().join("garbage.patch");
    fs::write(&diff, "this is not a diff\n@@ nonsense @@\n+++\n---\n").unwrap();
    let out = must(run_hpbuild(&base, &diff, &tmp.path().join("out.hpo")));
    one_line_refusal(&out, &[], "hpbuild with a malformed diff");
    assert!(
        !tmp.path().join("out.hpo").exists(),
        "hpbuild refused but left out.hpo behind"
    );
}

#[test]
fn hpbuild_rejects_diff_that_does_not_apply() {
    let (tmp, base) = plain_base();
    let diff = tmp.path().join("stale.patch");
    fs::write(
        &diff,
        "--- a/prog.c\n+++ b/prog.c\n@@ -10,7 +10,7 @@\n int compute(int x)\n {\n     calls++;\n-    return x * 5;\n+    return x * 7;\n }\n \n int handle(const char *line)\n",
    )
    .unwrap();
    let out = must(run_hpbuild(&base, &diff, &tmp.path().join("out.hpo")));
    one_line_refusal(
        &out,
        &["prog.c: Hunk #1 FAILED"],
        "hpbuild with a diff that does not apply",
    );
    assert!(
        !tmp.path().join("out.hpo").exists(),
        "hpbuild refused but left out.hpo behind"
    );
}

/// The body-change fixture's fix, for diffs that add hunks elsewhere.
fn body_fix() -> String {
    fs::read_to_string(fixtures_dir().join("body-change/fix.patch")).unwrap()
}

/// The manifest's notes of a successful build (`out.json`).
fn notes_of(out: &Output, tmp: &Path) -> Vec<String> {
    assert!(out.status.success(), "hpbuild failed\n{}", out.report());
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(tmp.join("out.json")).unwrap()).unwrap();
    json["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

/// A hunk that does not apply to a file the build never compiles (docs)
/// does not fail the build: it is noted and skipped, and so is a hunk
/// applied at an offset.
#[test]
fn hpbuild_skips_a_failing_hunk_in_a_file_it_does_not_compile() {
    let (tmp, base) = plain_base();
    fs::write(base.join("NEWS"), "release 1\n").unwrap();
    let diff = tmp.path().join("with-docs.patch");
    let shifted = body_fix().replace("@@ -10,7 +10,7 @@", "@@ -7,7 +7,7 @@");
    fs::write(
        &diff,
        format!("--- a/NEWS\n+++ b/NEWS\n@@ -1 +1 @@\n-release 0\n+release 2\n{shifted}"),
    )
    .unwrap();
    let out = must(run_hpbuild(&base, &diff, &tmp.path().join("out.hpo")));
    let notes = notes_of(&out, tmp.path());
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("NEWS: Hunk #1 FAILED at 1.")
                && n.contains("hpbuild does not compile this file")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("prog.c: Hunk #1 succeeded at 10 (offset 3 lines)")),
        "{notes:?}"
    );
}

/// A compile database entry whose source is gone (a build's compiler probe
/// on a throwaway file) does not stop a header fix: it is skipped, noted.
#[test]
fn hpbuild_skips_units_whose_source_is_gone() {
    let (tmp, base) = plain_base();
    let db_path = base.join("compile_commands.json");
    let mut db: Vec<serde_json::Value> =
        serde_json::from_str(&fs::read_to_string(&db_path).unwrap()).unwrap();
    let mut probe = db[0].clone();
    let src = probe["file"].as_str().unwrap().replace("prog.c", "probe.c");
    probe["file"] = serde_json::Value::from(src);
    if let Some(args) = probe["arguments"].as_array_mut() {
        for a in args.iter_mut() {
            if a.as_str() == Some("prog.c") {
                *a = serde_json::Value::from("probe.c");
            }
        }
    }
    db.push(probe);
    fs::write(&db_path, serde_json::to_string(&db).unwrap()).unwrap();
    let header = fs::read_to_string(base.join("repl.h")).unwrap();
    let first = header.lines().next().unwrap();
    let diff = tmp.path().join("header.patch");
    fs::write(
        &diff,
        format!(
            "--- a/repl.h\n+++ b/repl.h\n@@ -1 +1 @@\n-{first}\n+{first} \n{}",
            body_fix()
        ),
    )
    .unwrap();
    let out = must(run_hpbuild(&base, &diff, &tmp.path().join("out.hpo")));
    let notes = notes_of(&out, tmp.path());
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("skipped probe.c: its source no longer exists")),
        "{notes:?}"
    );
}

/// A source compiled into two programs, each with its own flags, has two
/// entries: hpbuild uses one, says which, and `--unit-output` chooses.
#[test]
fn hpbuild_says_which_entry_of_a_source_it_compiles() {
    let (tmp, base) = plain_base();
    let db_path = base.join("compile_commands.json");
    let mut db: Vec<serde_json::Value> =
        serde_json::from_str(&fs::read_to_string(&db_path).unwrap()).unwrap();
    let i = db
        .iter()
        .position(|e| e["file"].as_str().unwrap().ends_with("prog.c"))
        .unwrap();
    let mut other = db[i].clone();
    for (e, out) in [(&mut db[i], "server/prog.o"), (&mut other, "cli/prog.o")] {
        e["output"] = serde_json::Value::from(out);
    }
    if let Some(args) = other["arguments"].as_array_mut() {
        args.push(serde_json::Value::from("-DCLI_BUILD=1"));
    }
    db.push(other);
    fs::write(&db_path, serde_json::to_string(&db).unwrap()).unwrap();
    let diff = tmp.path().join("fix.patch");
    fs::write(&diff, body_fix()).unwrap();
    let out = must(run_hpbuild(&base, &diff, &tmp.path().join("out.hpo")));
    let notes = notes_of(&out, tmp.path());
    assert!(
        notes.iter().any(
            |n| n.starts_with("prog.c: 2 entries in the compile database")
                && n.contains("used the one writing server/prog.o — pass --unit-output")
        ),
        "{notes:?}"
    );
    let bin = must(hpbuild_bin());
    let chosen = must(run_timeout(
        Command::new(bin)
            .arg("--base")
            .arg(&base)
            .arg("--diff")
            .arg(&diff)
            .arg("-o")
            .arg(tmp.path().join("out.hpo"))
            .args(["--unit-output", "cli/prog.o"]),
        HPBUILD_TIMEOUT,
    ));
    let notes = notes_of(&chosen, tmp.path());
    assert!(
        notes
            .iter()
            .any(|n| n.contains("used the one writing cli/prog.o")),
        "{notes:?}"
    );
}

/// A diff that only adds a function changes nothing the running program
/// calls: hpbuild says so, naming the function, and writes no patch (the
/// loader would refuse a patch that replaces no function).
#[test]
fn hpbuild_refuses_new_code_nothing_calls() {
    let (tmp, base) = plain_base();
    let diff = tmp.path().join("only-new.patch");
    fs::write(
        &diff,
        "--- a/prog.c\n+++ b/prog.c\n@@ -14,5 +14,10 @@\n     return x * 2;\n }\n \n+int triple(int x)\n+{\n+    return x * 3;\n+}\n+\n int handle(const char *line)\n {\n",
    )
    .unwrap();
    let out = must(run_hpbuild(&base, &diff, &tmp.path().join("out.hpo")));
    one_line_refusal(
        &out,
        &["adds triple()", "nothing would ever call the new code"],
        "hpbuild with a diff that only adds a function",
    );
    assert!(!tmp.path().join("out.hpo").exists());
}

/// A build file whose change names a function the diff adds (nginx's
/// FIX-HTTP2bomb lists a new module in auto/modules, which configure writes
/// into a generated table): the new code would be loaded but never
/// registered, so hpbuild refuses, naming the file and the definition.
#[test]
fn hpbuild_refuses_a_new_definition_a_build_file_registers() {
    let (tmp, base) = plain_base();
    fs::write(base.join("modules.list"), "compute\n").unwrap();
    let diff = tmp.path().join("register.patch");
    fs::write(
        &diff,
        "--- a/modules.list\n+++ b/modules.list\n@@ -1 +1,2 @@\n compute\n+triple\n\
         --- a/prog.c\n+++ b/prog.c\n@@ -7,8 +7,13 @@\n \n int calls; /* state: keeps counting across the patch */\n \n\
         +int triple(int x)\n+{\n+    return x * 3;\n+}\n+\n int compute(int x)\n {\n     calls++;\n\
         -    return x * 2;\n+    return triple(x);\n }\n",
    )
    .unwrap();
    let out = must(run_hpbuild(&base, &diff, &tmp.path().join("out.hpo")));
    one_line_refusal(
        &out,
        &["modules.list", "names `triple`", "prog.c"],
        "hpbuild with a build file naming a function the diff adds",
    );
    assert!(!tmp.path().join("out.hpo").exists());
}

#[test]
fn hpbuild_rejects_diff_of_unknown_file() {
    let (tmp, base) = plain_base();
    let diff = tmp.path().join("elsewhere.patch");
    fs::write(
        &diff,
        "--- a/nosuch.c\n+++ b/nosuch.c\n@@ -1,3 +1,3 @@\n int a;\n-int b;\n+int c;\n int d;\n",
    )
    .unwrap();
    let out = must(run_hpbuild(&base, &diff, &tmp.path().join("out.hpo")));
    one_line_refusal(
        &out,
        &["nosuch.c"],
        "hpbuild with a diff of a file that is not in the base",
    );
}

#[test]
fn hpbuild_requires_compile_commands() {
    let (tmp, base) = plain_base();
    fs::remove_file(base.join("compile_commands.json")).unwrap();
    let out = must(run_hpbuild(
        &base,
        &must(Fixture::load("body-change")).dir.join("fix.patch"),
        &tmp.path().join("out.hpo"),
    ));
    one_line_refusal(
        &out,
        &["compile_commands.json"],
        "hpbuild on a base without compile_commands.json",
    );
}

#[test]
fn hpbuild_rejects_missing_diff_file() {
    let (tmp, base) = plain_base();
    let out = must(run_hpbuild(
        &base,
        &tmp.path().join("no-such.patch"),
        &tmp.path().join("out.hpo"),
    ));
    one_line_refusal(
        &out,
        &["no-such.patch"],
        "hpbuild with a diff file that does not exist",
    );
}

/// A one-file C project in `dir` with its compile database: the base for
/// the tests below that need a source of their own.
fn tiny_base(dir: &Path, source: &str) -> PathBuf {
    let base = dir.join("base");
    fs::create_dir_all(&base).unwrap();
    fs::write(base.join("m.c"), source).unwrap();
    let db = serde_json::json!([{
        "directory": base,
        "file": "m.c",
        "arguments": ["cc", "-O2", "-g", "-c", "m.c", "-o", "m.o"],
    }]);
    fs::write(base.join("compile_commands.json"), db.to_string()).unwrap();
    base
}

/// A unified diff of `base/m.c` against `edited` (what `diff -u` prints).
fn diff_of(tmp: &Path, base: &Path, edited: &str) -> PathBuf {
    let new = tmp.join("m.c.new");
    fs::write(&new, edited).unwrap();
    let out = Command::new("diff")
        .args(["-u", "--label", "a/m.c", "--label", "b/m.c"])
        .arg(base.join("m.c"))
        .arg(&new)
        .output()
        .expect("diff(1) runs");
    let path = tmp.join("fix.patch");
    fs::write(&path, &out.stdout).unwrap();
    path
}

fn hpbuild_with(args: &[&str], dir: &Path) -> Output {
    must(run_timeout(
        Command::new(must(hpbuild_bin()))
            .args(args)
            .current_dir(dir),
        HPBUILD_TIMEOUT,
    ))
}

const SHOP: &str = "#include <stdio.h>\n#define UNIT \"EUR\"\nint limit = 5;\nint scale = 2;\nint twice(int x)\n{\n    return x * 2;\n}\nint price(int size)\n{\n    printf(\"%d %s\\n\", size, UNIT);\n    return size * scale + limit;\n}\n";

/// A missing `--base` is named the way clap names any missing option, with
/// clap's usage exit status.
#[test]
fn hpbuild_names_a_missing_base_like_any_missing_option() {
    let tmp = tempfile::tempdir().unwrap();
    let out = hpbuild_with(&["--diff", "fix.patch", "-o", "out.hpo"], tmp.path());
    assert_eq!(out.status.code(), Some(2), "{}", out.report());
    assert!(
        out.stderr.contains("required arguments were not provided")
            && out.stderr.contains("--base <DIR|GIT-REV>")
            && !out.stderr.contains("--diff <FILE>\n"),
        "{}",
        out.report()
    );
}

/// Success prints one summary line (counted in English) and the manifest
/// names every file by its absolute path, whatever the current directory.
#[test]
fn hpbuild_summarises_in_one_line_and_the_manifest_paths_are_absolute() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tiny_base(tmp.path(), SHOP);
    diff_of(
        tmp.path(),
        &base,
        &SHOP.replace("size * scale", "size * scale * 3"),
    );
    let out = hpbuild_with(
        &["--base", "base", "--diff", "fix.patch", "-o", "fix.hpo"],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", out.report());
    let hpo = tmp.path().join("fix.hpo");
    let summary = format!(
        "hpbuild: wrote {}: replaces 1 function (price)",
        hpo.display()
    );
    assert!(
        out.stderr.lines().count() == 1 && out.stderr.starts_with(&summary),
        "want one line starting {summary:?}\n{}",
        out.report()
    );
    assert!(out.stdout.is_empty(), "{}", out.report());
    let m: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(tmp.path().join("fix.json")).unwrap()).unwrap();
    for (field, want) in [
        (&m["patch_object"], hpo.clone()),
        (&m["reviewable_source"], tmp.path().join("fix.c")),
        (&m["diff"]["path"], tmp.path().join("fix.patch")),
    ] {
        assert_eq!(field.as_str(), Some(want.to_str().unwrap()), "{m:#}");
    }
}

/// A CMake-style project keeps compile_commands.json in its build
/// directory: hpbuild finds it there and says so.
#[test]
fn hpbuild_finds_the_compile_database_in_the_build_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tiny_base(tmp.path(), SHOP);
    fs::create_dir(base.join("build")).unwrap();
    fs::rename(
        base.join("compile_commands.json"),
        base.join("build/compile_commands.json"),
    )
    .unwrap();
    diff_of(
        tmp.path(),
        &base,
        &SHOP.replace("size * scale", "size * scale * 3"),
    );
    let out = hpbuild_with(
        &["--base", "base", "--diff", "fix.patch", "-o", "out.hpo"],
        tmp.path(),
    );
    let notes = notes_of(&out, tmp.path());
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("compile database: build/compile_commands.json")),
        "{notes:?}"
    );
}

/// Every refusal, not only the first: the error line counts the others,
/// `--explain` lists them and `--json` prints them as JSON.
#[test]
fn hpbuild_lists_every_refusal_with_explain_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tiny_base(tmp.path(), SHOP);
    let edited = SHOP
        .replace("limit = 5", "limit = 6")
        .replace("scale = 2", "scale = 3");
    diff_of(tmp.path(), &base, &edited);
    let args = ["--base", "base", "--diff", "fix.patch", "-o", "fix.hpo"];
    let plain = hpbuild_with(&args, tmp.path());
    one_line_refusal(
        &plain,
        &["m.c: ", "(1 more refusal; --explain lists them all)"],
        "two refusals",
    );
    assert!(
        !plain.stderr.contains("after fixing this one"),
        "{}",
        plain.report()
    );

    let explained = hpbuild_with(&[&args[..], &["--explain"]].concat(), tmp.path());
    let listed: Vec<&str> = explained
        .stdout
        .lines()
        .filter(|l| l.starts_with("refused: m.c: "))
        .collect();
    assert_eq!(listed.len(), 2, "{}", explained.report());
    assert!(
        listed.iter().any(|l| l.contains("limit")) && listed.iter().any(|l| l.contains("scale")),
        "{listed:?}"
    );

    let json = hpbuild_with(&[&args[..], &["--json"]].concat(), tmp.path());
    assert!(!json.status.success());
    let doc: serde_json::Value = serde_json::from_str(&json.stdout)
        .unwrap_or_else(|e| panic!("--json printed no JSON ({e})\n{}", json.report()));
    let symbols: Vec<&str> = doc["refused"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["symbol"].as_str())
        .collect();
    assert_eq!(symbols.len(), 2, "{doc:#}");
    assert!(
        symbols
            .iter()
            .all(|s| s.contains("limit") || s.contains("scale")),
        "{doc:#}"
    );
}

/// OUT.c shows every change that ships: a variable the patch adds is
/// defined with its initialiser (not declared `extern`) and listed in the
/// manifest; a string literal changed through a macro is named.
#[test]
fn hpbuild_reviewable_source_shows_new_data_and_changed_literals() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tiny_base(tmp.path(), SHOP);
    let edited = SHOP
        .replace("\"EUR\"", "\"USD\"")
        .replace(
            "int scale = 2;\n",
            "int scale = 2;\nstatic int bonus = 7;\n",
        )
        .replace("size * scale + limit", "size * scale + limit + bonus++");
    diff_of(tmp.path(), &base, &edited);
    let out = hpbuild_with(
        &["--base", "base", "--diff", "fix.patch", "-o", "fix.hpo"],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", out.report());
    let src = fs::read_to_string(tmp.path().join("fix.c")).unwrap();
    assert!(src.contains("\nstatic int bonus = 7;\n"), "{src}");
    assert!(!src.contains("extern int bonus"), "{src}");
    assert!(
        src.contains("string literal changed: \"EUR\" → \"USD\""),
        "{src}"
    );
    let m: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(tmp.path().join("fix.json")).unwrap()).unwrap();
    assert_eq!(m["added_data"], serde_json::json!(["bonus"]), "{m:#}");
    assert!(
        out.stderr.contains("adds 1 variable (bonus)"),
        "{}",
        out.report()
    );
}

/// `--explain` names an edited function whose compiled code is the same.
#[test]
fn hpbuild_explains_edits_that_change_no_code() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tiny_base(tmp.path(), SHOP);
    let edited = SHOP
        .replace("return x * 2;", "return x + x;")
        .replace("size * scale", "size * scale * 3");
    diff_of(tmp.path(), &base, &edited);
    let out = hpbuild_with(
        &[
            "--base",
            "base",
            "--diff",
            "fix.patch",
            "-o",
            "fix.hpo",
            "--explain",
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", out.report());
    assert!(
        out.stdout
            .lines()
            .any(|l| l == "twice (m.c): edited, no code change: not shipped"),
        "{}",
        out.report()
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("price: edited in the diff")),
        "{}",
        out.report()
    );
}

/// An `assert()` added under `NDEBUG` compiles to nothing, but it moves the
/// `__LINE__` a later statement passes: the function's bytes differ in that
/// immediate only, so it is not shipped. Without `NDEBUG` the assert is code
/// and the function ships.
#[test]
fn hpbuild_does_not_ship_an_assert_compiled_out() {
    const CHECKED: &str = "#include <assert.h>\n#include <stdio.h>\nvoid report(int line) { printf(\"line %d\\n\", line); }\nint twice(int x)\n{\n    return x * 2;\n}\nint check(int x)\n{\n    if (x < 0)\n        report(__LINE__);\n    return x * 3;\n}\n";
    for (ndebug, shipped) in [(true, "twice"), (false, "twice, check")] {
        let tmp = tempfile::tempdir().unwrap();
        let source = if ndebug {
            format!("#define NDEBUG\n{CHECKED}")
        } else {
            CHECKED.to_string()
        };
        let base = tiny_base(tmp.path(), &source);
        let edited = source
            .replace("return x * 2;", "return x + x + 1;")
            .replace("    if (x < 0)", "    assert(x != 7);\n    if (x < 0)");
        diff_of(tmp.path(), &base, &edited);
        let out = hpbuild_with(
            &[
                "--base",
                "base",
                "--diff",
                "fix.patch",
                "-o",
                "fix.hpo",
                "--explain",
            ],
            tmp.path(),
        );
        assert!(out.status.success(), "{}", out.report());
        let summary = format!("({shipped})");
        assert!(
            out.stderr.contains(&summary),
            "NDEBUG {ndebug}: expected to ship {shipped}\n{}",
            out.report()
        );
        if ndebug {
            assert!(
                out.stdout
                    .lines()
                    .any(|l| l == "check (m.c): edited, no code change: not shipped"),
                "{}",
                out.report()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// hpctl CLI contract

/// Bad patch files are refused and leave the program working; the real patch
/// still applies afterwards.
#[test]
fn hpctl_rejects_bad_patch_files() {
    let f = must(Fixture::load("body-change"));
    let mut s = must(start_fixture(&f, &must(f.build(DEFAULT_CONFIG))));
    let (hpo, build) = build_patch(&f, &s).unwrap_or_else(|e| panic!("{e}\n{}", s.prog.report()));
    assert!(
        build.status.success(),
        "hpbuild failed (this test needs a real patch)\n{}",
        build.report()
    );
    let pid = s.prog.pid().to_string();
    still_old(&mut s, 1, "start");

    let bytes = fs::read(&hpo).unwrap();
    let bad = s.tmp.path().join("bad");
    fs::create_dir_all(&bad).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated.hpo", bytes[..bytes.len() / 2].to_vec()),
        ("header-only.hpo", bytes[..bytes.len().min(64)].to_vec()),
        ("not-elf.hpo", b"this is not an ELF file\n".to_vec()),
        ("empty.hpo", Vec::new()),
        (
            "plain-object.hpo",
            fs::read(s.run_dir.join("prog.o")).unwrap(),
        ),
    ];
    let mut calls = 1;
    for (name, content) in cases {
        let p = bad.join(name);
        fs::write(&p, content).unwrap();
        let out = hpctl(&["apply", &pid, p.to_str().unwrap()]);
        if let Err(e) = check_refusal(&out, &[], &format!("hpctl apply {name}")) {
            panic!("{e}\n{}", s.prog.report());
        }
        calls += 1;
        still_old(&mut s, calls, &format!("hpctl apply {name}"));
    }
    let listed = check_list(&must(hpctl_bin()), s.prog.pid(), &hpo, false);
    if let Err(e) = listed {
        panic!("after the refused patches: {e}\n{}", s.prog.report());
    }
    let out = hpctl(&["apply", &pid, hpo.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "the real patch no longer applies after the bad ones\n{}\n{}",
        out.report(),
        s.prog.report()
    );
    if let Err(e) = s
        .prog
        .expect("call 3", &format!("result 9 calls {}", calls + 1), None)
    {
        panic!("{e}\n{}", s.prog.report());
    }
}

/// `hpctl list` on a fresh program succeeds; `hpctl revert` with nothing
/// applied fails and leaves the program working.
#[test]
fn hpctl_list_empty_and_revert_nothing() {
    let f = must(Fixture::load("body-change"));
    let mut s = must(start_fixture(&f, &must(f.build(DEFAULT_CONFIG))));
    still_old(&mut s, 1, "start");
    let pid = s.prog.pid().to_string();
    let out = hpctl(&["list", &pid]);
    assert!(
        out.status.success(),
        "hpctl list on a program with the loader failed\n{}\n{}",
        out.report(),
        s.prog.report()
    );
    let out = hpctl(&["revert", &pid]);
    if let Err(e) = check_refusal(&out, &[], "hpctl revert with no patch applied") {
        panic!("{e}\n{}", s.prog.report());
    }
    still_old(&mut s, 2, "hpctl revert with no patch applied");
}

#[test]
fn hpctl_refuses_process_without_loader() {
    let child = Command::new("sleep")
        .arg("30")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sleep");
    let guard = KillOnDrop(child);
    let pid = guard.0.id().to_string();
    for args in [vec!["list", &pid], vec!["revert", &pid]] {
        let out = hpctl(&args);
        must(check_refusal(
            &out,
            &[],
            &format!("hpctl {} on a process without the loader", args[0]),
        ));
    }
    let tmp = tempfile::tempdir().unwrap();
    let dummy = tmp.path().join("x.hpo");
    fs::write(&dummy, b"\x7fELF").unwrap();
    let out = hpctl(&["apply", &pid, dummy.to_str().unwrap()]);
    must(check_refusal(
        &out,
        &[],
        "hpctl apply on a process without the loader",
    ));
}

#[test]
fn hpctl_refuses_missing_pid() {
    let pid = unused_pid().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let dummy = tmp.path().join("x.hpo");
    fs::write(&dummy, b"\x7fELF").unwrap();
    for args in [
        vec!["list", &pid],
        vec!["revert", &pid],
        vec!["apply", &pid, dummy.to_str().unwrap()],
    ] {
        let out = hpctl(&args);
        must(check_refusal(
            &out,
            &[],
            &format!("hpctl {} on pid {pid} (no such process)", args[0]),
        ));
    }
}

#[test]
fn hpctl_rejects_bad_arguments() {
    for args in [
        vec![],
        vec!["apply"],
        vec!["list", "not-a-pid"],
        vec!["frobnicate", "1"],
    ] {
        let out = hpctl(&args);
        must(check_refusal(&out, &[], &format!("hpctl {args:?}")));
    }
}

/// `hpbuild --redirect call-site` records the choice in the patch and in the
/// manifest: a plain `hpctl apply` then rewrites the direct calls (the list
/// shows them), and `--redirect entry` overrides it.
#[test]
fn redirect_chosen_at_build_time() {
    let f = must(Fixture::load("call-site"));
    let mut s = must(start_fixture(&f, &must(f.build(DEFAULT_CONFIG))));
    let diff = s.tmp.path().join("fix.patch");
    fs::copy(f.dir.join("fix.patch"), &diff).unwrap();
    let hpo = s.tmp.path().join("cs.hpo");
    let build = must(run_timeout(
        Command::new(must(hpbuild_bin()))
            .args(["--redirect", "call-site", "--base"])
            .arg(&s.base_dir)
            .arg("--diff")
            .arg(&diff)
            .arg("-o")
            .arg(&hpo),
        HPBUILD_TIMEOUT,
    ));
    assert!(build.status.success(), "{}", build.report());
    let manifest = fs::read_to_string(hpo.with_extension("json")).unwrap();
    assert!(
        manifest.contains("\"redirect\": \"call-site\""),
        "{manifest}"
    );
    let pid = s.prog.pid().to_string();
    let hpo_s = hpo.to_str().unwrap();
    for (args, sites) in [
        (vec!["apply", &pid, hpo_s], true),
        (vec!["apply", "--redirect=entry", &pid, hpo_s], false),
    ] {
        let out = hpctl(&args);
        assert!(
            out.status.success(),
            "{}\n{}",
            out.report(),
            s.prog.report()
        );
        if let Err(e) = s.prog.expect("direct 3", "direct 3 = 61", None) {
            panic!("{e}\n{}", s.prog.report());
        }
        let list = hpctl(&["list", &pid]);
        assert_eq!(
            list.stdout.contains("call sites)"),
            sites,
            "{}",
            list.report()
        );
        let out = hpctl(&["revert", &pid]);
        assert!(out.status.success(), "{}", out.report());
    }
}

// ---------------------------------------------------------------------------
// refusals for the right reason

/// A shared library (built here) that defines a thread-local the executable
/// uses; `bump()` is patched to count in twos.
const SHARED_TLS_LIB: &str = "__thread int counter;\n";
const SHARED_TLS_PROG: &str = r#"#include <stdio.h>
#include <string.h>
#include "repl.h"

extern __thread int counter; /* defined in libtlsdemo.so */

__attribute__((noinline)) int bump(void)
{
    counter += 1;
    return counter;
}

int handle(const char *line)
{
    if (strcmp(line, "bump") == 0) {
        printf("counter %d\n", bump());
        return 1;
    }
    return 0;
}
"#;
const SHARED_TLS_FIX: &str = "--- a/prog.c\n+++ b/prog.c\n@@ -7,7 +7,7 @@\n \n __attribute__((noinline)) int bump(void)\n {\n-    counter += 1;\n+    counter += 2;\n     return counter;\n }\n \n";

/// Issue 8 item 5: a patch whose code uses a shared library's thread-local
/// (initial-exec, `R_X86_64_GOTTPOFF`) is refused by the loader for the
/// README's reason, naming the variable, in one line — not as a relocation
/// against a "non-thread-local symbol" — and the process runs on unchanged.
#[test]
fn shared_library_thread_local_refused_for_that_reason() {
    let loader = must(loader_dir());
    for name in ["gcc-O2", "clang-O2", "gcc-O2-nopie"] {
        let c = config(name).expect("a matrix configuration");
        let tmp = tempfile::Builder::new()
            .prefix("hp-e2e-shared-tls-")
            .tempdir()
            .unwrap();
        fs::create_dir_all(tmp.path().join("base")).unwrap();
        let base = tmp.path().join("base").canonicalize().unwrap();
        for f in ["repl.c", "repl.h"] {
            fs::copy(fixtures_dir().join("common").join(f), base.join(f)).unwrap();
        }
        fs::write(base.join("libtlsdemo.c"), SHARED_TLS_LIB).unwrap();
        fs::write(base.join("prog.c"), SHARED_TLS_PROG).unwrap();
        let mut cflags: Vec<String> = c.cflags.iter().map(|s| s.to_string()).collect();
        cflags.push("-g".into());
        let compile = |src: &str| {
            let mut a = vec![c.cc.to_string()];
            a.extend(cflags.iter().cloned());
            a.extend([
                "-c".into(),
                src.into(),
                "-o".into(),
                src.replace(".c", ".o"),
            ]);
            a
        };
        let ccj: Vec<serde_json::Value> = ["prog.c", "repl.c"]
            .iter()
            .map(|s| {
                serde_json::json!({
                    "directory": base.to_string_lossy(),
                    "file": s,
                    "arguments": compile(s),
                    "output": s.replace(".c", ".o"),
                })
            })
            .collect();
        fs::write(
            base.join("compile_commands.json"),
            serde_json::to_string_pretty(&ccj).unwrap(),
        )
        .unwrap();
        let run = |cmd: &mut Command| {
            must(run_ok(cmd.current_dir(&base), CC_TIMEOUT));
        };
        run(Command::new(c.cc).args([
            "-O2",
            "-g",
            "-fPIC",
            "-shared",
            "libtlsdemo.c",
            "-o",
            "libtlsdemo.so",
        ]));
        for s in ["prog.c", "repl.c"] {
            let a = compile(s);
            run(Command::new(&a[0]).args(&a[1..]));
        }
        run(Command::new(c.cc)
            .args(&cflags)
            .args(["prog.o", "repl.o", "-L.", "-ltlsdemo", "-Wl,-rpath,$ORIGIN"])
            .args(c.ldflags)
            .args(loader::link_args(&loader))
            .args(["-o", "prog"]));

        let mut prog = must(Program::start(&base.join("prog"), tmp.path()));
        let ask = |prog: &mut Program, send: &str, want: &str, when: &str| {
            if let Err(e) = prog.expect(send, want, None) {
                panic!("[{name}] {when}: {e}\n{}", prog.report());
            }
        };
        ask(&mut prog, "bump", "counter 1", "before the patch");
        ask(&mut prog, "bump", "counter 2", "before the patch");

        let diff = tmp.path().join("fix.patch");
        fs::write(&diff, SHARED_TLS_FIX).unwrap();
        let hpo = tmp.path().join("shared-tls.hpo");
        let build = must(run_hpbuild(&base, &diff, &hpo));
        assert!(
            build.status.success(),
            "[{name}] hpbuild failed\n{}\n{}",
            build.report(),
            prog.report()
        );
        let pid = prog.pid().to_string();
        let out = hpctl(&["apply", &pid, hpo.to_str().unwrap()]);
        let what = format!("[{name}] hpctl apply of a patch using a shared library's thread-local");
        let needles = [
            "thread-local counter".to_string(),
            "thread-locals of shared libraries are not supported".to_string(),
        ];
        if let Err(e) = check_refusal(&out, &needles, &what) {
            panic!("{e}\n{}", prog.report());
        }
        let lines = out.stderr.lines().filter(|l| !l.trim().is_empty()).count();
        assert!(
            lines == 1,
            "{what}: the reason should be one line, got {lines}\n{}\n{}",
            out.report(),
            prog.report()
        );
        ask(&mut prog, "bump", "counter 3", "after the refused apply");
        ask(&mut prog, "ping", "pong", "after the refused apply");
        if let Err(e) = check_list(&must(hpctl_bin()), prog.pid(), &hpo, false) {
            panic!("[{name}] after the refused apply: {e}\n{}", prog.report());
        }
    }
}

// ---------------------------------------------------------------------------
// signing (hpbuild --sign, a process with HOTPATCH_PUBKEY)

/// An ed25519 key pair in `dir`: `NAME.pem` (private, PEM PKCS#8) and
/// `NAME.pub` (public, PEM), made by openssl as the README says when it is
/// installed, else the same files by ed25519-dalek.
fn key_pair(dir: &Path, name: &str, seed: u8) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let pem = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub"));
    let openssl = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let made = openssl(&[
        "genpkey",
        "-algorithm",
        "ed25519",
        "-out",
        pem.to_str().unwrap(),
    ]) && openssl(&[
        "pkey",
        "-in",
        pem.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    if !made {
        use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
        let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let private = key.to_pkcs8_pem(Default::default()).unwrap();
        fs::write(&pem, private.as_bytes()).unwrap();
        let pubkey = key.verifying_key();
        fs::write(
            &public,
            pubkey.to_public_key_pem(Default::default()).unwrap(),
        )
        .unwrap();
    }
    // The loader ignores a key file someone else could write.
    fs::set_permissions(&public, fs::Permissions::from_mode(0o644)).unwrap();
    (pem, public)
}

/// `hpbuild --base BASE --diff DIFF -o OUT [--sign KEY]`.
fn hpbuild_signed(s: &Started, diff: &Path, out: &Path, key: Option<&Path>) -> Output {
    let mut cmd = Command::new(must(hpbuild_bin()));
    cmd.arg("--base")
        .arg(&s.base_dir)
        .arg("--diff")
        .arg(diff)
        .arg("-o")
        .arg(out);
    if let Some(key) = key {
        cmd.arg("--sign").arg(key);
    }
    must(run_timeout(&mut cmd, HPBUILD_TIMEOUT))
}

/// A process started with HOTPATCH_PUBKEY applies the fix built with
/// `hpbuild --sign` and the matching private key (new code, counter kept);
/// the same fix unsigned, or signed with another key, is refused naming
/// the reason, and the program keeps running its old code. The manifest
/// records the signing key.
#[test]
fn a_signed_patch_applies_where_a_key_is_configured_and_an_unsigned_one_is_refused() {
    let f = must(Fixture::load("body-change"));
    let keys = tempfile::Builder::new()
        .prefix("hp-e2e-keys-")
        .tempdir()
        .unwrap();
    let (pem, public) = key_pair(keys.path(), "key", 21);
    let (other, _) = key_pair(keys.path(), "other", 22);
    let env = [("HOTPATCH_PUBKEY", public.as_os_str())];
    let mut s = must(start_fixture_with_env(
        &f,
        &must(f.build(DEFAULT_CONFIG)),
        &env,
    ));
    let pid = s.prog.pid().to_string();
    still_old(&mut s, 1, "start");
    let diff = s.tmp.path().join("fix.patch");
    fs::copy(f.dir.join("fix.patch"), &diff).unwrap();
    let out = s.tmp.path().join("out");
    fs::create_dir_all(&out).unwrap();

    // The same fix, unsigned and signed with a key the process does not
    // trust: refused, each for its reason.
    let unsigned = out.join("unsigned.hpo");
    let build = hpbuild_signed(&s, &diff, &unsigned, None);
    assert!(build.status.success(), "{}", build.report());
    let wrong = out.join("wrong.hpo");
    let build = hpbuild_signed(&s, &diff, &wrong, Some(&other));
    assert!(build.status.success(), "{}", build.report());
    let mut trusted_fp = String::new();
    for (calls, hpo, reason) in [
        (
            2,
            &unsigned,
            "is not signed, and this process requires signed patches",
        ),
        (
            3,
            &wrong,
            "signature does not verify with the configured key",
        ),
    ] {
        let applied = hpctl(&["apply", &pid, hpo.to_str().unwrap()]);
        let needles = [
            reason.to_string(),
            format!("HOTPATCH_PUBKEY={}", public.display()),
        ];
        if let Err(e) = check_refusal(
            &applied,
            &needles,
            "hpctl apply of a patch not signed with the trusted key",
        ) {
            panic!("{e}\n{}", s.prog.report());
        }
        // "... (key 0123456789abcdef, HOTPATCH_PUBKEY=...)": the trusted key.
        let shown = applied.stderr.split("key ").nth(1).unwrap_or_default();
        trusted_fp = shown.chars().take_while(char::is_ascii_hexdigit).collect();
        still_old(&mut s, calls, &format!("hpctl apply {}", hpo.display()));
    }
    assert_eq!(trusted_fp.len(), 16, "a fingerprint in the refusal");

    // Signed with the private half: applies, and the counter carries on.
    let signed = out.join("signed.hpo");
    let build = hpbuild_signed(&s, &diff, &signed, Some(&pem));
    assert!(build.status.success(), "{}", build.report());
    assert!(
        build
            .stderr
            .contains(&format!("signed with key {trusted_fp}")),
        "the summary names the key\n{}",
        build.report()
    );
    let m: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(signed.with_extension("json")).unwrap()).unwrap();
    assert_eq!(m["signed"]["algorithm"], "ed25519", "{m:#}");
    assert!(
        m["signed"]["key_fingerprint"]
            .as_str()
            .is_some_and(|fp| fp.len() == 64 && fp.starts_with(&trusted_fp)),
        "{m:#}"
    );
    assert_eq!(m["signed"]["public_key"].as_str().map(str::len), Some(64));
    let um: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(unsigned.with_extension("json")).unwrap())
            .unwrap();
    assert!(um.get("signed").is_none(), "{um:#}");

    let applied = hpctl(&["apply", &pid, signed.to_str().unwrap()]);
    assert!(
        applied.status.success(),
        "{}\n{}",
        applied.report(),
        s.prog.report()
    );
    if let Err(e) = s.prog.expect("call 3", "result 9 calls 4", None) {
        panic!("{e}\n{}", s.prog.report());
    }
}

/// A key file hpbuild cannot sign with (missing, a public key, not a key)
/// is refused in one line naming the file, before anything is built or
/// written.
#[test]
fn hpbuild_refuses_a_bad_signing_key_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tiny_base(tmp.path(), SHOP);
    diff_of(
        tmp.path(),
        &base,
        &SHOP.replace("size * scale", "size * scale * 3"),
    );
    let (_, public) = key_pair(tmp.path(), "key", 23);
    fs::write(tmp.path().join("junk.pem"), "not a key\n").unwrap();
    for (key, why) in [
        ("missing.pem", "cannot read the signing key"),
        ("key.pub", "it holds a public key"),
        ("junk.pem", "not a PEM PKCS#8 ed25519 private key"),
    ] {
        let out = hpbuild_with(
            &[
                "--base",
                "base",
                "--diff",
                "fix.patch",
                "-o",
                "fix.hpo",
                "--sign",
                key,
            ],
            tmp.path(),
        );
        one_line_refusal(&out, &[key, why], &format!("hpbuild --sign {key}"));
        for written in ["fix.hpo", "fix.json", "fix.c"] {
            assert!(
                !tmp.path().join(written).exists(),
                "--sign {key}: {written} was written\n{}",
                out.report()
            );
        }
    }
    assert!(public.exists());
}
