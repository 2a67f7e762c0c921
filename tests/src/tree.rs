//! Building a fixture tree: copy the sources, write compile_commands.json,
//! compile and link exactly as recorded; apply a patch; prove a tree unmodified.

use crate::fixture::Fixture;
use crate::matrix::Build;
use crate::run::run_ok;
use crate::tools::fixtures_dir;
use crate::{Res, CC_TIMEOUT};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Copies the fixture's files (all but `fixture.json` and `fix.patch`) and
/// its `common` files into `dir`; with `for_hpbuild_base`, replaces files as
/// `hpbuild_base_sources` says.
pub fn copy_fixture(f: &Fixture, dir: &Path, for_hpbuild_base: bool) -> Res<()> {
    fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let rd = fs::read_dir(&f.dir).map_err(|e| format!("reading {}: {e}", f.dir.display()))?;
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "fixture.json" || name == "fix.patch" || !e.path().is_file() {
            continue;
        }
        fs::copy(e.path(), dir.join(&name)).map_err(|e| format!("copying {name}: {e}"))?;
    }
    for c in &f.common {
        fs::copy(fixtures_dir().join("common").join(c), dir.join(c))
            .map_err(|e| format!("copying common/{c}: {e}"))?;
    }
    if for_hpbuild_base {
        for (k, v) in &f.hpbuild_base_sources {
            fs::copy(f.dir.join(v), dir.join(k)).map_err(|e| format!("copying {v} as {k}: {e}"))?;
        }
    }
    Ok(())
}

pub(crate) fn object_name(src: &str) -> String {
    match src.rfind('.') {
        Some(i) => format!("{}.o", &src[..i]),
        None => format!("{src}.o"),
    }
}

/// The compile command of one translation unit, as recorded in
/// `compile_commands.json` and run by the harness.
pub fn compile_args(b: &Build, src: &str) -> Vec<String> {
    let mut a = vec![b.cc.clone()];
    a.extend(b.cflags.iter().cloned());
    a.extend(["-c".into(), src.into(), "-o".into(), object_name(src)]);
    a
}

/// Writes `dir/compile_commands.json`, compiles every TU with exactly the
/// recorded command, and links `dir/prog` (with the loader if given).
pub fn build_tree(f: &Fixture, dir: &Path, b: &Build, loader: Option<&Path>) -> Res<PathBuf> {
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let entries: Vec<Value> = f
        .sources
        .iter()
        .map(|s| {
            serde_json::json!({
                "directory": dir.to_string_lossy(),
                "file": s,
                "arguments": compile_args(b, s),
                "output": object_name(s),
            })
        })
        .collect();
    let ccj = serde_json::to_string_pretty(&Value::Array(entries)).unwrap();
    fs::write(dir.join("compile_commands.json"), ccj)
        .map_err(|e| format!("writing compile_commands.json: {e}"))?;
    for s in &f.sources {
        let args = compile_args(b, s);
        run_ok(
            Command::new(&args[0]).args(&args[1..]).current_dir(&dir),
            CC_TIMEOUT,
        )
        .map_err(|e| format!("compiling {s} of fixture {}:\n{e}", f.name))?;
    }
    // The compiler that compiled links too (clang's driver may add its own
    // runtime pieces; mixing drivers would test a build nobody uses).
    let mut link = Command::new(&b.cc);
    link.current_dir(&dir).args(&b.cflags);
    for s in &f.sources {
        link.arg(object_name(s));
    }
    link.args(&b.ldflags);
    if let Some(l) = loader {
        link.args(loader::link_args(l));
    }
    link.args(["-lpthread", "-o", "prog"]);
    run_ok(&mut link, CC_TIMEOUT).map_err(|e| format!("linking fixture {}:\n{e}", f.name))?;
    Ok(dir.join("prog"))
}

/// Applies `patch_file` to `dir` with `patch -p1` (dry run first).
pub fn apply_patch(dir: &Path, patch_file: &Path) -> Res<()> {
    for dry in [true, false] {
        let mut cmd = Command::new("patch");
        cmd.current_dir(dir)
            .args(["-p1", "--batch", "--forward", "-i"])
            .arg(patch_file);
        if dry {
            cmd.arg("--dry-run");
        }
        run_ok(&mut cmd, CC_TIMEOUT).map_err(|e| {
            format!(
                "{} does not apply with patch -p1:\n{e}",
                patch_file.display()
            )
        })?;
    }
    Ok(())
}

/// All files under `dir` with their contents (to prove a base unmodified).
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.filter_map(|e| e.ok()) {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap_or(&p).to_path_buf();
                out.insert(rel, fs::read(&p).unwrap_or_default());
            }
        }
    }
    out
}

pub fn snapshot_diff(
    before: &BTreeMap<PathBuf, Vec<u8>>,
    after: &BTreeMap<PathBuf, Vec<u8>>,
) -> Vec<String> {
    let mut d = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => d.push(format!("{} was deleted", k.display())),
            Some(w) if w != v => d.push(format!("{} was modified", k.display())),
            _ => {}
        }
    }
    for k in after.keys() {
        if !before.contains_key(k) {
            d.push(format!("{} was created", k.display()));
        }
    }
    d
}
