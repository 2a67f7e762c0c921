//! Which translation units include a header, asked of the compiler itself:
//! each unit's recorded command is rerun with `-M` (preprocess only, list
//! dependencies), so include paths, `-include` and conditional includes are
//! exactly the build's. Works for any compile database (CMake, Meson, Bear,
//! `hpbuild capture`), unlike depfiles that only some builds leave behind.

use crate::compdb::{self, Entry};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// A unit's dependencies, or why they are unknown.
pub type Deps = Result<Vec<PathBuf>, String>;

/// The dependencies of every entry compiled from `tree`, paths normalised
/// and expressed in `tree`. Runs on all cores: a project has hundreds of
/// units and each `-M` is a full preprocess.
pub fn scan(entries: &[Entry], base_root: &Path, tree: &Path) -> Vec<Deps> {
    let results: Mutex<Vec<Option<Deps>>> = Mutex::new(vec![None; entries.len()]);
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(e) = entries.get(i) else { break };
                let d = unit_deps(e, base_root, tree);
                results.lock().expect("no panics while held")[i] = Some(d);
            });
        }
    });
    results
        .into_inner()
        .expect("no panics while held")
        .into_iter()
        .map(|d| d.expect("every unit scanned"))
        .collect()
}

fn unit_deps(entry: &Entry, base_root: &Path, tree: &Path) -> Deps {
    let (dir, cmd) = entry.deps_command_in(base_root, tree);
    let out = Command::new(&cmd[0])
        .args(&cmd[1..])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", cmd[0]))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err
            .lines()
            .find(|l| l.contains("error"))
            .unwrap_or("failed");
        return Err(first.trim().to_string());
    }
    Ok(parse_make_deps(&String::from_utf8_lossy(&out.stdout))
        .into_iter()
        .map(|p| compdb::normalize(&dir.join(p)))
        .collect())
}

/// The prerequisites of a make rule `target: a.c b.h \` … (escaped spaces
/// kept as spaces).
fn parse_make_deps(text: &str) -> Vec<String> {
    let joined = text.replace("\\\n", " ");
    let Some((_, rest)) = joined.split_once(": ") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&' ') => {
                cur.push(' ');
                chars.next();
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_continued_rules() {
        let d = parse_make_deps("lapi.o: lapi.c lprefix.h \\\n  lua.h my\\ dir/x.h\n");
        assert_eq!(d, vec!["lapi.c", "lprefix.h", "lua.h", "my dir/x.h"]);
    }
}
