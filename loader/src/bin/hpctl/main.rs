//! hpctl: talk to the in-process loader (libhotpatch.a) of a running program.
//!
//! `main` parses the command line, `run` carries out one command as a
//! short sequence of named steps, and `output` prints the outcome (text, or
//! one JSON object with `--json`). Every failure is one line that says what
//! to do; the exit status is 0 on success and 1 on any failure (2 for usage
//! errors). A patch file is validated before the target process is
//! contacted — its content hash first (`format::read_patch`), so a file
//! changed after hpbuild wrote it is refused naming it — and a bad file
//! never reaches the process.
//!
//! hpctl is also the loader's helper during a switch: it stops the target's
//! threads with ptrace when the loader asks (`ptrace.rs`) and finds the
//! direct call sites of the replaced functions (`sites.rs`).
//!
//! `--exe PATH` runs a command on every process of a binary (`exe.rs`
//! finds them, `many.rs` runs and reports); `--persist` and revert keep the
//! patch directory the loader re-applies from at start-up (`persist.rs`).
//! A process configured with a signing key gets only patches that key
//! signed (`trust.rs`: checked here first, then by the loader).

mod buildid;
mod exe;
mod many;
mod output;
mod persist;
mod ptrace;
mod sites;
mod trust;

use clap::{Parser, Subcommand, ValueEnum};
use format::protocol::{self, ClientError, Helper, Mode, Options, Reply, Request};
use output::Outcome;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "hpctl",
    version,
    about = "Apply, revert and list live patches in a running process"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// How an apply or revert switches (shared flags).
#[derive(clap::Args, Clone, Copy)]
struct SwitchArgs {
    /// Switch at once: future calls get the new code, calls already running
    /// finish in the old code (each thread doing so is named in a warning).
    #[arg(long, conflicts_with = "consistent")]
    lazy: bool,
    /// The default (kept as an alias): switch only at a moment when no
    /// thread has the code being replaced on its stack.
    #[arg(long)]
    consistent: bool,
    /// How long a consistent switch waits for that moment.
    #[arg(long, value_name = "MS", default_value_t = protocol::HP_DEFAULT_CONSISTENT_TIMEOUT_MS,
          value_parser = clap::value_parser!(u32).range(1..=protocol::HP_MAX_CONSISTENT_TIMEOUT_MS as i64))]
    timeout_ms: u32,
    /// Let the loader stop the threads with its own signal instead of
    /// hpctl's ptrace (interrupted sleeps then return EINTR; for comparison).
    #[arg(long, hide = true)]
    signal_stop: bool,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

impl SwitchArgs {
    fn options(&self, call_sites: bool) -> Options {
        Options {
            mode: if self.lazy {
                Mode::Lazy
            } else {
                Mode::Consistent {
                    timeout_ms: self.timeout_ms,
                }
            },
            call_sites,
            client_stop: !self.signal_stop,
        }
    }
}

#[derive(ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
enum Redirect {
    /// A jump at each replaced function's entry.
    Entry,
    /// The entry jump, and every direct call/jmp to the function rewritten
    /// to go straight to the new code (no extra jump per call).
    CallSite,
}

