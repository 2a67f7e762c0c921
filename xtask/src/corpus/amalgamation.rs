//! SQLite as an amalgamation: the same Debian source, but the shell built
//! from the generated single-file `sqlite3.c` and `shell.c`
//! (fixtures/corpus/sqlite3/amalgamation.mk), the way projects that embed
//! SQLite build it. A Debian fix is written against `src/*.c`; for this
//! build its diff is what the fix changes in the generated files: the tree
//! is copied, the fix applied, the amalgamation generated again and
//! compared (`diff_for`). One unit of ~240,000 lines whose static locals
//! share names across unrelated functions (several `sMutex`, each
//! `assert()`'s `__PRETTY_FUNCTION__`): a fix anywhere in it must build.

use super::sqlite::{Shell, TCC};
use super::{Case, Check, Driver, Env, Project};
use crate::corpus::session::Session;
use crate::tools;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Amalgamation;

/// The shell of the amalgamation build, `amal/sqlite3 :memory:`.
pub struct AmalShell;

/// Where the generated files are compiled, inside the tree.
const AMAL: &str = "amal";

/// The generated files the build compiles; a fix's diff covers each.
const GENERATED: [&str; 3] = ["sqlite3.c", "shell.c", "sqlite3.h"];

impl Project for Amalgamation {
    fn package(&self) -> &'static str {
        "sqlite3"
    }

    fn name(&self) -> &'static str {
        "sqlite3-amalgamation"
    }

    fn cases(&self) -> Vec<Case> {
        vec![
            Case {
                patch: "41-fix_a_bug_in_the_NOT_NULL-IS_NULL_optimization.patch",
                check: Check::Verdict("41-not-null-is-null.sql"),
                drivers: &[&AmalShell],
            },
            Case {
                patch: "0002-Avoid-a-stack-overflow-that-could-be-caused-by-a-rec.patch",
                check: Check::Verdict("0002-window-after-error.sql"),
                drivers: &[&AmalShell],
            },
        ]
    }

    /// Generates the amalgamation with main.mk (not captured: a code
    /// generator's compiles are not units of the program), copies what
    /// changed into `amal/`, and builds the shell there under capture.
    fn build(&self, tree: &Path, env: &Env) -> Result<(), String> {
        generate(tree)?;
        let amal = tree.join(AMAL);
        std::fs::create_dir_all(&amal).map_err(|e| e.to_string())?;
        for f in GENERATED {
            copy_if_changed(&tree.join("bld").join(f), &amal.join(f))?;
        }
        let flags = TCC.strip_prefix("gcc ").expect("TCC names gcc");
        tools::run(
            Command::new(&env.hpbuild)
                .args(["capture", "--dir"])
                .arg(tree)
                .args(["--", "make", "-s", "-C"])
                .arg(&amal)
                .arg("-f")
                .arg(env.fixtures.join("sqlite3/amalgamation.mk"))
                .arg("CC=gcc")
                .arg(format!("CFLAGS={flags} -I{}", env.loader.display()))
                .arg(format!("LIBS={}", loader::link_flags(&env.loader))),
        )
    }

    /// The fix applied to a copy of the tree, the amalgamation generated
    /// there, and `diff -u` of each generated file against the running one.
    fn diff_for(&self, tree: &Path, fix: &Path, env: &Env) -> Result<PathBuf, String> {
        let work = env.work.join(self.name());
        let copy = work.join("fixed-tree");
        let _ = std::fs::remove_dir_all(&copy);
        tools::run(Command::new("cp").arg("-a").arg(tree).arg(&copy))?;
        tools::run(
            Command::new("patch")
                .args(["-p1", "--batch", "--quiet", "--no-backup-if-mismatch", "-d"])
                .arg(&copy)
                .arg("-i")
                .arg(fix),
        )?;
        generate(&copy)?;
        let mut diff = Vec::new();
        for f in GENERATED {
            diff.extend(unified_diff(
                &tree.join(AMAL).join(f),
                &copy.join("bld").join(f),
                &format!("{AMAL}/{f}"),
            )?);
        }
        let _ = std::fs::remove_dir_all(&copy);
        if diff.is_empty() {
            return Err(format!(
                "{} changes nothing in the amalgamation",
                fix.display()
            ));
        }
        let name = fix.file_name().expect("a file").to_string_lossy();
        let out = work.join(format!("amalgamation-{name}"));
        std::fs::write(&out, diff).map_err(|e| format!("{}: {e}", out.display()))?;
        Ok(out)
    }
}

/// `make sqlite3.c shell.c` with upstream's main.mk in `tree/bld`.
fn generate(tree: &Path) -> Result<(), String> {
    let bld = tree.join("bld");
    std::fs::create_dir_all(&bld).map_err(|e| e.to_string())?;
    tools::run(
        Command::new("make")
            .args(["-s", "-C"])
            .arg(&bld)
            .args(["-f", "../main.mk", "TOP=..", "BCC=gcc -O2"])
            .arg(format!("TCC={TCC}"))
            .args(["TCLOBJ=", "EXE=", "sqlite3.c", "shell.c"]),
    )
}

/// Copies only a changed file, so make recompiles only what the fix changed.
fn copy_if_changed(from: &Path, to: &Path) -> Result<(), String> {
    let new = std::fs::read(from).map_err(|e| format!("{}: {e}", from.display()))?;
    if std::fs::read(to).ok().as_deref() != Some(&new[..]) {
        std::fs::write(to, new).map_err(|e| format!("{}: {e}", to.display()))?;
    }
    Ok(())
}

/// `diff -u` with a/ and b/ labels for `rel`; empty when the files agree.
fn unified_diff(old: &Path, new: &Path, rel: &str) -> Result<Vec<u8>, String> {
    let out = Command::new("diff")
        .arg("-u")
        .arg(format!("--label=a/{rel}"))
        .arg(format!("--label=b/{rel}"))
        .arg(old)
        .arg(new)
        .output()
        .map_err(|e| format!("cannot run diff: {e}"))?;
    match out.status.code() {
        Some(0) | Some(1) => Ok(out.stdout),
        _ => Err(format!(
            "diff {} {}: {}",
            old.display(),
            new.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

impl Driver for AmalShell {
    fn name(&self) -> &'static str {
        "sqlite3 shell (amalgamation)"
    }

    fn start(&self, tree: &Path, env: &Env) -> Result<Session, String> {
        let work = env.work.join("sqlite3-amalgamation");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exec stdbuf -oL -eL \"$0\" :memory: 2>&1"])
            .arg(tree.join(AMAL).join("sqlite3"))
            .current_dir(&work)
            .env("HOTPATCH_LOG", work.join("loader.log"));
        Session::start(cmd, "==done==")
    }

    fn request(&self, script: &str) -> String {
        Shell.request(script)
    }

    fn set_state(&self, token: &str) -> String {
        Shell.set_state(token)
    }

    fn get_state(&self) -> String {
        Shell.get_state()
    }
}
