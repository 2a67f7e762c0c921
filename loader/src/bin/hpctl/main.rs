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

mod output;
mod ptrace;
mod sites;

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
    Apply {
        pid: u32,
        file: PathBuf,
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
    Revert {
        pid: u32,
        #[command(flatten)]
        switch: SwitchArgs,
    },
    /// List the patches applied to a process, oldest first.
    List {
        pid: u32,
        #[arg(long)]
        json: bool,
    },
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
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name's closing parenthesis.
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    match state {
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

fn apply(
    pid: u32,
    file: &PathBuf,
    sw: &SwitchArgs,
    redirect: Option<Redirect>,
) -> Result<Outcome, String> {
    check_process(pid)?;
    let (patch, meta) = read_patch(file)?;
    let call_sites = match redirect {
        Some(r) => r == Redirect::CallSite,
        None => meta.prefers_call_sites(),
    };
    let (reply, parked) = exchange(
        pid,
        &Request::Apply {
            patch,
            opts: sw.options(call_sites),
        },
    )?;
    Ok(Outcome::applied(pid, &meta, reply, sw.lazy).parked(&parked))
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

fn run(cmd: &Cmd) -> Result<Outcome, String> {
    match cmd {
        Cmd::Apply {
            pid,
            file,
            switch,
            redirect,
        } => apply(*pid, file, switch, *redirect),
        Cmd::Revert { pid, switch } => revert(*pid, switch),
        Cmd::List { pid, .. } => list(*pid),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = match &cli.cmd {
        Cmd::Apply { switch, .. } | Cmd::Revert { switch, .. } => switch.json,
        Cmd::List { json, .. } => *json,
    };
    match run(&cli.cmd) {
        Ok(outcome) => {
            outcome.print(json);
            ExitCode::SUCCESS
        }
        Err(reason) => {
            output::print_error(&reason.replace('\n', " "), json);
            ExitCode::from(1)
        }
    }
}