#[derive(Subcommand)]
enum Cmd {
    /// Apply a patch object (.hpo) to a running process.
    ///
    /// By default the switch is consistent: it happens only at a moment when
    /// no thread has any replaced function on its stack; hpctl retries until
    /// --timeout-ms, then fails naming the function and the thread, having
    /// changed nothing (an event loop that never returns can never switch
    /// this way). With --lazy future calls get the new code at once and
    /// calls already running finish in the old code.
    #[command(
        override_usage = "hpctl apply [OPTIONS] <PID> <FILE>\n       hpctl apply [OPTIONS] --exe <PATH> <FILE>"
    )]
    Apply {
        /// The process, then the patch file (with --exe: the patch file only).
        #[arg(value_name = "PID> <FILE", num_args = 1..=2, required = true)]
        args: Vec<String>,
        #[command(flatten)]
        target: ExeArg,
        /// Also keep the patch in the binary's patch directory: every
        /// process of this build started later applies it before main
        /// (removed again by hpctl revert).
        #[arg(long)]
        persist: bool,
        #[command(flatten)]
        switch: SwitchArgs,
        /// How calls reach the new code (default: what the patch was built
        /// for, `hpbuild --redirect`; else entry).
        #[arg(long, value_enum)]
        redirect: Option<Redirect>,
    },
    /// Revert the most recently applied patch.
    ///
    /// By default the switch is consistent: the old code comes back only at
    /// a moment when no thread has a frame in the patch's code, which is
    /// then freed. With --lazy the old code comes back at once and the
    /// patch's code is freed by a later apply or revert that finds no
    /// thread inside it.
    ///
    /// A reverted patch that is the newest in the binary's patch directory
    /// is removed from it too (processes started later no longer apply it).
    Revert {
        #[arg(required_unless_present = "exe", conflicts_with = "exe")]
        pid: Option<u32>,
        #[command(flatten)]
        target: ExeArg,
        #[command(flatten)]
        switch: SwitchArgs,
    },
    /// List the patches applied to a process, oldest first.
    List {
        #[arg(required_unless_present = "exe", conflicts_with = "exe")]
        pid: Option<u32>,
        #[command(flatten)]
        target: ExeArg,
        /// Print the result as JSON on stdout (with --exe: one object a line).
        #[arg(long)]
        json: bool,
    },
}

/// `--exe PATH` (shared by every command).
#[derive(clap::Args, Clone)]
struct ExeArg {
    /// Act on every running process of this executable that has the
    /// loader (same build-id), in parallel; one line per process. Exit
    /// status: 0 all succeeded, 3 some, 1 none.
    #[arg(long, value_name = "PATH")]
    exe: Option<PathBuf>,
}

const TIMEOUT: Duration = Duration::from_secs(30);

extern "C" {
    fn geteuid() -> u32;
}

fn check_process(pid: u32) -> Result<(), String> {
    let meta = match std::fs::metadata(format!("/proc/{pid}")) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("no such process {pid}"))
        }
        Err(e) => return Err(format!("cannot inspect process {pid}: {e}")),
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { geteuid() };
    if me != 0 && meta.uid() != me {
        return Err(format!(
            "process {pid} belongs to uid {}; run hpctl as that user or as root",
            meta.uid()
        ));
    }
    check_running(pid)
}

/// A stopped process (SIGSTOP, a debugger) cannot answer: its loader would
/// act only once it continues, long after hpctl gave up. Say so at once.
fn check_running(pid: u32) -> Result<(), String> {
    match state(pid) {
        Some('T') => Err(format!(
            "process {pid} is stopped (state T); continue it (kill -CONT {pid}) and try again; nothing was sent"
        )),
        Some('t') => Err(format!(
            "process {pid} is stopped by a debugger (state t); detach or continue it and try again; nothing was sent"
        )),
        Some('Z') => Err(format!("process {pid} has exited (zombie)")),
        _ => Ok(()),
    }
}

/// The process's state letter in /proc/PID/stat (R, S, T, t, Z, ...).
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the command name's closing parenthesis.
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
}

/// hpctl's answers to the loader: its ptrace stop and its call-site search.
struct Client {
    stopper: ptrace::Stopper,
    pid: u32,
}

impl Helper for Client {
    fn call_sites(&mut self, t: &protocol::Targets) -> Result<Vec<protocol::SiteLine>, String> {
        sites::find(self.pid, t)
    }
    fn stop(&mut self, listener: u32) -> Result<Vec<protocol::ThreadRegs>, String> {
        self.stopper.stop(listener)
    }
    fn resume(&mut self) {
        self.stopper.resume();
    }
}

/// Sends `req` and answers the loader's questions; the reply and, per stop,
/// how long hpctl held the threads.
fn exchange(pid: u32, req: &Request) -> Result<(Reply, Vec<Duration>), String> {
    let mut client = Client {
        stopper: ptrace::Stopper::new(pid),
        pid,
    };
    let result = protocol::converse(pid, req, TIMEOUT, &mut client);
    let parked = std::mem::take(&mut client.stopper.parked);
    match result {
        Ok(r) if r.ok => Ok((r, parked)),
        Ok(r) => Err(r.message),
        Err(ClientError::NoLoader(_)) => Err(format!(
            "process {pid} has no hotpatch loader listening (link libhotpatch.a with -Wl,--whole-archive)"
        )),
        // Stopped while we talked (the state was checked just before): say
        // that rather than the socket's error. The loader acts on no
        // request whose client has gone.
        Err(_) if matches!(state(pid), Some('T' | 't')) => Err(format!(
            "process {pid} was stopped while hpctl talked to it; it will not act on this \
             request: continue it (kill -CONT {pid}) and try again"
        )),
        Err(e) => Err(format!("process {pid}: {e}")),
    }
}

