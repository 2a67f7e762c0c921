//! The two source trees hpbuild compiles: the original (the deployed base)
//! and a private copy with the diff applied. The base itself is never
//! modified.

use crate::bail;
use crate::diff::Diff;
use crate::error::{Error, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct Trees {
    /// Keeps the scratch directory alive; removed on drop.
    _scratch: tempfile::TempDir,
    /// The directory the compile database's paths point at.
    pub base_root: PathBuf,
    /// The tree the original objects are compiled from.
    pub orig: PathBuf,
    /// The tree with the diff applied.
    pub patched: PathBuf,
    /// Scratch space for objects.
    pub work: PathBuf,
    /// What the base is, for the manifest ("directory /x" / "git rev (sha)").
    pub base_label: String,
}

/// Resolves `--base` and makes the trees.
pub fn prepare(base: &str) -> Result<Trees> {
    let scratch = tempfile::Builder::new()
        .prefix("hpbuild.")
        .tempdir()
        .map_err(|e| Error::new(format!("cannot create a scratch directory: {e}")))?;
    let work = scratch.path().join("obj");
    let patched = scratch.path().join("patched");
    mkdir(&work)?;
    let (base_root, orig, base_label) = if Path::new(base).is_dir() {
        let root = fs::canonicalize(base)
            .map_err(|e| Error::new(format!("cannot read base directory {base}: {e}")))?;
        let label = format!("directory {}", root.display());
        (root.clone(), root, label)
    } else {
        checkout_git_rev(base, &scratch.path().join("orig"))?
    };
    copy_tree(&orig, &patched)?;
    Ok(Trees {
        _scratch: scratch,
        base_root,
        orig,
        patched,
        work,
        base_label,
    })
}

impl Trees {
    /// Applies the diff to the patched copy with GNU patch, which handles
    /// offsets and fuzz the way projects expect. A hunk that does not apply
    /// to a file hpbuild never compiles (`compiled(path)` is false: docs,
    /// tests, build files) is noted and skipped; in any other file it stops
    /// the build, naming the file. Hunks applied at an offset or with fuzz
    /// are noted. Returns the notes.
    pub fn apply(&self, diff: &Diff, compiled: impl Fn(&str) -> bool) -> Result<Vec<String>> {
        self.unshare(diff)?;
        let diff_file = self.work.join("fix.diff");
        fs::write(&diff_file, &diff.text)
            .map_err(|e| Error::new(format!("cannot write {}: {e}", diff_file.display())))?;
        // Its messages are read line by line (`patch_outcome`): the C
        // locale keeps them in English and file names unquoted.
        let out = Command::new("patch")
            .env("LC_ALL", "C")
            .arg(format!("-p{}", diff.strip))
            .args([
                "--batch",
                "--forward",
                "--no-backup-if-mismatch",
                "--reject-file=-",
                "-d",
            ])
            .arg(&self.patched)
            .arg("-i")
            .arg(&diff_file)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::new(format!("cannot run `patch` (install GNU patch): {e}")))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let outcome = patch_outcome(&text);
        let mut notes = outcome.shifted;
        for (file, why) in outcome.failed {
            if file.is_empty() || compiled(&file) {
                bail!(
                    "the diff does not apply to the base: {}{}",
                    if file.is_empty() {
                        String::new()
                    } else {
                        format!("{file}: ")
                    },
                    why
                );
            }
            notes.push(format!(
                "{file}: {why} — skipped: hpbuild does not compile this file"
            ));
        }
        if !out.status.success() && notes.is_empty() {
            let last = text.lines().last().unwrap_or("patch failed");
            bail!("the diff does not apply to the base: {}", last.trim());
        }
        Ok(notes)
    }
}

impl Trees {
    /// Every file the diff names (`---`/`+++` lines, after the strip level)
    /// becomes the patched tree's own copy, so that patching it can never
    /// write through a hard link into the base.
    fn unshare(&self, diff: &Diff) -> Result<()> {
        for line in diff.text.lines() {
            let Some(rest) = line
                .strip_prefix("--- ")
                .or_else(|| line.strip_prefix("+++ "))
            else {
                continue;
            };
            let path = rest.split('\t').next().unwrap_or("").trim_end();
            let rel: PathBuf = Path::new(path).components().skip(diff.strip).collect();
            if rel.as_os_str().is_empty() || rel.is_absolute() {
                continue;
            }
            let file = self.patched.join(&rel);
            let Ok(meta) = fs::symlink_metadata(&file) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let copy = file.with_extension("hpbuild-unshare");
            fs::copy(&file, &copy)
                .and_then(|_| fs::rename(&copy, &file))
                .map_err(|e| Error::new(format!("cannot copy {}: {e}", file.display())))?;
        }
        Ok(())
    }
}

/// What GNU patch said, per file: hunks that failed (file, why), and notes
/// on hunks applied at an offset or with fuzz.
#[derive(Default, Debug)]
struct Outcome {
    failed: Vec<(String, String)>,
    shifted: Vec<String>,
}

