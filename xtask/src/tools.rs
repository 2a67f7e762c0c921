//! What the project needs on the machine besides Rust: a C compiler, GNU
//! patch, binutils and git. On a fresh Debian machine (as root) missing
//! packages are installed; elsewhere the error says what to install.

use std::path::PathBuf;
use std::process::Command;

const NEEDED: &[(&str, &str)] = &[("cc", "gcc"), ("patch", "patch"), ("readelf", "binutils"), ("git", "git"), ("make", "make")];

fn have(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
}

pub fn ensure() -> Result<(), String> {
    let missing: Vec<&str> = NEEDED.iter().filter(|(t, _)| !have(t)).map(|(_, p)| *p).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let is_root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
    if !is_root || !have("apt-get") {
        return Err(format!("missing tools; install the packages: {}", missing.join(" ")));
    }
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get").args(["install", "-y", "-qq"]).args(&missing))
}

pub fn run(cmd: &mut Command) -> Result<(), String> {
    let status = cmd.status().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed ({status})"))
    }
}

pub fn cargo(args: &[&str]) -> Result<(), String> {
    run(Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())).args(args).current_dir(workspace()))
}

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}
