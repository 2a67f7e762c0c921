//! Checks of the tools' answers: refusals, `hpctl list`, the manifest's id.

use crate::run::{run_timeout, Output};
use crate::tools::hpbuild_bin;
use crate::{Res, HPBUILD_TIMEOUT, HPCTL_TIMEOUT};
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::Command;

/// Checks that a failing tool gave a proper reason: some stderr line holds
/// every needle, and it did not panic.
pub fn check_refusal(out: &Output, needles: &[String], what: &str) -> Res<()> {
    if out.status.success() {
        return Err(format!(
            "{what} succeeded but should have failed\n{}",
            out.report()
        ));
    }
    if out.stderr.trim().is_empty() {
        return Err(format!(
            "{what} failed without a reason on stderr\n{}",
            out.report()
        ));
    }
    if out.stderr.contains("panicked at") {
        return Err(format!(
            "{what} panicked instead of giving a one-line reason\n{}",
            out.report()
        ));
    }
    if out.status.code().is_none() {
        return Err(format!("{what} was killed by a signal\n{}", out.report()));
    }
    if !needles.is_empty()
        && !out
            .stderr
            .lines()
            .any(|l| needles.iter().all(|n| l.contains(n.as_str())))
    {
        return Err(format!(
            "{what} failed, but no line of its stderr names {needles:?}\n{}",
            out.report()
        ));
    }
    Ok(())
}

/// The patch id recorded in the manifest next to `hpo` (`OUT.json`).
pub fn patch_id(hpo: &Path) -> Option<String> {
    let m: Value =
        serde_json::from_str(&fs::read_to_string(hpo.with_extension("json")).ok()?).ok()?;
    m.get("patch_id").and_then(Value::as_str).map(String::from)
}

/// `hpctl list PID` must succeed and mention the patch (its id from the
/// manifest, or its file name) — or, with `present == false`, not mention
/// its id.
pub fn check_list(hpctl: &Path, pid: u32, hpo: &Path, present: bool) -> Res<Output> {
    let out = run_timeout(
        Command::new(hpctl).arg("list").arg(pid.to_string()),
        HPCTL_TIMEOUT,
    )?;
    if !out.status.success() {
        return Err(format!("hpctl list failed\n{}", out.report()));
    }
    let id = patch_id(hpo);
    let stem = hpo.file_stem().unwrap().to_string_lossy().into_owned();
    let shown = match &id {
        Some(id) => out.stdout.contains(id.as_str()),
        None => out.stdout.contains(&stem),
    };
    if present && !shown {
        return Err(format!(
            "hpctl list does not show the applied patch (looked for {})\n{}",
            id.map(|i| format!("its id {i:?} from the manifest"))
                .unwrap_or_else(|| format!("{stem:?}")),
            out.report()
        ));
    }
    if !present {
        if let Some(id) = &id {
            if out
                .stdout
                .lines()
                .any(|l| l.split_whitespace().any(|w| w == id))
            {
                return Err(format!(
                    "hpctl list still shows patch {id:?} after revert\n{}",
                    out.report()
                ));
            }
        }
    }
    Ok(out)
}

/// Runs `hpbuild --base BASE --diff DIFF -o OUT`.
pub fn run_hpbuild(base: &Path, diff: &Path, out: &Path) -> Res<Output> {
    let hpbuild = hpbuild_bin()?;
    run_timeout(
        Command::new(hpbuild)
            .arg("--base")
            .arg(base)
            .arg("--diff")
            .arg(diff)
            .arg("-o")
            .arg(out),
        HPBUILD_TIMEOUT,
    )
}
