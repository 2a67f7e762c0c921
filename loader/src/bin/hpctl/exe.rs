//! `--exe PATH`: the processes that run a binary, and running one command on
//! each of them in parallel.
//!
//! A process runs PATH when `/proc/PID/exe` names it (also as `PATH
//! (deleted)`, what a process shows after its binary was replaced). It is
//! acted on only if its executable has PATH's build-id now: a process
//! started from an older build at the same path is skipped, and so is one
//! without the loader. Processes whose executable the caller cannot read
//! (another user's, unless hpctl runs as root) are not the caller's to
//! patch and are not listed. Each process gets its own thread: the ptrace
//! stop of one (`ptrace.rs`) never waits for another's.

use crate::buildid;
use std::path::{Path, PathBuf};

/// Most processes worked on at once.
const PARALLEL: usize = 16;

/// A process found running the binary's path.
pub struct Found {
    pub pid: u32,
    /// Why it is not acted on (another build, no loader), or None.
    pub skip: Option<String>,
}

/// The binary `--exe` named: its canonical path and build-id.
pub struct Binary {
    pub path: PathBuf,
    pub build_id: String,
}

impl Binary {
    pub fn open(path: &Path) -> Result<Binary, String> {
        let canonical = std::fs::canonicalize(path)
            .map_err(|e| format!("cannot find executable {}: {e}", path.display()))?;
        let build_id = buildid::of_file(&canonical)?;
        Ok(Binary {
            path: canonical,
            build_id,
        })
    }
}

/// The path a process runs, as the kernel reports it (without the
/// " (deleted)" a replaced binary gets); None if the caller may not see it.
fn exe_of(pid: u32) -> Option<PathBuf> {
    let link = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let text = link.to_str()?;
    Some(PathBuf::from(
        text.strip_suffix(" (deleted)").unwrap_or(text),
    ))
}

/// Does the process listen on the loader's socket? (Abstract sockets are
/// listed in /proc/net/unix with a leading '@'.)
fn listening(pid: u32, table: &str) -> bool {
    let name = format!("@{}", format::protocol::socket_name(pid));
    table
        .lines()
        .any(|l| l.split_whitespace().last() == Some(&name))
}

fn why_skipped(pid: u32, bin: &Binary, sockets: &str) -> Option<String> {
    let proc_exe = PathBuf::from(format!("/proc/{pid}/exe"));
    match buildid::of_file(&proc_exe) {
        Ok(id) if id == bin.build_id => {}
        Ok(id) => {
            return Some(format!(
                "another build (build-id {id}; {} is now {})",
                bin.path.display(),
                bin.build_id
            ))
        }
        Err(e) => return Some(format!("its executable cannot be identified: {e}")),
    }
    if !listening(pid, sockets) {
        return Some(
            "no hotpatch loader listening (not linked with libhotpatch.a, or HOTPATCH_DISABLE=1)"
                .into(),
        );
    }
    None
}

/// Every process the caller can see that runs `bin`'s path, by pid.
pub fn scan(bin: &Binary) -> Result<Vec<Found>, String> {
    let sockets = std::fs::read_to_string("/proc/net/unix")
        .map_err(|e| format!("cannot read /proc/net/unix: {e}"))?;
    let me = std::process::id();
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .map_err(|e| format!("cannot list /proc: {e}"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&pid| pid != me && exe_of(pid).as_deref() == Some(bin.path.as_path()))
        .collect();
    pids.sort_unstable();
    Ok(pids
        .into_iter()
        .map(|pid| Found {
            pid,
            skip: why_skipped(pid, bin, &sockets),
        })
        .collect())
}

/// Runs `work` for every pid, at most [`PARALLEL`] at a time, each on its
/// own thread; the results in the order of `pids`.
pub fn for_each<T: Send>(pids: &[u32], work: impl Fn(u32) -> T + Sync) -> Vec<T> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<T>>> =
        pids.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..PARALLEL.min(pids.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&pid) = pids.get(i) else { break };
                let r = work(pid);
                *results[i].lock().unwrap() = Some(r);
            });
        }
    });
    results
        .into_iter()
        .map(|m| m.into_inner().unwrap().expect("every pid was worked on"))
        .collect()
}
