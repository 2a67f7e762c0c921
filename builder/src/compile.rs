//! Running the project's compiler for one translation unit.

use crate::compdb::Entry;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Which of the two trees a compile is for (named in error messages).
#[derive(Clone, Copy)]
pub enum Side {
    Original,
    Patched,
    /// The original tree compiled with the project's own flags only.
    Deployed,
    /// The patched tree compiled like `Patched` plus this flag, which makes
    /// the code reach outside data through the GOT.
    OutsideViaGot(&'static str),
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Original => "original",
            Side::Patched => "patched",
            Side::Deployed => "deployed-shape",
            Side::OutsideViaGot(_) => "got-shaped",
        }
    }
}

/// Compiles `entry` from `tree` into `output` and returns the object bytes
/// together with the exact command line (recorded in the manifest).
pub fn compile(
    entry: &Entry,
    base_root: &Path,
    tree: &Path,
    output: &Path,
    side: Side,
) -> Result<(Vec<u8>, Vec<String>)> {
    let (dir, cmd) = match side {
        Side::Deployed => entry.deployed_command_in(base_root, tree, output),
        Side::Original | Side::Patched => entry.command_in(base_root, tree, output),
        Side::OutsideViaGot(flag) => {
            let (dir, mut cmd) = entry.command_in(base_root, tree, output);
            // Before the trailing `-o OUTPUT`.
            cmd.insert(cmd.len().saturating_sub(2), flag.to_string());
            (dir, cmd)
        }
    };
    let out = Command::new(&cmd[0])
        .args(&cmd[1..])
        .current_dir(&dir)
        .output()
        .map_err(|e| {
            Error::new(format!(
                "cannot run compiler {} in {}: {e}",
                cmd[0],
                dir.display()
            ))
        })?;
    let rel = entry
        .relative_to(base_root)
        .unwrap_or_else(|| entry.file.display().to_string());
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = stderr
            .lines()
            .find(|l| l.contains("error"))
            .or_else(|| stderr.lines().next())
            .unwrap_or("no message");
        return Err(Error::new(format!(
            "compiling the {} {rel} failed: {}",
            side.label(),
            why.trim()
        )));
    }
    let bytes = std::fs::read(output)
        .map_err(|e| Error::new(format!("the compiler wrote no object for {rel}: {e}")))?;
    Ok((bytes, cmd))
}

/// Where a unit's object goes in the scratch directory.
pub fn object_path(work: &Path, index: usize, side: Side) -> PathBuf {
    work.join(format!("unit{index}.{}.o", side.label()))
}