/// Reads and validates the patch file before anything talks to the process.
fn read_patch(file: &PathBuf) -> Result<(Vec<u8>, format::Meta), String> {
    let bytes = std::fs::read(file)
        .map_err(|e| format!("cannot read patch file {}: {e}", file.display()))?;
    let meta = format::read_patch(&bytes).map_err(|e| {
        format!(
            "{} is not a usable patch: {e}; rebuild it with hpbuild",
            file.display()
        )
    })?;
    Ok((bytes, meta))
}

/// What to apply: the validated patch and how.
pub struct ApplyJob {
    bytes: Vec<u8>,
    meta: format::Meta,
    /// Its content hash (hex): what the patch directory records.
    sha256: String,
    switch: SwitchArgs,
    call_sites: bool,
}

impl ApplyJob {
    fn new(file: &PathBuf, switch: SwitchArgs, redirect: Option<Redirect>) -> Result<Self, String> {
        let (bytes, meta) = read_patch(file)?;
        let sha256 = format::hex(&format::verify_content_hash(&bytes).map_err(|e| e.0)?);
        let call_sites = match redirect {
            Some(r) => r == Redirect::CallSite,
            None => meta.prefers_call_sites(),
        };
        Ok(ApplyJob {
            bytes,
            meta,
            sha256,
            switch,
            call_sites,
        })
    }
}

fn apply(pid: u32, job: &ApplyJob) -> Result<Outcome, String> {
    check_process(pid)?;
    trust::check(pid, &job.bytes, &job.meta.patch_id)?;
    let (reply, parked) = exchange(
        pid,
        &Request::Apply {
            patch: job.bytes.clone(),
            opts: job.switch.options(job.call_sites),
        },
    )?;
    Ok(Outcome::applied(pid, &job.meta, reply, job.switch.lazy).parked(&parked))
}

fn revert(pid: u32, sw: &SwitchArgs) -> Result<Outcome, String> {
    check_process(pid)?;
    let (reply, parked) = exchange(pid, &Request::Revert(sw.options(false)))?;
    Ok(Outcome::reverted(pid, reply, sw.lazy).parked(&parked))
}

fn list(pid: u32) -> Result<Outcome, String> {
    check_process(pid)?;
    let (reply, _) = exchange(pid, &Request::List)?;
    Ok(Outcome::listed(pid, reply))
}

/// The patch directory of the build process `pid` runs, where its loader
/// looks (`create`: made if missing); None if it has none.
fn patch_dir_of(pid: u32, create: bool) -> Result<Option<persist::PatchDir>, String> {
    let build_id = buildid::of_file(std::path::Path::new(&format!("/proc/{pid}/exe")))?;
    let Some(root) = persist::root_of_process(pid)? else {
        return match create {
            true => Err(no_root(&format!("process {pid}"))),
            false => Ok(None),
        };
    };
    persist::PatchDir::open(&root, &build_id, create)
}

fn no_root(who: &str) -> String {
    format!(
        "{who} has neither HOTPATCH_DIR nor HOME in its environment: its loader reads no \
         patch directory; set HOTPATCH_DIR for it"
    )
}

/// `apply PID FILE [--persist]`: the patch goes into the directory first
/// (so a process of the build starting meanwhile gets it) and out again if
/// the process refuses it.
fn apply_one(pid: u32, job: &ApplyJob, persist: bool) -> Result<Outcome, String> {
    if !persist {
        return apply(pid, job);
    }
    check_process(pid)?;
    // Not into the directory either if the process would refuse it.
    trust::check(pid, &job.bytes, &job.meta.patch_id)?;
    let dir = patch_dir_of(pid, true)?.expect("created");
    let added = dir.add(&job.bytes, &job.meta.patch_id, &job.sha256)?;
    match apply(pid, job) {
        Ok(o) => Ok(o.note_persisted(&dir.dir, added)),
        Err(e) => {
            if added {
                dir.remove_newest(Some(&job.meta.patch_id))?;
            }
            Err(e)
        }
    }
}

