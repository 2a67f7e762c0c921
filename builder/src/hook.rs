//! `hpbuild hook install`: a git post-commit hook that builds a live patch
//! for every new commit against the deployed base, so the patch for a fix
//! exists the moment the fix is committed.
//!
//! Configuration lives in the repository's git config:
//! - `hpbuild.deployed`: the commit the running program was built from
//!   (stored as a full sha: a branch name would move with the new commits);
//! - `hpbuild.patchdir`: where patches go (default `.git/hpbuild/patches`);
//! - `hpbuild.target`: the shared library the patches are for (`--target`),
//!   when the fixes go into a library rather than the executable;
//! - `hpbuild.compiledb`: the compile database (`--compile-db`), when it is
//!   not found in the work tree or one of its build directories;
//! - `hpbuild.signkey`: the private key the patches are signed with
//!   (`--sign`), when the processes trust only signed patches.
//!
//! The hook runs the hpbuild that installed it (else `hpbuild` in PATH) and
//! says on stderr and in `<sha>.error` when there is none or it failed.
//!
//! Each commit `<sha>` gets `<patchdir>/<sha>.hpo` (+ `.json` manifest, `.c`
//! reviewable source, `.diff` the cumulative diff deployed..sha), or
//! `<sha>.error` with the one-line reason there is no patch.

use crate::bail;
use crate::error::{Error, Result};
use crate::{pipeline, BuildArgs};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const MARKER: &str = "# installed by `hpbuild hook install`";

fn git(args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .args(args)
        .output()
        .map_err(|e| Error::new(format!("cannot run git: {e}")))?;
    if !out.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn absolute(p: &str) -> Result<PathBuf> {
    let p = PathBuf::from(p);
    if p.is_absolute() {
        return Ok(p);
    }
    std::env::current_dir()
        .map(|d| d.join(p))
        .map_err(|e| Error::new(format!("cannot read the current directory: {e}")))
}

fn resolve(rev: &str) -> Result<String> {
    git(&[
        "rev-parse",
        "--verify",
        "--quiet",
        &format!("{rev}^{{commit}}"),
    ])
    .map_err(|_| Error::new(format!("--deployed {rev}: not a commit of this repository")))
}

pub fn install(deployed: Option<&str>, out: Option<&Path>) -> Result<()> {
    git(&["rev-parse", "--show-toplevel"])
        .map_err(|_| Error::new("hpbuild hook install: run it inside a git work tree"))?;
    let sha = resolve(deployed.unwrap_or("HEAD"))?;
    let hooks = absolute(&git(&["rev-parse", "--git-path", "hooks"])?)?;
    let hook = hooks.join("post-commit");
    if let Ok(existing) = fs::read_to_string(&hook) {
        if !existing.contains(MARKER) {
            bail!(
                "{} exists and was not written by hpbuild: add the line `hpbuild hook run` to it yourself",
                hook.display()
            );
        }
    }
    let me = std::env::current_exe()
        .map_err(|e| Error::new(format!("cannot find the hpbuild executable: {e}")))?;
    let script = hook_script(&me);
    fs::create_dir_all(&hooks)
        .and_then(|_| fs::write(&hook, script))
        .and_then(|_| fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)))
        .map_err(|e| Error::new(format!("cannot write {}: {e}", hook.display())))?;
    git(&["config", "hpbuild.deployed", &sha])?;
    if let Some(out) = out {
        let dir = absolute(&out.to_string_lossy())?;
        git(&["config", "hpbuild.patchdir", &dir.to_string_lossy()])?;
    }
    println!(
        "installed {}: each commit gets a patch against deployed {} in {}, built by {} \
         (`hpbuild` in PATH if that file is gone)",
        hook.display(),
        &sha[..12.min(sha.len())],
        patch_dir()?.display(),
        me.display()
    );
    Ok(())
}

