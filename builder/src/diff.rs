//! Reading the fix: which files a unified diff touches, and its hunks.
//! `edits.rs` locates the hunks in the two trees to name the functions the
//! diff edits; `tree.rs` hands [`Diff::text`] to GNU patch with
//! `-p`[`Diff::strip`].
//!
//! Parsing is done by the `patch` crate, on a copy of the text read the way
//! GNU patch reads it (`normalize`): the preamble real patches carry (mail
//! headers, DEP-3 fields) and the text between files or after the last hunk
//! (`Index:` lines, git's signature) are dropped, a hunk ends when its
//! header's line counts are used up, and an empty line inside a hunk is a
//! context line whose leading space was lost. The crate panics on some
//! input: the panic is caught, so a malformed diff, like a truncated hunk,
//! is a one-line error. The strip level (`patch -pN`) is the smallest at
//! which every file the diff modifies or deletes is found in the base tree
//! (a diff that only adds files: 1 when its paths have a directory, else 0);
//! paths are kept without the stripped `a/`, `b/` style prefixes.

use crate::bail;
use crate::error::Result;
use std::path::Path;

/// One file of the diff.
#[derive(Debug, Clone)]
pub struct FileChange {
    /// Path relative to the tree root (prefix stripped); for a deleted file
    /// the old path.
    pub path: String,
    pub added: bool,
    pub deleted: bool,
    pub hunks: Vec<Hunk>,
}

/// One hunk as the diff states it.
#[derive(Debug, Clone)]
pub struct Hunk {
    /// 1-based first line of the hunk's old and new text (`@@ -a +b @@`).
    pub old_start: usize,
    pub new_start: usize,
    /// `' '` context, `'-'` removed, `'+'` added; the line without its
    /// marker.
    pub lines: Vec<(char, String)>,
}

impl FileChange {
    /// C sources and headers are what hpbuild compiles; anything else in a
    /// diff (tests, docs, build files) is ignored with a note.
    pub fn is_c(&self) -> bool {
        [".c", ".h"].iter().any(|ext| self.path.ends_with(ext))
    }

    pub fn is_header(&self) -> bool {
        self.path.ends_with(".h")
    }
}

/// The parsed diff plus the number of leading path components to strip
/// (what `patch -p` needs).
#[derive(Debug)]
pub struct Diff {
    pub files: Vec<FileChange>,
    pub strip: usize,
    /// The text given to `patch`, preamble removed.
    pub text: String,
}

/// Parses `text`; `root` is the base tree, used to decide how many path
/// components to strip (the level at which the diff's files exist).
pub fn parse(text: &str, root: &Path) -> Result<Diff> {
    let body = strip_preamble(text).ok_or_else(|| {
        crate::error::Error::new("the diff has no '--- ' / '+++ ' file header: not a unified diff")
    })?;
    let normal = normalize(body);
    let patches = match parse_quietly(&normal) {
        None => bail!("the diff is malformed: the diff parser gave up on it"),
        Some(Ok(p)) => p,
        Some(Err(e)) => bail!("the diff is malformed: {}", first_line(&e.to_string())),
    };
    if patches.is_empty() {
        bail!("the diff changes no file");
    }
    for p in &patches {
        check_hunk_counts(p)?;
    }
    let strip = strip_level(&patches, root)?;
    let files = patches.iter().map(|p| file_change(p, strip)).collect();
    Ok(Diff {
        files,
        strip,
        text: body.to_string(),
    })
}

/// The `patch` crate panics on some inputs it cannot parse ("failed to parse
/// entire input") instead of returning an error. A malformed diff must give
/// a one-line error, not a crash or a panic message: catch it, with the
/// panic hook silenced for the duration.
fn parse_quietly(
    text: &str,
) -> Option<std::result::Result<Vec<patch::Patch<'_>>, patch::ParseError<'_>>> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(|| patch::Patch::from_multiple(text));
    std::panic::set_hook(hook);
    result.ok()
}

