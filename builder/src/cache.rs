//! The object cache: original objects per base, so a second patch against
//! the same deployed base (the git hook's next commit, a retry after fixing
//! the diff) compiles only the patched side.
//!
//! An entry is keyed by the exact compile command, with the tree it ran in
//! written as `<TREE>` and the output path left out, and is valid only while
//! every file the compiler read (its `-MD` dependency list: the source, the
//! project's headers, the system headers) has the content it had then —
//! each file's SHA-256 is kept with the object. The compiler binary (path,
//! size, modification time) is part of the key. So an edited header, a
//! changed flag or another compiler misses.
//!
//! Location: `$HPBUILD_CACHE`, else `$XDG_CACHE_HOME/hpbuild`, else
//! `~/.cache/hpbuild`; `HPBUILD_CACHE=off` turns it off. Entries are written
//! to a temporary name and renamed, so concurrent builds never read half an
//! entry. Nothing here is ever required: any failure is a miss.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

const TREE: &str = "<TREE>";

pub struct Cache {
    dir: PathBuf,
}

/// One compile, as the cache sees it.
pub struct Job<'a> {
    /// The command as run (its `-o OUTPUT` is left out of the key).
    pub cmd: &'a [String],
    /// The directory the command runs in.
    pub dir: &'a Path,
    /// The tree the command reads (its path is `<TREE>` in the key).
    pub tree: &'a Path,
}

static HITS: AtomicUsize = AtomicUsize::new(0);

/// Counts an original object taken from the cache (for the build's note).
pub fn note_hit() {
    HITS.fetch_add(1, Ordering::Relaxed);
}

/// How many objects came from the cache in this build.
pub fn hits() -> usize {
    HITS.load(Ordering::Relaxed)
}

/// Where the cache is, for the note.
pub fn location() -> Option<&'static Path> {
    global().map(|c| c.dir.as_path())
}

/// The process-wide cache, if one is configured and usable.
pub fn global() -> Option<&'static Cache> {
    static CACHE: OnceLock<Option<Cache>> = OnceLock::new();
    CACHE.get_or_init(open).as_ref()
}

fn open() -> Option<Cache> {
    let dir = match std::env::var_os("HPBUILD_CACHE") {
        Some(v) if v == "off" || v.is_empty() => return None,
        Some(v) => PathBuf::from(v),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?
            .join("hpbuild"),
    };
    std::fs::create_dir_all(dir.join("objects")).ok()?;
    Some(Cache { dir })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_file(path: &Path) -> Option<String> {
    std::fs::read(path).ok().map(|b| hex(&Sha256::digest(&b)))
}

impl Job<'_> {
    fn templated(&self, s: &str) -> String {
        s.replace(&*self.tree.to_string_lossy(), TREE)
    }

    fn resolved(&self, s: &str) -> PathBuf {
        let p = PathBuf::from(s.replace(TREE, &self.tree.to_string_lossy()));
        if p.is_absolute() {
            p
        } else {
            self.dir.join(p)
        }
    }

    /// The key: the command without its output, the tree templated.
    fn key(&self) -> String {
        let mut h = Sha256::new();
        let mut args = self.cmd.iter();
        while let Some(a) = args.next() {
            if a == "-o" {
                args.next();
                continue;
            }
            h.update(self.templated(a).as_bytes());
            h.update([0]);
        }
        h.update(self.templated(&self.dir.to_string_lossy()).as_bytes());
        h.update(compiler_identity(&self.cmd[0]).as_bytes());
        hex(&h.finalize())
    }
}

/// The compiler binary the command runs (its path, size and mtime): an
/// upgraded compiler misses even where its headers did not change.
fn compiler_identity(program: &str) -> String {
    let Some(path) = resolve_program(program) else {
        return program.to_string();
    };
    let meta = std::fs::metadata(&path).ok();
    let mtime = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("{} {} {mtime}", path.display(), meta.map_or(0, |m| m.len()))
}

/// The file a command's program runs, found like the shell finds it, with
/// symbolic links resolved (`cc` → `/usr/bin/x86_64-linux-gnu-gcc-12`).
pub fn resolve_program(program: &str) -> Option<PathBuf> {
    let found = if program.contains('/') {
        Some(PathBuf::from(program))
    } else {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(program))
                .find(|c| c.is_file())
        })
    };
    found.and_then(|p| std::fs::canonicalize(p).ok())
}

