//! Running the project's compiler for one translation unit.

use crate::cache;
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
    // Both trees' originals read the deployed base: they may come from the
    // object cache (cache.rs), and go into it.
    let cache = match side {
        Side::Original | Side::Deployed => cache::global(),
        _ => None,
    };
    let job = cache::Job {
        cmd: &cmd,
        dir: &dir,
        tree,
    };
    if let Some(obj) = cache.and_then(|c| c.lookup(&job)) {
        cache::note_hit();
        return Ok((obj, cmd));
    }
    let depfile = output.with_extension("d");
    let mut run = cmd.clone();
    if cache.is_some() {
        // The files the compiler reads, for the cache entry's validity.
        let at = run.len().saturating_sub(2); // before the trailing `-o OUTPUT`
        run.splice(
            at..at,
            [
                "-MD".to_string(),
                "-MF".to_string(),
                depfile.to_string_lossy().into_owned(),
            ],
        );
    }
    let out = Command::new(&run[0])
        .args(&run[1..])
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
    if let Some(c) = cache {
        c.store(&job, &bytes, &depfile);
    }
    Ok((bytes, cmd))
}

/// Where a unit's object goes in the scratch directory.
pub fn object_path(work: &Path, index: usize, side: Side) -> PathBuf {
    work.join(format!("unit{index}.{}.o", side.label()))
}