/// The post-commit script: runs the hpbuild that installed it, else the one
/// in PATH. A missing hpbuild or a failed `hook run` is said on stderr and
/// in `<patchdir>/<sha>.error`, never silently swallowed; the commit is
/// never blocked (exit 0).
fn hook_script(me: &Path) -> String {
    let quoted = shlex::try_quote(&me.to_string_lossy())
        .map(|q| q.into_owned())
        .unwrap_or_else(|_| me.display().to_string());
    format!(
        r#"#!/bin/sh
{MARKER}
# Builds a live patch for this commit against git config hpbuild.deployed.
# A failed build never blocks the commit; the reason is in <patchdir>/<sha>.error.
installed={quoted}
dir=$(git config --get hpbuild.patchdir || echo "$(git rev-parse --git-dir)/hpbuild/patches")
error="$dir/$(git rev-parse HEAD).error"
fail() {{
    echo "hpbuild hook: no live patch for $(git rev-parse --short HEAD): $1" >&2
    mkdir -p "$dir" && echo "$1" >"$error"
}}
if [ -x "$installed" ]; then hpbuild=$installed; else hpbuild=$(command -v hpbuild); fi
if [ -z "$hpbuild" ]; then
    fail "hpbuild is neither $installed (where the hook was installed from) nor in PATH: put it in PATH or run \`hpbuild hook install\` again"
    exit 0
fi
"$hpbuild" hook run
status=$?
# hook run writes <sha>.error itself; this catches a crash before it could.
if [ "$status" -ne 0 ] && [ ! -s "$error" ]; then
    fail "$hpbuild hook run failed without a reason (exit status $status)"
fi
exit 0
"#
    )
}

/// `git config hpbuild.patchdir`, else `<git-dir>/hpbuild/patches`.
fn patch_dir() -> Result<PathBuf> {
    match git(&["config", "--get", "hpbuild.patchdir"]) {
        Ok(d) if !d.is_empty() => absolute(&d),
        _ => Ok(absolute(&git(&["rev-parse", "--git-dir"])?)?.join("hpbuild/patches")),
    }
}

/// What the hook runs: build `<patchdir>/<HEAD>.hpo` from the diff
/// deployed..HEAD. The reason for a missing patch goes to `<sha>.error`.
pub fn run() -> Result<()> {
    let deployed = git(&["config", "--get", "hpbuild.deployed"]).map_err(|_| {
        Error::new(
            "git config hpbuild.deployed is not set: run `hpbuild hook install --deployed <rev>`",
        )
    })?;
    let head = git(&["rev-parse", "HEAD"])?;
    let dir = patch_dir()?;
    fs::create_dir_all(&dir)
        .map_err(|e| Error::new(format!("cannot create {}: {e}", dir.display())))?;
    let error_file = dir.join(format!("{head}.error"));
    let _ = fs::remove_file(&error_file);
    let result = build(&deployed, &head, &dir);
    match &result {
        Ok(out) => eprintln!(
            "hpbuild hook: live patch for {} in {}",
            short(&head),
            out.display()
        ),
        Err(e) => {
            let _ = fs::write(&error_file, format!("{e}\n"));
            eprintln!("hpbuild hook: no live patch for {}: {e}", short(&head));
        }
    }
    result.map(|_| ())
}

fn short(sha: &str) -> &str {
    &sha[..12.min(sha.len())]
}

fn build(deployed: &str, head: &str, dir: &Path) -> Result<PathBuf> {
    if deployed == head {
        bail!("HEAD is the deployed commit itself: nothing to patch");
    }
    let diff = git(&[
        "diff",
        "--no-color",
        "--no-ext-diff",
        "--no-renames",
        deployed,
        head,
    ])?;
    if diff.is_empty() {
        bail!(
            "no difference between the deployed commit and {}",
            short(head)
        );
    }
    let diff_path = dir.join(format!("{head}.diff"));
    fs::write(&diff_path, format!("{diff}\n"))
        .map_err(|e| Error::new(format!("cannot write {}: {e}", diff_path.display())))?;
    let output = dir.join(format!("{head}.hpo"));
    let compile_db = git(&["config", "--get", "hpbuild.compiledb"])
        .ok()
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    pipeline::run(&BuildArgs {
        base: Some(deployed.to_string()),
        diff: Some(diff_path),
        output: Some(output.clone()),
        compile_db,
        redirect: "entry".into(),
        // A repository whose fixes go into a library says which one.
        target: git(&["config", "--get", "hpbuild.target"])
            .ok()
            .filter(|s| !s.is_empty()),
        unit_output: None,
        // A repository whose processes trust only signed patches says
        // with which key (a path, relative to the work tree).
        sign: git(&["config", "--get", "hpbuild.signkey"])
            .ok()
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
        explain: false,
        json: false,
        verbose: false,
        from_hook: true,
    })?;
    Ok(output)
}
