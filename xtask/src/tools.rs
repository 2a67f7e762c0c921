//! What the project needs on the machine besides Rust: a C compiler, GNU
//! patch, binutils and git. On a fresh Debian machine (as root) missing
//! packages are installed; elsewhere the error says what to install.

use std::path::PathBuf;
use std::process::Command;

const NEEDED: &[(&str, &str)] = &[
    ("cc", "gcc"),
    ("patch", "patch"),
    ("readelf", "binutils"),
    ("git", "git"),
    ("make", "make"),
];

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn ensure() -> Result<(), String> {
    let missing: Vec<&str> = NEEDED
        .iter()
        .filter(|(t, _)| !have(t))
        .map(|(_, p)| *p)
        .collect();
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
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(&missing))
}

/// What every task that drives a live program needs: the tools, and the
/// release builds of hpbuild and hpctl (`target/release`).
pub fn release_binaries() -> Result<(), String> {
    ensure()?;
    cargo(&[
        "build",
        "--release",
        "--quiet",
        "-p",
        "builder",
        "-p",
        "loader",
    ])
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
