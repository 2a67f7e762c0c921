//! What the project needs on the machine besides Rust: C compilers (gcc
//! and clang: the test matrix uses both), GNU patch, binutils, git and make,
//! listed once in `tools.list` (which `.ci/run` reads too). On a fresh
//! Debian machine (as root) missing packages are installed, saying so;
//! elsewhere the error says what to install.

use std::path::PathBuf;
use std::process::Command;

/// (command, Debian package) pairs of `tools.list`.
fn needed() -> Vec<(&'static str, &'static str)> {
    include_str!("tools.list")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(char::is_whitespace))
        .map(|(t, p)| (t, p.trim()))
        .collect()
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn ensure() -> Result<(), String> {
    let mut missing: Vec<&str> = needed()
        .into_iter()
        .filter(|(t, _)| !have(t))
        .map(|(_, p)| p)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if !is_root || !have("apt-get") {
        return Err(format!(
            "missing tools; install the packages: {}",
            missing.join(" ")
        ));
    }
    println!("installing {} (apt-get)", missing.join(" "));
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq"])
        .args(&missing))
}

/// What every task that drives a live program needs: the tools, and the
/// release builds of hpbuild and hpctl (`target/release`).
pub fn release_binaries() -> Result<(), String> {
    ensure()?;
    // Not --quiet: on a cold machine this takes minutes, and cargo's
    // progress is what shows it is working.
    cargo(&["build", "--release", "-p", "builder", "-p", "loader"])
}

pub fn run(cmd: &mut Command) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed ({status})"))
    }
}

pub fn cargo(args: &[&str]) -> Result<(), String> {
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(args)
            .current_dir(workspace()),
    )
}

/// Where `cargo build --release` puts the binaries: `$CARGO_TARGET_DIR`
/// (relative to the workspace) or `target/`, then `release/`.
pub fn release_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => workspace().join(d).join("release"),
        _ => workspace().join("target/release"),
    }
}

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs `cargo test ...`, passing its output through, and sums the
/// "test result:" lines: (passed, failed, exit status was success).
pub fn cargo_test(args: &[&str]) -> Result<(u64, u64, bool), String> {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(workspace())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run cargo test: {e}"))?;
    let (mut passed, mut failed) = (0, 0);
    for line in BufReader::new(child.stdout.take().expect("piped"))
        .lines()
        .map_while(Result::ok)
    {
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            passed += count(rest, " passed");
            failed += count(rest, " failed");
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    Ok((passed, failed, status.success()))
}

/// The number before `what` in "ok. 5 passed; 0 failed; ...".
fn count(summary: &str, what: &str) -> u64 {
    summary
        .split(';')
        .find(|part| part.ends_with(what))
        .and_then(|part| part.trim_end_matches(what).split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    /// The matrix compiles with both compilers: the one list has them.
    #[test]
    fn the_tool_list_has_both_compilers() {
        let tools: Vec<&str> = super::needed().iter().map(|(t, _)| *t).collect();
        for t in ["cc", "gcc", "clang", "patch", "readelf", "git", "make"] {
            assert!(tools.contains(&t), "{t} missing from tools.list: {tools:?}");
        }
    }
}