impl Cache {
    /// The object of an earlier identical compile whose inputs are unchanged.
    pub fn lookup(&self, job: &Job) -> Option<Vec<u8>> {
        let entries = std::fs::read_dir(self.dir.join("objects").join(job.key())).ok()?;
        for e in entries.flatten() {
            let Ok(deps) = std::fs::read_to_string(e.path().join("deps")) else {
                continue;
            };
            let unchanged = deps.lines().all(|l| {
                l.split_once(' ').is_some_and(|(sum, file)| {
                    sha256_file(&job.resolved(file)).as_deref() == Some(sum)
                })
            });
            if unchanged {
                if let Ok(obj) = std::fs::read(e.path().join("object.o")) {
                    return Some(obj);
                }
            }
        }
        None
    }

    /// Keeps `object` for `job`, valid while the files in the make-style
    /// dependency list `depfile` keep their content.
    pub fn store(&self, job: &Job, object: &[u8], depfile: &Path) {
        let Some(deps) = std::fs::read_to_string(depfile)
            .ok()
            .map(|t| parse_deps(&t))
        else {
            return;
        };
        let mut list = String::new();
        for d in &deps {
            let Some(sum) = sha256_file(&job.resolved(d)) else {
                return; // an input that cannot be read again: never valid
            };
            list.push_str(&format!("{sum} {}\n", job.templated(d)));
        }
        let variant = hex(&Sha256::digest(list.as_bytes()));
        let key_dir = self.dir.join("objects").join(job.key());
        let tmp = key_dir.join(format!(".tmp-{}-{variant}", std::process::id()));
        let done = key_dir.join(&variant);
        if done.exists() {
            return;
        }
        let written = std::fs::create_dir_all(&tmp).is_ok()
            && std::fs::write(tmp.join("object.o"), object).is_ok()
            && std::fs::write(tmp.join("deps"), list).is_ok()
            && std::fs::rename(&tmp, &done).is_ok();
        if !written {
            let _ = std::fs::remove_dir_all(&tmp);
        }
    }
}

/// The prerequisites of a make-style dependency file (`out.o: a.c b.h \`),
/// with `\ ` escapes for spaces.
fn parse_deps(text: &str) -> Vec<String> {
    let joined = text.replace("\\\n", " ");
    let Some((_, rest)) = joined.split_once(": ") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = rest.lines().next().unwrap_or("").chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&' ') => {
                cur.push(' ');
                chars.next();
            }
            ' ' | '\t' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
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
    fn dependency_lists_are_read_like_make() {
        let d = parse_deps("/t/o.o: a.c inc/b.h \\\n /usr/include/stdio.h my\\ file.h\n");
        assert_eq!(d, ["a.c", "inc/b.h", "/usr/include/stdio.h", "my file.h"]);
    }

    #[test]
    fn a_changed_input_misses_and_the_tree_path_does_not_matter() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache {
            dir: tmp.path().join("cache"),
        };
        std::fs::create_dir_all(cache.dir.join("objects")).unwrap();
        let (t1, t2) = (tmp.path().join("t1"), tmp.path().join("t2"));
        for t in [&t1, &t2] {
            std::fs::create_dir_all(t).unwrap();
            std::fs::write(t.join("a.c"), "int a;\n").unwrap();
        }
        let cmd = |t: &Path| {
            vec![
                "cc".to_string(),
                "-c".to_string(),
                format!("{}/a.c", t.display()),
                "-o".to_string(),
                "/x/out.o".to_string(),
            ]
        };
        let (c1, c2) = (cmd(&t1), cmd(&t2));
        let job1 = Job {
            cmd: &c1,
            dir: &t1,
            tree: &t1,
        };
        let job2 = Job {
            cmd: &c2,
            dir: &t2,
            tree: &t2,
        };
        let depfile = tmp.path().join("a.d");
        std::fs::write(&depfile, format!("out.o: {}/a.c\n", t1.display())).unwrap();
        cache.store(&job1, b"OBJ", &depfile);
        assert_eq!(cache.lookup(&job1).as_deref(), Some(&b"OBJ"[..]));
        assert_eq!(
            cache.lookup(&job2).as_deref(),
            Some(&b"OBJ"[..]),
            "same content elsewhere"
        );
        std::fs::write(t2.join("a.c"), "int b;\n").unwrap();
        assert_eq!(cache.lookup(&job2), None, "an edited input misses");
    }
}