/// `revert PID`: also out of the patch directory, if it is the newest there.
fn revert_one(pid: u32, sw: &SwitchArgs) -> Result<Outcome, String> {
    let outcome = revert(pid, sw)?;
    let Some(id) = outcome.id().map(str::to_string) else {
        return Ok(outcome);
    };
    // A binary without a build-id has no patch directory: nothing to keep.
    let dir = match buildid::of_file(std::path::Path::new(&format!("/proc/{pid}/exe"))) {
        Ok(_) => patch_dir_of(pid, false)?,
        Err(_) => None,
    };
    match dir {
        Some(d) => match d.remove_newest(Some(&id))? {
            Some(_) => Ok(outcome.note_unpersisted(&d.dir)),
            None => Ok(outcome),
        },
        None => Ok(outcome),
    }
}

/// The command's switch flags and whether it prints JSON.
fn json_of(cmd: &Cmd) -> bool {
    match cmd {
        Cmd::Apply { switch, .. } | Cmd::Revert { switch, .. } => switch.json,
        Cmd::List { json, .. } => *json,
    }
}

fn usage_error(msg: &str) -> ! {
    use clap::CommandFactory;
    Cli::command()
        .error(clap::error::ErrorKind::WrongNumberOfValues, msg)
        .exit()
}

/// `apply`'s positional arguments: (PID, FILE), or FILE alone with --exe.
fn apply_args(args: &[String], exe: bool) -> (Option<u32>, PathBuf) {
    match (args, exe) {
        ([file], true) => (None, file.into()),
        ([pid, file], false) => match pid.parse() {
            Ok(pid) => (Some(pid), file.into()),
            Err(_) => usage_error(&format!("PID must be a process id, not {pid:?}")),
        },
        (_, true) => {
            usage_error("with --exe, give the patch file only: hpctl apply --exe PATH FILE")
        }
        (_, false) => usage_error("give a process id and a patch file: hpctl apply PID FILE"),
    }
}

fn run_one(cmd: &Cmd) -> Result<Outcome, String> {
    match cmd {
        Cmd::Apply {
            args,
            persist,
            switch,
            redirect,
            ..
        } => {
            let (pid, file) = apply_args(args, false);
            let job = ApplyJob::new(&file, *switch, *redirect)?;
            apply_one(pid.expect("checked"), &job, *persist)
        }
        Cmd::Revert { pid, switch, .. } => revert_one(pid.expect("clap requires it"), switch),
        Cmd::List { pid, .. } => list(pid.expect("clap requires it")),
    }
}

fn run_many(cmd: &Cmd, exe: &std::path::Path) -> Result<many::Report, String> {
    let bin = exe::Binary::open(exe)?;
    match cmd {
        Cmd::Apply {
            args,
            persist,
            switch,
            redirect,
            ..
        } => {
            let (_, file) = apply_args(args, true);
            let job = ApplyJob::new(&file, *switch, *redirect)?;
            many::apply(&bin, &job, *persist)
        }
        Cmd::Revert { switch, .. } => many::revert(&bin, switch),
        Cmd::List { .. } => many::list(&bin),
    }
}

fn exe_of(cmd: &Cmd) -> Option<&PathBuf> {
    match cmd {
        Cmd::Apply { target, .. } | Cmd::Revert { target, .. } | Cmd::List { target, .. } => {
            target.exe.as_ref()
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = json_of(&cli.cmd);
    let result = match exe_of(&cli.cmd) {
        Some(exe) => run_many(&cli.cmd, exe).map(|r| r.print(json)),
        None => run_one(&cli.cmd).map(|o| {
            o.print(json);
            ExitCode::SUCCESS
        }),
    };
    result.unwrap_or_else(|reason| {
        output::print_error(&reason.replace('\n', " "), json);
        ExitCode::from(1)
    })
}
