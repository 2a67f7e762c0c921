//! What hpctl prints: one typed outcome per command, as text or (with
//! `--json`) as one JSON object on stdout. Errors go to stderr as one line
//! (and as `{"ok":false,"error":...}` with `--json`).

use format::protocol::{parse_list_line, Reply};
use serde::Serialize;

/// One listed patch.
#[derive(Serialize)]
pub struct Listed {
    id: String,
    functions: Vec<String>,
    /// Call sites redirected per function (present for call-site patches).
    #[serde(skip_serializing_if = "Option::is_none")]
    call_sites: Option<Vec<usize>>,
}

/// The result of one command.
#[derive(Serialize)]
pub struct Outcome {
    ok: bool,
    pid: u32,
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    functions: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    /// Threads still running old code after a lazy switch, stacks that
    /// could not be walked completely.
    #[serde(skip_serializing_if = "Option::is_none")]
    notes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patches: Option<Vec<Listed>>,
    /// Per stop hpctl made: microseconds from the first thread interrupted
    /// to the last one let go (how long the program was held).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    parked_us: Vec<u64>,
    /// Notes are warnings: the switch was lazy, old code may still run.
    #[serde(skip)]
    warn: bool,
}

fn notes(reply: &Reply) -> Vec<String> {
    reply
        .details
        .iter()
        .filter(|l| !l.is_empty())
        .cloned()
        .collect()
}

impl Outcome {
    fn new(pid: u32, action: &'static str) -> Outcome {
        Outcome {
            ok: true,
            pid,
            action,
            id: None,
            functions: None,
            message: None,
            notes: None,
            patches: None,
            parked_us: Vec::new(),
            warn: false,
        }
    }

    pub fn applied(pid: u32, meta: &format::Meta, reply: Reply, lazy: bool) -> Outcome {
        let functions = meta
            .funcs
            .iter()
            .map(|f| match f.is_local() {
                true => format::local_symbol_name(&f.file, &f.name),
                false => f.name.clone(),
            })
            .collect();
        Outcome {
            id: Some(meta.patch_id.clone()),
            functions: Some(functions),
            notes: Some(notes(&reply)),
            message: Some(reply.message),
            warn: lazy,
            ..Outcome::new(pid, "apply")
        }
    }

    pub fn reverted(pid: u32, reply: Reply, lazy: bool) -> Outcome {
        let id = reply.reverted_id().map(str::to_string);
        Outcome {
            id,
            notes: Some(notes(&reply)),
            message: Some(reply.message),
            warn: lazy,
            ..Outcome::new(pid, "revert")
        }
    }

    pub fn parked(mut self, stops: &[std::time::Duration]) -> Outcome {
        self.parked_us = stops.iter().map(|d| d.as_micros() as u64).collect();
        self
    }

    pub fn listed(pid: u32, reply: Reply) -> Outcome {
        let patches = reply
            .details
            .iter()
            .filter_map(|l| parse_list_line(l))
            .map(|p| Listed {
                id: p.id,
                call_sites: p.functions.iter().map(|f| f.call_sites).collect(),
                functions: p.functions.into_iter().map(|f| f.name).collect(),
            })
            .collect();
        Outcome {
            patches: Some(patches),
            ..Outcome::new(pid, "list")
        }
    }

    pub fn print(&self, json: bool) {
        if json {
            println!(
                "{}",
                serde_json::to_string(self).expect("plain data serialises")
            );
            return;
        }
        if let Some(patches) = &self.patches {
            self.print_list(patches);
            return;
        }
        println!("{}", self.message.as_deref().unwrap_or(""));
        for n in self.notes.iter().flatten() {
            if self.warn {
                eprintln!("hpctl: warning: {n}");
            } else {
                println!("  {n}");
            }
        }
    }

    fn print_list(&self, patches: &[Listed]) {
        if patches.is_empty() {
            println!("no patches applied to process {}", self.pid);
        }
        for p in patches {
            let funcs: Vec<String> = match &p.call_sites {
                Some(n) => p
                    .functions
                    .iter()
                    .zip(n)
                    .map(|(f, n)| format!("{f} ({n} call sites)"))
                    .collect(),
                None => p.functions.clone(),
            };
            println!("{} {}", p.id, funcs.join(" "));
        }
    }
}

#[derive(Serialize)]
struct Failure<'a> {
    ok: bool,
    error: &'a str,
}

pub fn print_error(reason: &str, json: bool) {
    if json {
        let f = Failure {
            ok: false,
            error: reason,
        };
        println!(
            "{}",
            serde_json::to_string(&f).expect("plain data serialises")
        );
    }
    eprintln!("hpctl: {reason}");
}
