//! One fixture end to end: build and start it, run hpbuild, play the steps.

use crate::checks::{check_list, check_refusal, run_hpbuild};
use crate::fixture::Fixture;
use crate::program::Program;
use crate::run::{run_timeout, Output, Running};
use crate::step::Step;
use crate::tools::{hpbuild_bin, hpctl_bin, loader_dir};
use crate::tree::{build_tree, copy_fixture, snapshot, snapshot_diff};
use crate::{Res, HPCTL_TIMEOUT};
use serde_json::Value;
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

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
pub fn start_fixture(f: &Fixture, cflags: &[String]) -> Res<Started> {
    let loader = loader_dir()?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!("hp-e2e-{}-", f.name))
        .tempdir()
        .map_err(|e| format!("tempdir: {e}"))?;
    let run_dir = tmp.path().join("base");
    copy_fixture(f, &run_dir, false)?;
    let exe = build_tree(f, &run_dir, cflags, Some(&loader))?;
    let base_dir = if f.hpbuild_base_sources.is_empty() {
        run_dir.clone()
    } else {
        let b = tmp.path().join("other-base");
        copy_fixture(f, &b, true)?;
        build_tree(f, &b, cflags, Some(&loader))?;
        b
    };
    let prog = Program::start(&exe, tmp.path())?;
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

/// The whole end-to-end run of one fixture with one flag set.
pub fn run_fixture_with(f: &Fixture, cflags: &[String]) -> Res<()> {
    let hpctl = hpctl_bin()?;
    hpbuild_bin()?;
    let mut s = start_fixture(f, cflags)?;
    let (hpo, build) = build_patch(f, &s).map_err(|e| format!("{e}\n{}", s.prog.report()))?;
    let ctx = |s: &Started, step: &str, e: String| -> String {
        format!("step: {step}\nerror: {e}\n{}", s.prog.report())
    };

    if let Some(needles) = &f.hpbuild_fails_with {
        check_refusal(&build, needles, "hpbuild")
            .map_err(|e| ctx(&s, "hpbuild (expected to refuse)", e))?;
    } else {
        if !build.status.success() {
            return Err(ctx(
                &s,
                "hpbuild",
                format!("hpbuild failed\n{}", build.report()),
            ));
        }
        for p in [
            hpo.clone(),
            hpo.with_extension("json"),
            hpo.with_extension("c"),
        ] {
            if !p.is_file() {
                return Err(ctx(
                    &s,
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
            return Err(ctx(&s, "hpbuild", format!("OUT.json is not JSON: {e}")));
        }
    }

    let pid = s.prog.pid();
    let mut background: Option<Running> = None;
    for (i, step) in f.steps.iter().enumerate() {
        let label = format!("#{i} {}", step.describe());
        match step {
            Step::Send {
                send,
                expect,
                retry_secs,
                ..
            } => {
                let retry = retry_secs.map(Duration::from_secs);
                s.prog
                    .expect(send, expect, retry)
                    .map_err(|e| ctx(&s, &label, e))?;
            }
            Step::Apply {
                expect_fail,
                background: bg,
                settle_secs,
            } => {
                let mut cmd = Command::new(&hpctl);
                cmd.arg("apply").arg(pid.to_string()).arg(&hpo);
                if *bg {
                    let mut r = Running::start(&mut cmd).map_err(|e| ctx(&s, &label, e))?;
                    let until = Instant::now() + Duration::from_secs(*settle_secs);
                    while Instant::now() < until && r.poll().is_none() {
                        thread::sleep(Duration::from_millis(20));
                    }
                    s.prog
                        .transcript
                        .push(format!("# hpctl apply {pid} started in the background"));
                    background = Some(r);
                    continue;
                }
                let out = run_timeout(&mut cmd, HPCTL_TIMEOUT).map_err(|e| ctx(&s, &label, e))?;
                s.prog.note(&out);
                match expect_fail {
                    Some(needles) => check_refusal(&out, needles, "hpctl apply")
                        .map_err(|e| ctx(&s, &label, e))?,
                    None => {
                        if !out.status.success() {
                            return Err(ctx(
                                &s,
                                &label,
                                format!(
                                    "hpctl apply failed\n{}\n--- hpbuild ---\n{}",
                                    out.report(),
                                    build.report()
                                ),
                            ));
                        }
                        let l =
                            check_list(&hpctl, pid, &hpo, true).map_err(|e| ctx(&s, &label, e))?;
                        s.prog.note(&l);
                    }
                }
            }
            Step::WaitApply => {
                let r = background
                    .take()
                    .expect("validated: a background apply is pending");
                let out = r.finish(HPCTL_TIMEOUT).map_err(|e| ctx(&s, &label, e))?;
                s.prog.note(&out);
                if !out.status.success() {
                    return Err(ctx(
                        &s,
                        &label,
                        format!(
                            "background hpctl apply failed\n{}\n--- hpbuild ---\n{}",
                            out.report(),
                            build.report()
                        ),
                    ));
                }
                let l = check_list(&hpctl, pid, &hpo, true).map_err(|e| ctx(&s, &label, e))?;
                s.prog.note(&l);
            }
            Step::Revert { expect_fail } => {
                let out = run_timeout(
                    Command::new(&hpctl).arg("revert").arg(pid.to_string()),
                    HPCTL_TIMEOUT,
                )
                .map_err(|e| ctx(&s, &label, e))?;
                s.prog.note(&out);
                match expect_fail {
                    Some(needles) => check_refusal(&out, needles, "hpctl revert")
                        .map_err(|e| ctx(&s, &label, e))?,
                    None => {
                        if !out.status.success() {
                            return Err(ctx(
                                &s,
                                &label,
                                format!("hpctl revert failed\n{}", out.report()),
                            ));
                        }
                        let l =
                            check_list(&hpctl, pid, &hpo, false).map_err(|e| ctx(&s, &label, e))?;
                        s.prog.note(&l);
                    }
                }
            }
        }
    }
    // Still alive and answering at the end.
    s.prog
        .expect("ping", "pong", None)
        .map_err(|e| ctx(&s, "final ping", e))?;
    let stderr = s.prog.stderr();
    if stderr.contains("EINTR") {
        eprintln!(
            "note [{} {:?}]: the program saw EINTR during the run:\n{stderr}",
            f.name, cflags
        );
    }
    Ok(())
}

/// Runs a fixture end to end with every flag set; panics with a full report.
pub fn run_fixture(name: &str) {
    let f = Fixture::load(name).unwrap_or_else(|e| panic!("{e}"));
    let mut failures = String::new();
    for flags in f.flag_sets() {
        if let Err(e) = run_fixture_with(&f, &flags) {
            let _ = writeln!(
                failures,
                "\n===== fixture {name} with {flags:?} FAILED =====\n{e}"
            );
        }
    }
    if !failures.is_empty() {
        panic!("{failures}");
    }
}
