//! hpctl: talk to the in-process loader (libhotpatch.a) of a running program.
//!
//! Every failure is reported as one line that says what to do; the exit
//! status is 0 on success and 1 on any failure (2 for usage errors).
//! A patch file is validated before the target process is contacted, so a
//! bad file never reaches it.

use clap::{Parser, Subcommand};
use format::protocol::{self, ClientError, Reply, Request};
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

#[derive(Subcommand)]
enum Cmd {
    /// Apply a patch object (.hpo) to a running process.
    ///
    /// By default future calls get the new code at once and calls already
    /// running finish in the old code; the threads doing so are listed.
    /// With --consistent the switch happens only at a moment when no thread
    /// has any replaced function on its stack (its stack is walked); the
    /// loader retries until --timeout-ms, then fails naming the function and
    /// the thread (an event loop that never returns can never switch this
    /// way).
    Apply {
        pid: u32,
        file: PathBuf,
        /// Switch only when no thread is inside a replaced function.
        #[arg(long)]
        consistent: bool,
        /// How long --consistent waits for that moment.
        #[arg(long, value_name = "MS", default_value_t = protocol::HP_DEFAULT_CONSISTENT_TIMEOUT_MS,
              value_parser = clap::value_parser!(u32).range(1..=protocol::HP_MAX_CONSISTENT_TIMEOUT_MS as i64))]
        timeout_ms: u32,
        /// Print the result as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Revert the most recently applied patch.
    ///
    /// By default the old entries are restored at once and the patch's code
    /// stays mapped (threads inside it finish there; they are listed). With
    /// --consistent the loader waits until no thread has a frame in the
    /// patch's code, then restores the entries and unmaps the code.
    Revert {
        pid: u32,
        /// Wait until no thread is inside the patch's code; then unmap it.
        #[arg(long)]
        consistent: bool,
        /// How long --consistent waits.
        #[arg(long, value_name = "MS", default_value_t = protocol::HP_DEFAULT_CONSISTENT_TIMEOUT_MS,
              value_parser = clap::value_parser!(u32).range(1..=protocol::HP_MAX_CONSISTENT_TIMEOUT_MS as i64))]
        timeout_ms: u32,
        #[arg(long)]
        json: bool,
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
    Ok(())
}

fn exchange(pid: u32, req: &Request) -> Result<Reply, String> {
    // A consistent operation may wait in the loader before it answers.
    let timeout = match req {
        Request::ApplyConsistent(_, ms) | Request::RevertConsistent(ms) => {
            TIMEOUT.max(Duration::from_millis(u64::from(*ms)) + Duration::from_secs(15))
        }
        _ => TIMEOUT,
    };
    match protocol::send(pid, req, timeout) {
        Ok(r) => Ok(r),
        Err(ClientError::NoLoader(_)) => Err(format!(
            "process {pid} has no hotpatch loader listening (link libhotpatch.a with -Wl,--whole-archive)"
        )),
        Err(e) => Err(format!("process {pid}: {e}")),
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The reply's detail lines (threads still running replaced code, ...).
fn details(reply: &Reply) -> Vec<String> {
    reply
        .details
        .iter()
        .filter(|l| !l.is_empty())
        .cloned()
        .collect()
}

fn json_list(items: &[String]) -> String {
    items
        .iter()
        .map(|s| json_str(s))
        .collect::<Vec<_>>()
        .join(",")
}

fn with_notes(message: &str, notes: &[String]) -> String {
    let mut out = message.to_string();
    for n in notes {
        out.push_str("\n  ");
        out.push_str(n);
    }
    out
}

fn run(cmd: &Cmd) -> Result<String, String> {
    match cmd {
        Cmd::Apply {
            pid,
            file,
            consistent,
            timeout_ms,
            json,
        } => {
            check_process(*pid)?;
            let bytes = std::fs::read(file)
                .map_err(|e| format!("cannot read patch file {}: {e}", file.display()))?;
            let meta = format::read_patch(&bytes).map_err(|e| {
                format!(
                    "{} is not a usable patch: {e}; rebuild it with hpbuild",
                    file.display()
                )
            })?;
            let req = if *consistent {
                Request::ApplyConsistent(bytes, *timeout_ms)
            } else {
                Request::Apply(bytes)
            };
            let reply = exchange(*pid, &req)?;
            if !reply.ok {
                return Err(reply.message);
            }
            let notes = details(&reply);
            if *json {
                let funcs: Vec<String> = meta
                    .funcs
                    .iter()
                    .map(|f| {
                        json_str(&if f.is_local() {
                            format::local_symbol_name(&f.file, &f.name)
                        } else {
                            f.name.clone()
                        })
                    })
                    .collect();
                Ok(format!(
                    "{{\"ok\":true,\"pid\":{pid},\"action\":\"apply\",\"id\":{},\"functions\":[{}],\"message\":{},\"notes\":[{}]}}",
                    json_str(&meta.patch_id),
                    funcs.join(","),
                    json_str(&reply.message),
                    json_list(&notes)
                ))
            } else {
                Ok(with_notes(&reply.message, &notes))
            }
        }
        Cmd::Revert {
            pid,
            consistent,
            timeout_ms,
            json,
        } => {
            check_process(*pid)?;
            let req = if *consistent {
                Request::RevertConsistent(*timeout_ms)
            } else {
                Request::Revert
            };
            let reply = exchange(*pid, &req)?;
            if !reply.ok {
                return Err(reply.message);
            }
            let notes = details(&reply);
            if *json {
                let id = reply
                    .message
                    .strip_prefix("reverted ")
                    .unwrap_or("")
                    .split(' ')
                    .next()
                    .unwrap_or("");
                Ok(format!(
                    "{{\"ok\":true,\"pid\":{pid},\"action\":\"revert\",\"id\":{},\"message\":{},\"notes\":[{}]}}",
                    json_str(id),
                    json_str(&reply.message),
                    json_list(&notes)
                ))
            } else {
                Ok(with_notes(&reply.message, &notes))
            }
        }
        Cmd::List { pid, json } => {
            check_process(*pid)?;
            let reply = exchange(*pid, &Request::List)?;
            if !reply.ok {
                return Err(reply.message);
            }
            let lines: Vec<&String> = reply.details.iter().filter(|l| !l.is_empty()).collect();
            if *json {
                let patches: Vec<String> = lines
                    .iter()
                    .map(|l| {
                        let mut words = l.split(' ');
                        let id = words.next().unwrap_or("");
                        let funcs: Vec<String> = words.map(json_str).collect();
                        format!(
                            "{{\"id\":{},\"functions\":[{}]}}",
                            json_str(id),
                            funcs.join(",")
                        )
                    })
                    .collect();
                Ok(format!(
                    "{{\"ok\":true,\"pid\":{pid},\"action\":\"list\",\"patches\":[{}]}}",
                    patches.join(",")
                ))
            } else if lines.is_empty() {
                Ok(format!("no patches applied to process {pid}"))
            } else {
                Ok(lines
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = match &cli.cmd {
        Cmd::Apply { json, .. } | Cmd::Revert { json, .. } | Cmd::List { json, .. } => *json,
    };
    match run(&cli.cmd) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            let reason = reason.replace('\n', " ");
            if json {
                println!("{{\"ok\":false,\"error\":{}}}", json_str(&reason));
            }
            eprintln!("hpctl: {reason}");
            ExitCode::from(1)
        }
    }
}
