//! Where things are: the workspace, fixtures, cargo's target directory,
//! the tool binaries, and the loader archive built once per test process.

use crate::run::run_timeout;
use crate::{Res, HPBUILD_TIMEOUT};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `fixtures/` in the workspace.
pub fn fixtures_dir() -> PathBuf {
    workspace_root().join("fixtures")
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace_root().join(d)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// Finds a tool binary: `$<env_var>` if set, else the newer of
/// `target/release/<name>` and `target/debug/<name>`.
pub fn find_tool(name: &str, env_var: &str) -> Res<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("{env_var}={} does not name a file", p.display()))
        };
    }
    let target = target_dir();
    let mut best: Option<(SystemTime, PathBuf)> = None;
    for profile in ["release", "debug"] {
        let p = target.join(profile).join(name);
        if let Ok(meta) = fs::metadata(&p) {
            if meta.is_file() {
                let t = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                if best.as_ref().is_none_or(|(bt, _)| t > *bt) {
                    best = Some((t, p));
                }
            }
        }
    }
    best.map(|(_, p)| p).ok_or_else(|| {
        format!(
            "{name} not found in {0}/release or {0}/debug (and ${env_var} is not set): \
             run `cargo build --release` first (the tests do not run cargo themselves)",
            target.display()
        )
    })
}

/// The `hpbuild` binary.
pub fn hpbuild_bin() -> Res<PathBuf> {
    find_tool("hpbuild", "HPBUILD_BIN")
}

/// The `hpctl` binary.
pub fn hpctl_bin() -> Res<PathBuf> {
    find_tool("hpctl", "HPCTL_BIN")
}

/// Runs `hpbuild loader --out DIR` (DIR = `target/hp-e2e/loader-<pid>`) once per test process and returns DIR,
/// which holds `libhotpatch.a` and `hotpatch.h`.
pub fn loader_dir() -> Res<PathBuf> {
    static DIR: OnceLock<Res<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let hpbuild = hpbuild_bin()?;
        // Under target/, one directory per test process; directories of
        // processes that are gone are removed, so nothing accumulates.
        let root = target_dir().join("hp-e2e");
        if let Ok(rd) = fs::read_dir(&root) {
            for e in rd.filter_map(|e| e.ok()) {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("loader-") {
                    if !Path::new("/proc").join(pid).exists() {
                        let _ = fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let dir = root.join(format!("loader-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.parent().unwrap())
            .map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let out = run_timeout(
            Command::new(&hpbuild).arg("loader").arg("--out").arg(&dir),
            HPBUILD_TIMEOUT,
        )?;
        if !out.status.success() {
            return Err(format!(
                "`hpbuild loader --out {}` failed\n{}",
                dir.display(),
                out.report()
            ));
        }
        for f in ["libhotpatch.a", "hotpatch.h"] {
            if !dir.join(f).is_file() {
                return Err(format!(
                    "`hpbuild loader --out {}` exited 0 but did not write {f}\n{}",
                    dir.display(),
                    out.report()
                ));
            }
        }
        Ok(dir)
    })
    .clone()
}
