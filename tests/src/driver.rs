//! One fixture end to end: build and start it, run hpbuild, play the steps.

use crate::checks::{check_refusal, run_hpbuild};
use crate::fixture::Fixture;
use crate::matrix::Build;
use crate::program::Program;
use crate::run::Output;
use crate::steps::play_steps;
use crate::tools::{hpbuild_bin, hpctl_bin, loader_dir};
use crate::tree::{build_tree, copy_fixture, snapshot, snapshot_diff};
use crate::Res;
use serde_json::Value;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

/// A fixture program built with the loader and started, in its own
/// temporary directory (kept until dropped).
pub struct Started {
    pub tmp: tempfile::TempDir,
    /// Where the running program was built (its base for hpbuild, unless
    /// the fixture has `hpbuild_base_sources`).
    pub run_dir: PathBuf,
    /// The base handed to hpbuild.
    pub base_dir: PathBuf,
    pub prog: Program,
}

/// Copies, builds (with the loader) and starts a fixture.
pub fn start_fixture(f: &Fixture, b: &Build) -> Res<Started> {
    start_fixture_with_env(f, b, &[])
}

/// [`start_fixture`], the program started with these environment variables
/// too.
pub fn start_fixture_with_env(f: &Fixture, b: &Build, env: &[(&str, &OsStr)]) -> Res<Started> {
    let loader = loader_dir()?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!("hp-e2e-{}-", f.name))
        .tempdir()
        .map_err(|e| format!("tempdir: {e}"))?;
    let run_dir = tmp.path().join("base");
    copy_fixture(f, &run_dir, false)?;
    let exe = build_tree(f, &run_dir, b, Some(&loader))?;
    let base_dir = if f.hpbuild_base_sources.is_empty() {
        run_dir.clone()
    } else {
        let other = tmp.path().join("other-base");
        copy_fixture(f, &other, true)?;
        build_tree(f, &other, b, Some(&loader))?;
        other
    };
    let prog = Program::start_with_env(&exe, tmp.path(), env)?;
    Ok(Started {
        run_dir: run_dir.canonicalize().unwrap_or(run_dir),
        base_dir,
        tmp,
        prog,
    })
}

/// Runs hpbuild for a started fixture; returns the path of OUT.hpo. Checks
/// the base stays unmodified and the three outputs exist.
pub fn build_patch(f: &Fixture, s: &Started) -> Res<(PathBuf, Output)> {
    let diff = s.tmp.path().join("fix.patch");
    fs::copy(f.dir.join("fix.patch"), &diff).map_err(|e| format!("copying fix.patch: {e}"))?;
    let out_dir = s.tmp.path().join("out");
    fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    let hpo = out_dir.join(format!("{}-fix.hpo", f.name));
    let before = snapshot(&s.base_dir);
    let out = run_hpbuild(&s.base_dir, &diff, &hpo)?;
    let changed = snapshot_diff(&before, &snapshot(&s.base_dir));
    if !changed.is_empty() {
        return Err(format!(
            "hpbuild modified its base {}: {}\n{}",
            s.base_dir.display(),
            changed.join(", "),
            out.report()
        ));
    }
    Ok((hpo, out))
}

/// The whole end-to-end run of one fixture with one configuration.
pub fn run_fixture_with(f: &Fixture, b: &Build) -> Res<()> {
    hpctl_bin()?;
    hpbuild_bin()?;
    let mut s = start_fixture(f, b)?;
    let (hpo, build) = build_patch(f, &s).map_err(|e| format!("{e}\n{}", s.prog.report()))?;
    check_hpbuild_result(f, &s, &hpo, &build)?;
    play_steps(f, &mut s, &hpo, &build, &b.name)
}

/// hpbuild refused as the fixture says, or succeeded and wrote OUT.hpo,
/// OUT.json (valid JSON) and OUT.c.
pub fn check_hpbuild_result(f: &Fixture, s: &Started, hpo: &Path, build: &Output) -> Res<()> {
    let ctx = |s: &Started, step: &str, e: String| -> String {
        format!("step: {step}\nerror: {e}\n{}", s.prog.report())
    };

    if let Some(needles) = &f.hpbuild_fails_with {
        check_refusal(build, needles, "hpbuild")
            .map_err(|e| ctx(s, "hpbuild (expected to refuse)", e))?;
    } else {
        if !build.status.success() {
            return Err(ctx(
                s,
                "hpbuild",
                format!("hpbuild failed\n{}", build.report()),
            ));
        }
        for p in [
            hpo.to_path_buf(),
            hpo.with_extension("json"),
            hpo.with_extension("c"),
        ] {
            if !p.is_file() {
                return Err(ctx(
                    s,
                    "hpbuild",
                    format!(
                        "hpbuild exited 0 but did not write {}\n{}",
                        p.display(),
                        build.report()
                    ),
                ));
            }
        }
        let manifest = fs::read_to_string(hpo.with_extension("json")).unwrap_or_default();
        if let Err(e) = serde_json::from_str::<Value>(&manifest) {
            return Err(ctx(s, "hpbuild", format!("OUT.json is not JSON: {e}")));
        }
    }

    Ok(())
}

/// Runs a fixture end to end in one configuration (a matrix name or
/// `also-N`); panics with a full report. An `unsupported` configuration is
/// skipped with a note; an `expected_fail` one must fail (a pass is noted,
/// so the mark can be removed).
pub fn run_fixture(name: &str, config: &str) {
    let f = Fixture::load(name).unwrap_or_else(|e| panic!("{e}"));
    if let Some(why) = f.unsupported_reason(config) {
        eprintln!("note [{name} {config}]: skipped, unsupported: {why}");
        return;
    }
    let b = f
        .build(config)
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"));
    let res = run_fixture_with(&f, &b);
    match (res, f.expected_fail_reason(config)) {
        (Ok(()), None) => {}
        (Ok(()), Some(why)) => eprintln!(
            "note [{name} {config}]: PASSED although marked expected_fail ({why}); remove the mark"
        ),
        (Err(e), Some(why)) => {
            let first = e.lines().take(3).collect::<Vec<_>>().join(" | ");
            eprintln!("note [{name} {config}]: expected failure ({why}): {first}")
        }
        (Err(e), None) => panic!(
            "\n===== fixture {name} with {config} ({} {:?}, link {:?}) FAILED =====\n{e}",
            b.cc, b.cflags, b.ldflags
        ),
    }
}
