//! Building the one-file bench programs of `fixtures/bench/` (`calls.c`,
//! `stop.c`) the way a user links the loader, their patches with hpbuild,
//! and running hpctl on them.

use super::bin;
use crate::tools::{self, workspace};
use std::path::{Path, PathBuf};
use std::process::Command;

const CFLAGS: [&str; 3] = ["-O2", "-g", "-c"];

/// `fixtures/bench/NAME.c` compiled once into `dir/NAME.o` (every variant
/// of a program links this same object).
pub fn compile(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let obj = dir.join(format!("{name}.o"));
    tools::run(
        Command::new("cc")
            .args(CFLAGS)
            .arg(workspace().join(format!("fixtures/bench/{name}.c")))
            .arg("-o")
            .arg(&obj),
    )?;
    Ok(obj)
}

/// Links `obj` into `dir/exe`, with the loader of `loader` (the directory
/// `hpbuild loader --out` wrote) linked whole, or without any loader.
pub fn link(dir: &Path, obj: &Path, exe: &str, loader: Option<&Path>) -> Result<PathBuf, String> {
    let out = dir.join(exe);
    let mut cmd = Command::new("cc");
    cmd.arg(obj).arg("-o").arg(&out);
    if let Some(dir) = loader {
        cmd.args(loader::link_args(dir));
    }
    tools::run(cmd.arg("-lpthread"))?;
    Ok(out)
}

/// `fixtures/bench/NAME-fix.patch` built with hpbuild against a copy of
/// `NAME.c` (compiled as in [`compile`]) into `dir/NAME-fix.hpo`; checks that
/// the patch replaces exactly `function` (a caller shipped along would run
/// the new code without going through the redirect being measured).
pub fn patch(dir: &Path, name: &str, function: &str) -> Result<PathBuf, String> {
    let base = dir.join(format!("{name}-base"));
    std::fs::create_dir_all(&base).map_err(|e| e.to_string())?;
    let src = format!("{name}.c");
    std::fs::copy(
        workspace().join("fixtures/bench").join(&src),
        base.join(&src),
    )
    .map_err(|e| format!("{src}: {e}"))?;
    let db = format!(
        r#"[{{"directory": "{}", "file": "{src}", "arguments": ["cc", "{}", "{}", "{}", "{src}", "-o", "{name}.o"]}}]"#,
        base.display(),
        CFLAGS[0],
        CFLAGS[1],
        CFLAGS[2]
    );
    std::fs::write(base.join("compile_commands.json"), db).map_err(|e| e.to_string())?;
    let hpo = dir.join(format!("{name}-fix.hpo"));
    tools::run(
        Command::new(bin("hpbuild"))
            .arg("--base")
            .arg(&base)
            .arg("--diff")
            .arg(workspace().join(format!("fixtures/bench/{name}-fix.patch")))
            .arg("-o")
            .arg(&hpo)
            .stdout(std::process::Stdio::null()),
    )?;
    let manifest =
        std::fs::read_to_string(hpo.with_extension("json")).map_err(|e| e.to_string())?;
    let json: serde_json::Value = serde_json::from_str(&manifest).map_err(|e| e.to_string())?;
    let replaced: Vec<&str> = json["replaced"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["name"].as_str().or_else(|| f.as_str()))
        .collect();
    if replaced != [function] {
        return Err(format!(
            "{} replaces {replaced:?}, expected only {function}",
            hpo.display()
        ));
    }
    Ok(hpo)
}

/// Runs `hpctl ARGS`; its stdout, or its error.
pub fn hpctl(args: &[&str]) -> Result<String, String> {
    let out = Command::new(bin("hpctl"))
        .args(args)
        .output()
        .map_err(|e| format!("cannot run hpctl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "hpctl {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `q`-quantile of `v` (nearest rank; `v` need not be sorted).
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}
