//! The patch directory: patches a process of a build re-applies when it
//! starts (the loader's `csrc/persist.c` reads it; the layout is documented
//! in loader/README.md, "Patches that survive restarts").
//!
//! ```text
//! ROOT/<build-id>/series          the patches, oldest first, one a line:
//!                                 <file> <content sha256> <patch id>
//! ROOT/<build-id>/<id>-<sha>.hpo  the patch files
//! ROOT/<build-id>/lock            flock: one hpctl at a time changes the series
//! ```
//!
//! ROOT is `$HOTPATCH_DIR`, else `/var/lib/hotpatch` for root, else
//! `$XDG_STATE_HOME/hotpatch`, else `$HOME/.local/state/hotpatch`, read from
//! the *target process's* start-up environment and effective uid (what its
//! loader read), so hpctl run as root writes where a service's loader looks.
//! The series is replaced atomically (written beside it, then renamed); a
//! patch file is written before the series names it and removed after.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const SERIES: &str = "series";
const LOCK: &str = "lock";
/// How long hpctl waits for another hpctl's lock on the series.
const LOCK_WAIT: Duration = Duration::from_secs(60);

/// One patch of the series.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Entry {
    pub file: String,
    pub sha256: String,
    pub id: String,
}

/// The one rule for ROOT, given an environment lookup and an effective uid.
fn root_from(var: impl Fn(&str) -> Option<String>, euid: u32) -> Option<PathBuf> {
    let set = |name: &str| var(name).filter(|v| !v.is_empty());
    if let Some(d) = set("HOTPATCH_DIR") {
        return Some(d.into());
    }
    if euid == 0 {
        return Some("/var/lib/hotpatch".into());
    }
    if let Some(d) = set("XDG_STATE_HOME") {
        return Some(Path::new(&d).join("hotpatch"));
    }
    set("HOME").map(|h| Path::new(&h).join(".local/state/hotpatch"))
}

/// ROOT as hpctl's own environment gives it (no process to ask).
pub fn root_here() -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions.
    root_from(|v| std::env::var(v).ok(), unsafe { libc::geteuid() })
}

/// ROOT as the loader of `pid` computed it at start-up.
pub fn root_of_process(pid: u32) -> Result<Option<PathBuf>, String> {
    let env = fs::read(format!("/proc/{pid}/environ"))
        .map_err(|e| format!("cannot read the environment of process {pid}: {e}"))?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read the status of process {pid}: {e}"))?;
    // "Uid: real effective saved fs"
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|u| u.split_whitespace().nth(1)?.parse().ok())
        .ok_or_else(|| format!("process {pid}: no effective uid in /proc/{pid}/status"))?;
    let var = |name: &str| {
        env.split(|&b| b == 0).find_map(|kv| {
            let v = kv.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
            Some(String::from_utf8_lossy(v).into_owned())
        })
    };
    Ok(root_from(var, euid))
}

/// The patch directory of one build, held locked (exclusive) while this
/// value lives: concurrent hpctl invocations on one build take turns.
pub struct PatchDir {
    pub dir: PathBuf,
    _lock: File,
}

