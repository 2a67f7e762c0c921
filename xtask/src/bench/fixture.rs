//! Building the one-file programs of `fixtures/bench/` (`calls.c`, `stop.c`,
//! and `stress.c` for `cargo xtask stress`) the way a user links the loader,
//! their patches with hpbuild, and running hpctl on them.

use super::bin;
use crate::tools::{self, workspace};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const CFLAGS: [&str; 3] = ["-O2", "-g", "-c"];

/// A fresh `hpbuild-TASK.PID` directory under the temporary directory, with
/// the loader (`hpbuild loader --out`) in its `loader/`: (directory, loader).
pub fn workdir(task: &str) -> Result<(PathBuf, PathBuf), String> {
    let dir = std::env::temp_dir().join(format!("hpbuild-{task}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let loader = dir.join("loader");
    tools::run(
        Command::new(bin("hpbuild"))
            .args(["loader", "--out"])
            .arg(&loader),
    )?;
    Ok((dir, loader))
}

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
/// the patch replaces exactly `functions`, in the manifest's order (a caller
/// shipped along would run the new code without going through the redirect
/// being measured).
pub fn patch(dir: &Path, name: &str, functions: &[&str]) -> Result<PathBuf, String> {
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
    if replaced != functions {
        return Err(format!(
            "{} replaces {replaced:?}, expected only {functions:?}",
            hpo.display()
        ));
    }
    Ok(hpo)
}

/// How long one hpctl command may take before it counts as hung (a
/// consistent switch gives up after 5 s by default).
const HPCTL_LIMIT: Duration = Duration::from_secs(60);

/// Starts `exe` with stdin and stdout piped (a program driven line by line)
/// and the loader's log in `log`.
pub fn spawn(exe: &Path, log: &Path) -> Result<Child, String> {
    Command::new(exe)
        .env("HOTPATCH_LOG", log)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))
}

/// Runs `hpctl ARGS`; its stdout, or its error (also when it hangs: it is
/// killed after [`HPCTL_LIMIT`]).
pub fn hpctl(args: &[&str]) -> Result<String, String> {
    let child = Command::new(bin("hpctl"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run hpctl: {e}"))?;
    let pid = child.id().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let Ok(out) = rx.recv_timeout(HPCTL_LIMIT) else {
        // Not reaped yet (the waiting thread still holds it): the pid is ours.
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        return Err(format!(
            "hpctl {} did not finish within {} s (killed)",
            args.join(" "),
            HPCTL_LIMIT.as_secs()
        ));
    };
    let out = out.map_err(|e| format!("hpctl: {e}"))?;
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

/// Call sites `hpctl list --json` counts for the first applied patch, all
/// its functions together.
pub fn call_sites(pid: &str) -> Result<u64, String> {
    let out = hpctl(&["list", "--json", pid])?;
    let json: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    let sites = json["patches"][0]["call_sites"]
        .as_array()
        .into_iter()
        .flatten();
    Ok(sites.filter_map(|n| n.as_u64()).sum())
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