/// What the parser is given: file headers and hunks only, read the way GNU
/// patch reads them (a hunk ends when its header's line counts are used up).
/// Text between files and after the last hunk (`Index:` lines, git's `-- `
/// signature and version trailer) is dropped, and an empty line inside a
/// hunk is a context line whose leading space an editor or mailer removed.
fn normalize(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let (mut old, mut new) = (0u64, 0u64);
    let mut lines = body.split_inclusive('\n').peekable();
    while let Some(line) = lines.next() {
        if old > 0 || new > 0 {
            let text = line.trim_end_matches(['\n', '\r']);
            match text.as_bytes().first() {
                // A blank line is context whose leading space was lost.
                None | Some(b' ') => {
                    old = old.saturating_sub(1);
                    new = new.saturating_sub(1);
                }
                Some(b'-') => old = old.saturating_sub(1),
                Some(b'+') => new = new.saturating_sub(1),
                Some(b'\\') => {}
                // A short hunk: leave it to check_hunk_counts.
                _ => {
                    old = 0;
                    new = 0;
                }
            }
            out.push_str(if text.is_empty() { " \n" } else { line });
            if old == 0 && new == 0 {
                // "\ No newline at end of file" belongs to the hunk's last line.
                while let Some(next) = lines.peek().filter(|n| n.starts_with('\\')) {
                    out.push_str(next);
                    lines.next();
                }
            }
            continue;
        }
        if line.starts_with("--- ") && lines.peek().is_some_and(|n| n.starts_with("+++ ")) {
            out.push_str(line);
            out.push_str(lines.next().expect("peeked"));
        } else if let Some((o, n)) = hunk_counts(line) {
            out.push_str(line);
            old = o;
            new = n;
        }
    }
    out
}

/// The old and new line counts of a hunk header `@@ -a[,b] +c[,d] @@`.
fn hunk_counts(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("@@ -")?;
    let (ranges, _) = rest.split_once(" @@")?;
    let (o, n) = ranges.split_once(" +")?;
    let count = |r: &str| -> Option<u64> {
        match r.split_once(',') {
            Some((_, c)) => c.parse().ok(),
            None => r.parse::<u64>().ok().map(|_| 1),
        }
    };
    Some((count(o)?, count(n)?))
}

fn first_line(s: &str) -> &str {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s).trim()
}

/// Everything before the first file header is commentary (git format-patch
/// mail, Debian DEP-3 fields) that the parser would reject.
fn strip_preamble(text: &str) -> Option<&str> {
    let mut offset = 0;
    let mut lines = text.split_inclusive('\n').peekable();
    while let Some(line) = lines.next() {
        if line.starts_with("--- ") && lines.peek().is_some_and(|n| n.starts_with("+++ ")) {
            return Some(&text[offset..]);
        }
        offset += line.len();
    }
    None
}

/// A hunk whose body is shorter than its header claims is a truncated diff;
/// the parser accepts it, `patch` would then fail with a less useful message.
fn check_hunk_counts(p: &patch::Patch) -> Result<()> {
    for h in &p.hunks {
        let (mut old, mut new) = (0u64, 0u64);
        for l in &h.lines {
            match l {
                patch::Line::Add(_) => new += 1,
                patch::Line::Remove(_) => old += 1,
                patch::Line::Context(_) => {
                    old += 1;
                    new += 1;
                }
            }
        }
        if old != h.old_range.count || new != h.new_range.count {
            bail!(
                "the diff is malformed: hunk @@ -{},{} +{},{} @@ of {} has {} old and {} new lines (truncated?)",
                h.old_range.start, h.old_range.count, h.new_range.start, h.new_range.count,
                p.new.path, old, new
            );
        }
    }
    Ok(())
}

fn is_dev_null(path: &str) -> bool {
    path == "/dev/null"
}

/// Strips `n` leading components like `patch -pN`.
fn strip_components(path: &str, n: usize) -> Option<String> {
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    (parts.len() > n).then(|| parts[n..].join("/"))
}

/// Picks the smallest strip level at which every existing (non-added) file of
/// the diff is found in the base tree; for a diff that only adds files, the
/// `a/ b/` convention (1) when the paths have a prefix, else 0.
fn strip_level(patches: &[patch::Patch], root: &Path) -> Result<usize> {
    let existing: Vec<&str> = patches
        .iter()
        .filter(|p| !is_dev_null(&p.old.path))
        .map(|p| p.old.path.as_ref())
        .collect();
    if existing.is_empty() {
        let has_prefix = patches.iter().all(|p| p.new.path.contains('/'));
        return Ok(usize::from(has_prefix));
    }
    for n in 0..4 {
        let all_found = existing
            .iter()
            .all(|path| strip_components(path, n).is_some_and(|rel| root.join(rel).is_file()));
        if all_found {
            return Ok(n);
        }
    }
    bail!(
        "the diff does not apply: {} is not in the base tree {} (with any a/ b/ prefix removed)",
        existing[0],
        root.display()
    )
}