fn patch_outcome(text: &str) -> Outcome {
    let mut o = Outcome::default();
    let mut file = String::new();
    for line in text.lines().map(str::trim) {
        if let Some(f) = line.strip_prefix("patching file ") {
            file = f.trim_matches(['\'', '`']).to_string();
        } else if line.contains("FAILED at")
            || line.contains("Reversed")
            || line.contains("malformed")
        {
            o.failed.push((file.clone(), line.to_string()));
        } else if line.starts_with("Hunk #") && line.contains("succeeded") {
            o.shifted.push(format!("{file}: {line}"));
        }
    }
    o
}

fn mkdir(p: &Path) -> Result<()> {
    fs::create_dir_all(p).map_err(|e| Error::new(format!("cannot create {}: {e}", p.display())))
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `--base REV`: a clean export of the revision (no working-tree changes,
/// no untracked files), from the repository in the current directory.
fn checkout_git_rev(rev: &str, into: &Path) -> Result<(PathBuf, PathBuf, String)> {
    let not_found = || {
        Error::new(format!(
            "--base {rev}: not a directory, and not a git revision of a repository in the current directory"
        ))
    };
    let top = git(&["rev-parse", "--show-toplevel"]).ok_or_else(not_found)?;
    let sha = git(&[
        "rev-parse",
        "--verify",
        "--quiet",
        &format!("{rev}^{{commit}}"),
    ])
    .ok_or_else(not_found)?;
    mkdir(into)?;
    let archive = Command::new("git")
        .args(["-C", &top, "archive", "--format=tar", &sha])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Error::new(format!("cannot run git archive: {e}")))?;
    let status = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(into)
        .stdin(archive.stdout.unwrap())
        .status()
        .map_err(|e| Error::new(format!("cannot run tar: {e}")))?;
    if !status.success() {
        bail!("cannot export git revision {rev} ({sha})");
    }
    Ok((
        PathBuf::from(top),
        into.to_path_buf(),
        format!("git {rev} ({sha})"),
    ))
}

/// Copies a tree (files as hard links where it can), keeping symlinks as
/// links and skipping `.git`.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    mkdir(to)?;
    let entries = fs::read_dir(from)
        .map_err(|e| Error::new(format!("cannot read {}: {e}", from.display())))?;
    for entry in entries {
        let entry =
            entry.map_err(|e| Error::new(format!("cannot read {}: {e}", from.display())))?;
        let name = entry.file_name();
        if name == ".git" {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        let kind = entry
            .file_type()
            .map_err(|e| Error::new(format!("{}: {e}", src.display())))?;
        let copied = if kind.is_dir() {
            copy_tree(&src, &dst).map(|_| ())
        } else if kind.is_symlink() {
            fs::read_link(&src)
                .and_then(|target| std::os::unix::fs::symlink(target, &dst))
                .map_err(|e| Error::new(format!("cannot copy link {}: {e}", src.display())))
        } else {
            // A link costs nothing where a copy of a big tree costs seconds;
            // the files the diff names are made copies of their own before
            // patch runs (`unshare`), and nothing else writes to the tree.
            fs::hard_link(&src, &dst)
                .or_else(|_| fs::copy(&src, &dst).map(|_| ()))
                .map_err(|e| Error::new(format!("cannot copy {}: {e}", src.display())))
        };
        copied?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The patched tree shares unchanged files with the base (hard links);
    /// patching must still leave the base's files as they were.
    #[test]
    fn patching_never_writes_into_the_base() {
        let base = tempfile::tempdir().unwrap();
        std::fs::create_dir(base.path().join("src")).unwrap();
        std::fs::write(
            base.path().join("src/a.c"),
            "int a(void)\n{\n    return 1;\n}\n",
        )
        .unwrap();
        std::fs::write(base.path().join("b.c"), "int b;\n").unwrap();
        let trees = prepare(base.path().to_str().unwrap()).unwrap();
        let text = "--- a/src/a.c\n+++ b/src/a.c\n@@ -1,4 +1,4 @@\n int a(void)\n {\n-    return 1;\n+    return 2;\n }\n";
        let diff = crate::diff::parse(text, &trees.orig).unwrap();
        trees.apply(&diff, |_| true).unwrap();
        let read = |root: &Path, rel: &str| std::fs::read_to_string(root.join(rel)).unwrap();
        assert!(read(base.path(), "src/a.c").contains("return 1;"));
        assert!(read(&trees.patched, "src/a.c").contains("return 2;"));
        assert_eq!(read(&trees.patched, "b.c"), "int b;\n");
    }

    #[test]
    fn patch_output_is_read_per_file() {
        let o = patch_outcome(
            "patching file src/a.c\nHunk #2 succeeded at 1040 (offset 9 lines).\n\
             patching file doc/x.md\nHunk #1 FAILED at 12.\n1 out of 1 hunk FAILED -- saving rejects to file -\n",
        );
        assert_eq!(
            o.failed,
            vec![("doc/x.md".to_string(), "Hunk #1 FAILED at 12.".to_string())]
        );
        assert_eq!(
            o.shifted,
            vec!["src/a.c: Hunk #2 succeeded at 1040 (offset 9 lines)."]
        );
    }
}
