//! `--exe PATH`: one command on every process of a build, with one result
//! per process, and the patch directory kept in step.
//!
//! Exit status: 0 when every process acted on succeeded (or, with none
//! running, the patch directory was changed as asked), 3 when some did, 1
//! when none did. Skipped processes (another build, no loader) do not
//! count either way.

use crate::exe::{self, Binary};
use crate::output::{DirNote, Outcome};
use crate::persist::{self, PatchDir};
use crate::{no_root, ApplyJob, SwitchArgs};
use std::path::PathBuf;
use std::process::ExitCode;

/// Everything `--exe` did.
pub struct Report {
    exe: PathBuf,
    build_id: String,
    processes: Vec<Outcome>,
    dirs: Vec<DirNote>,
}

/// The processes found: those to act on, and the skipped ones' outcomes.
fn targets(bin: &Binary, action: &'static str) -> Result<(Vec<u32>, Vec<Outcome>), String> {
    let mut act = Vec::new();
    let mut skipped = Vec::new();
    for f in exe::scan(bin)? {
        match f.skip {
            None => act.push(f.pid),
            Some(why) => skipped.push(Outcome::skipped(f.pid, action, why)),
        }
    }
    Ok((act, skipped))
}

/// The distinct patch-directory roots the processes' loaders read (hpctl's
/// own environment's when none runs).
fn roots(pids: &[u32]) -> Result<Vec<PathBuf>, String> {
    if pids.is_empty() {
        return Ok(vec![persist::root_here().ok_or_else(|| no_root("hpctl"))?]);
    }
    let mut out: Vec<PathBuf> = Vec::new();
    for &pid in pids {
        let root =
            persist::root_of_process(pid)?.ok_or_else(|| no_root(&format!("process {pid}")))?;
        if !out.contains(&root) {
            out.push(root);
        }
    }
    Ok(out)
}

fn by_result(pid: u32, action: &'static str, r: Result<Outcome, String>) -> Outcome {
    match r {
        Ok(o) => o.done(),
        Err(e) => Outcome::failed(pid, action, e.replace('\n', " ")),
    }
}

/// Applies unless the process has a patch of that id already (so a second
/// run changes nothing).
fn apply_if_absent(pid: u32, job: &ApplyJob) -> Result<Outcome, String> {
    let id = &job.meta.patch_id;
    if crate::list(pid)?.listed_ids().contains(&id.as_str()) {
        return Ok(Outcome::already(pid, id));
    }
    crate::apply(pid, job)
}

pub fn apply(bin: &Binary, job: &ApplyJob, persist: bool) -> Result<Report, String> {
    let (pids, skipped) = targets(bin, "apply")?;
    let id = &job.meta.patch_id;
    // Into the directory first, holding its lock until the end: a process
    // starting meanwhile applies it itself (and is then found with it), and
    // a concurrent hpctl on this build waits its turn.
    let mut held: Vec<(PatchDir, bool)> = Vec::new();
    if persist {
        for root in roots(&pids)? {
            let dir = PatchDir::open(&root, &bin.build_id, true)?.expect("created");
            let added = dir.add(&job.bytes, id, &job.sha256)?;
            held.push((dir, added));
        }
    }
    let done = exe::for_each(&pids, |pid| {
        by_result(pid, "apply", apply_if_absent(pid, job))
    });
    // A patch no running process took does not go to future ones either.
    let refused = !pids.is_empty() && done.iter().all(|o| !o.ok);
    let mut dirs = Vec::new();
    for (dir, added) in &held {
        let shown = dir.dir.display().to_string();
        let note = match (refused, added) {
            (true, true) => {
                dir.remove_newest(Some(id))?;
                note(
                    false,
                    &shown,
                    false,
                    format!("{id}: not persisted in {shown}: no process took it"),
                )
            }
            (true, false) => note(
                true,
                &shown,
                false,
                format!("{id}: still persisted in {shown} (it was before)"),
            ),
            (false, true) => note(true, &shown, true, format!("{id}: persisted in {shown}")),
            (false, false) => note(
                true,
                &shown,
                false,
                format!("{id}: already persisted in {shown}"),
            ),
        };
        dirs.push(note);
    }
    Ok(Report::new(bin, skipped, done, dirs))
}

fn note(ok: bool, dir: &str, changed: bool, message: String) -> DirNote {
    DirNote {
        ok,
        action: "persist",
        dir: dir.to_string(),
        changed,
        message,
    }
}

pub fn revert(bin: &Binary, sw: &SwitchArgs) -> Result<Report, String> {
    let (pids, skipped) = targets(bin, "revert")?;
    let done = exe::for_each(&pids, |pid| {
        by_result(pid, "revert", crate::revert(pid, sw))
    });
    let reverted: Vec<&str> = done.iter().filter_map(|o| o.id()).collect();
    let mut dirs = Vec::new();
    for root in roots(&pids)? {
        let Some(dir) = PatchDir::open(&root, &bin.build_id, false)? else {
            continue;
        };
        // With no process running, revert means: not at the next start.
        let gone = match pids.is_empty() {
            true => dir.remove_newest(None)?,
            false => reverted
                .iter()
                .find_map(|id| dir.remove_newest(Some(id)).transpose())
                .transpose()?,
        };
        if let Some(e) = gone {
            let shown = dir.dir.display().to_string();
            let m = format!("{}: removed from {shown}", e.id);
            dirs.push(DirNote {
                action: "unpersist",
                ..note(true, &shown, true, m)
            });
        }
    }
    Ok(Report::new(bin, skipped, done, dirs))
}

pub fn list(bin: &Binary) -> Result<Report, String> {
    let (pids, skipped) = targets(bin, "list")?;
    let done = exe::for_each(&pids, |pid| by_result(pid, "list", crate::list(pid)));
    Ok(Report::new(bin, skipped, done, Vec::new()))
}

impl Report {
    fn new(bin: &Binary, skipped: Vec<Outcome>, done: Vec<Outcome>, dirs: Vec<DirNote>) -> Report {
        let mut processes = done;
        processes.extend(skipped);
        processes.sort_by_key(|o| o.pid());
        Report {
            exe: bin.path.clone(),
            build_id: bin.build_id.clone(),
            processes,
            dirs,
        }
    }

    /// Prints one line per process and per directory change; the exit status.
    pub fn print(&self, json: bool) -> ExitCode {
        for p in &self.processes {
            p.print_line(json);
        }
        for d in &self.dirs {
            d.print(json);
        }
        let acted: Vec<&Outcome> = self
            .processes
            .iter()
            .filter(|p| p.status != Some("skipped"))
            .collect();
        let ok = acted.iter().filter(|p| p.ok).count();
        if acted.is_empty() {
            if self.dirs.iter().any(|d| d.ok) {
                return ExitCode::SUCCESS;
            }
            eprintln!(
                "hpctl: no running process of {} (build-id {}) has the loader; nothing was done",
                self.exe.display(),
                self.build_id
            );
            return ExitCode::from(1);
        }
        match ok {
            n if n == acted.len() => ExitCode::SUCCESS,
            0 => {
                eprintln!("hpctl: failed on all {} processes", acted.len());
                ExitCode::from(1)
            }
            n => {
                eprintln!("hpctl: succeeded on {n} of {} processes", acted.len());
                ExitCode::from(3)
            }
        }
    }
}
