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
    compile_tapped(entry, base_root, tree, output, side, None)
}

/// `compile`, and with `tap` (GCC only) the deployed shape folded from the
/// same assembly is written to `tap` too (shape.rs).
pub fn compile_tapped(
    entry: &Entry,
    base_root: &Path,
    tree: &Path,
    output: &Path,
    side: Side,
    tap: Option<&Path>,
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
    // Tapping needs the compile to run.
    if let Some(obj) = cache.filter(|_| tap.is_none()).and_then(|c| c.lookup(&job)) {
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
    if let Some(derived) = tap {
        let dir = derived.with_extension("as");
        if let Ok(prefix) = crate::shape::tap_dir(&dir, derived) {
            let at = run.len().saturating_sub(2);
            run.insert(at, format!("-B{prefix}"));
        }
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

/// Where the deployed shape of the original unit comes from.
pub enum DeployedShape {
    /// The project already compiles with -ffunction-sections.
    NotNeeded,
    /// An earlier build's, unchanged inputs.
    Cached(Vec<u8>),
    /// Folded from the original compile's assembly into this file (GCC).
    Tap(PathBuf),
    /// A compile of its own (Clang assembles in process).
    Compile,
}

/// How this build gets unit `index`'s deployed shape.
pub fn deployed_shape(
    entry: &Entry,
    base_root: &Path,
    tree: &Path,
    work: &Path,
    index: usize,
) -> DeployedShape {
    if entry.has_function_sections() {
        return DeployedShape::NotNeeded;
    }
    let output = object_path(work, index, Side::Deployed);
    let (dir, cmd) = entry.deployed_command_in(base_root, tree, &output);
    if let Some(cache) = cache::global() {
        let derived = derived_key(&cmd);
        for key in [&cmd, &derived] {
            let job = cache::Job {
                cmd: key,
                dir: &dir,
                tree,
            };
            if let Some(obj) = cache.lookup(&job) {
                cache::note_hit();
                return DeployedShape::Cached(obj);
            }
        }
    }
    match cmd.first() {
        Some(cc) if crate::shape::is_gcc(cc) => DeployedShape::Tap(output),
        _ => DeployedShape::Compile,
    }
}

/// The tapped deployed shape at `derived`, if the assembler shim wrote it;
/// cached under its own key with the original compile's dependencies.
pub fn take_tapped(
    entry: &Entry,
    base_root: &Path,
    tree: &Path,
    work: &Path,
    index: usize,
) -> Option<Vec<u8>> {
    let output = object_path(work, index, Side::Deployed);
    let bytes = std::fs::read(&output).ok()?;
    if let Some(c) = cache::global() {
        let (dir, cmd) = entry.deployed_command_in(base_root, tree, &output);
        let key = derived_key(&cmd);
        let job = cache::Job {
            cmd: &key,
            dir: &dir,
            tree,
        };
        let depfile = object_path(work, index, Side::Original).with_extension("d");
        c.store(&job, &bytes, &depfile);
    }
    Some(bytes)
}

/// The cache key of a deployed shape folded from assembly: not the object
/// a deployed compile writes (its debug information differs), so not under
/// that command's key.
fn derived_key(deployed_cmd: &[String]) -> Vec<String> {
    let mut k = deployed_cmd.to_vec();
    k.push("<folded from the -ffunction-sections assembly>".to_string());
    k
}