fn file_change(p: &patch::Patch, strip: usize) -> FileChange {
    let added = is_dev_null(&p.old.path);
    let deleted = is_dev_null(&p.new.path);
    let shown = if deleted { &p.old.path } else { &p.new.path };
    let path = strip_components(shown, strip).unwrap_or_else(|| shown.to_string());
    let hunks = p
        .hunks
        .iter()
        .map(|h| Hunk {
            old_start: h.old_range.start as usize,
            new_start: h.new_range.start as usize,
            lines: h
                .lines
                .iter()
                .map(|l| match l {
                    patch::Line::Add(t) => ('+', t.to_string()),
                    patch::Line::Remove(t) => ('-', t.to_string()),
                    patch::Line::Context(t) => (' ', t.to_string()),
                })
                .collect(),
        })
        .collect();
    FileChange {
        path,
        added,
        deleted,
        hunks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIT_DIFF: &str = "From: someone\nSubject: fix\n\n---\n main.c | 2 +-\n\ndiff --git a/src/main.c b/src/main.c\nindex 1..2 100644\n--- a/src/main.c\n+++ b/src/main.c\n@@ -1,3 +1,3 @@\n a\n-b\n+c\n d\n";

    fn tree_with(path: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let full = dir.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, "a\nb\nd\n").unwrap();
        dir
    }

    #[test]
    fn git_style_diff_with_mail_preamble() {
        let tree = tree_with("src/main.c");
        let d = parse(GIT_DIFF, tree.path()).unwrap();
        assert_eq!(d.strip, 1);
        assert_eq!(d.files.len(), 1);
        assert_eq!(d.files[0].path, "src/main.c");
        assert!(d.text.starts_with("--- a/src/main.c"));
    }

    #[test]
    fn plain_paths_need_no_strip() {
        let tree = tree_with("main.c");
        let d = parse("--- main.c\n+++ main.c\n@@ -2 +2 @@\n-b\n+c\n", tree.path()).unwrap();
        assert_eq!(d.strip, 0);
    }

    #[test]
    fn garbage_is_rejected_with_a_reason() {
        let tree = tree_with("main.c");
        let e = parse("this is not a diff\n", tree.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a unified diff"), "{e}");
    }

    #[test]
    fn truncated_hunk_is_rejected() {
        let tree = tree_with("main.c");
        let e = parse(
            "--- a/main.c\n+++ b/main.c\n@@ -1,3 +1,3 @@\n a\n",
            tree.path(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("truncated"), "{e}");
    }

    #[test]
    fn file_missing_from_base_is_named() {
        let tree = tree_with("main.c");
        let e = parse(
            "--- a/nothere.c\n+++ b/nothere.c\n@@ -1 +1 @@\n-a\n+b\n",
            tree.path(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("nothere.c"), "{e}");
    }

    #[test]
    fn git_format_patch_signature_is_not_part_of_the_diff() {
        let tree = tree_with("src/main.c");
        let text = format!("{GIT_DIFF}-- \n2.30.2\n\n");
        let d = parse(&text, tree.path()).unwrap();
        assert_eq!(d.files.len(), 1);
    }

    #[test]
    fn blank_context_line_is_context() {
        // Context lines that are empty in the source lose their leading
        // space in some tools (sqlite3's Debian 42-CVE-2025-6965.patch).
        let tree = tree_with("main.c");
        let d = parse(
            "--- a/main.c\n+++ b/main.c\n@@ -1,4 +1,5 @@\n a\n\n+x\n b\n d\n--- a/main.c\n+++ b/main.c\n@@ -9 +10 @@\n-q\n+r\n",
            tree.path(),
        )
        .unwrap();
        assert_eq!(d.files.len(), 2);
    }

    #[test]
    fn no_newline_marker_after_a_blank_last_line_stays_with_its_hunk() {
        let text =
            "--- a/main.c\n+++ b/main.c\n@@ -1,2 +1,2 @@\n-a\n+b\n\n\\ No newline at end of file\n";
        assert_eq!(
            normalize(text),
            "--- a/main.c\n+++ b/main.c\n@@ -1,2 +1,2 @@\n-a\n+b\n \n\\ No newline at end of file\n"
        );
    }
}