fn lock_exclusive(f: &File, path: &Path) -> Result<(), String> {
    let t0 = Instant::now();
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        if t0.elapsed() > LOCK_WAIT {
            return Err(format!(
                "{} is held by another hpctl for more than {} s; try again when it is done",
                path.display(),
                LOCK_WAIT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl PatchDir {
    /// Opens (`create`: makes) ROOT/<build_id> and takes its lock; Ok(None)
    /// if it does not exist and `create` is false.
    pub fn open(root: &Path, build_id: &str, create: bool) -> Result<Option<PatchDir>, String> {
        let dir = root.join(build_id);
        if !dir.is_dir() && !create {
            return Ok(None);
        }
        // Not writable by group or others: the loader refuses such a
        // directory (anyone who can write it could make the program run code).
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(|e| format!("cannot create the patch directory {}: {e}", dir.display()))?;
        let lock_path = dir.join(LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o644)
            .open(&lock_path)
            .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
        lock_exclusive(&lock, &lock_path)?;
        Ok(Some(PatchDir { dir, _lock: lock }))
    }

    pub fn entries(&self) -> Result<Vec<Entry>, String> {
        let path = self.dir.join(SERIES);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        text.lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
                [file, sha256, id] => Ok(Entry {
                    file: file.into(),
                    sha256: sha256.into(),
                    id: id.into(),
                }),
                _ => Err(format!(
                    "{}: malformed line {l:?} (expected: <file> <sha256> <patch id>)",
                    path.display()
                )),
            })
            .collect()
    }

    fn write_file(&self, name: &str, bytes: &[u8]) -> Result<(), String> {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let fin = self.dir.join(name);
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o644)
                .open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &fin)
        };
        write().map_err(|e| format!("cannot write {}: {e}", fin.display()))
    }

    fn write_series(&self, entries: &[Entry]) -> Result<(), String> {
        let mut text = String::from(
            "# hotpatch: applied at start-up in this order; maintained by hpctl apply --persist / revert\n",
        );
        for e in entries {
            text += &format!("{} {} {}\n", e.file, e.sha256, e.id);
        }
        self.write_file(SERIES, text.as_bytes())
    }

    /// Adds a patch at the end of the series. Ok(false): it is there
    /// already (same content); a different patch with the same id is an
    /// error, since processes tell patches apart by id.
    pub fn add(&self, bytes: &[u8], id: &str, sha256: &str) -> Result<bool, String> {
        let mut entries = self.entries()?;
        if let Some(e) = entries.iter().find(|e| e.id == id) {
            if e.sha256 == sha256 {
                return Ok(false);
            }
            return Err(format!(
                "{} already holds another patch with id {id} ({}); revert it first",
                self.dir.display(),
                e.file
            ));
        }
        let safe: String = id
            .chars()
            .map(|c| match c.is_ascii_alphanumeric() || "._-".contains(c) {
                true => c,
                false => '_',
            })
            .collect();
        let file = format!("{safe}-{}.hpo", &sha256[..16]);
        self.write_file(&file, bytes)?;
        entries.push(Entry {
            file,
            sha256: sha256.into(),
            id: id.into(),
        });
        self.write_series(&entries)?;
        Ok(true)
    }

    /// Removes the newest patch if its id is `id` (any id: None); the entry
    /// removed.
    pub fn remove_newest(&self, id: Option<&str>) -> Result<Option<Entry>, String> {
        let mut entries = self.entries()?;
        match entries.last() {
            Some(e) if id.is_none_or(|id| e.id == id) => {}
            _ => return Ok(None),
        }
        let gone = entries.pop().expect("checked above");
        self.write_series(&entries)?;
        let _ = fs::remove_file(self.dir.join(&gone.file));
        Ok(Some(gone))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |n| {
            vars.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_root_follows_the_documented_order() {
        let all = [
            ("HOTPATCH_DIR", "/srv/hp"),
            ("XDG_STATE_HOME", "/x"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(root_from(env(&all), 1000), Some("/srv/hp".into()));
        assert_eq!(
            root_from(env(&all[1..]), 0),
            Some("/var/lib/hotpatch".into())
        );
        assert_eq!(root_from(env(&all[1..]), 1000), Some("/x/hotpatch".into()));
        assert_eq!(
            root_from(env(&all[2..]), 1000),
            Some("/home/u/.local/state/hotpatch".into())
        );
        assert_eq!(root_from(env(&[("HOTPATCH_DIR", "")]), 1000), None);
    }

    #[test]
    fn the_series_keeps_order_is_idempotent_and_pops_only_the_named_newest() {
        let root = std::env::temp_dir().join(format!("hpctl-persist-{}", std::process::id()));
        let d = PatchDir::open(&root, "ab12", true).unwrap().unwrap();
        let (h1, h2) = ("1".repeat(64), "2".repeat(64));
        assert!(d.add(b"one", "fix-1", &h1).unwrap());
        assert!(d.add(b"two", "fix/2", &h2).unwrap());
        assert!(!d.add(b"one", "fix-1", &h1).unwrap(), "same patch again");
        let e = d.add(b"other", "fix-1", &h2).unwrap_err();
        assert!(e.contains("another patch with id fix-1"), "{e}");
        let ids: Vec<String> = d.entries().unwrap().into_iter().map(|e| e.id).collect();
        assert_eq!(ids, ["fix-1", "fix/2"]);
        assert_eq!(d.remove_newest(Some("fix-1")).unwrap(), None);
        let gone = d.remove_newest(Some("fix/2")).unwrap().unwrap();
        assert_eq!(gone.file, format!("fix_2-{}.hpo", &h2[..16]));
        assert!(!d.dir.join(&gone.file).exists());
        drop(d);
        fs::remove_dir_all(&root).unwrap();
    }
}
