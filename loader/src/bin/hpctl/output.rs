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

/// The result of one command (with `--exe`: on one process).
#[derive(Serialize)]
pub struct Outcome {
    pub ok: bool,
    pid: u32,
    action: &'static str,
    /// With `--exe`: "ok", "failed" or "skipped" (not acted on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    /// Whether the process changed (false: the patch was applied already).
    #[serde(skip_serializing_if = "Option::is_none")]
    changed: Option<bool>,
    /// The patch directory this command added the patch to or removed it from.
    #[serde(skip_serializing_if = "Option::is_none")]
    persisted: Option<String>,
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
            status: None,
            changed: None,
            persisted: None,
            message: None,
            notes: None,
            patches: None,
            parked_us: Vec::new(),
            warn: false,
        }
    }

    /// A process the command could not act on (`--exe`), and why.
    pub fn failed(pid: u32, action: &'static str, error: String) -> Outcome {
        Outcome {
            ok: false,
            status: Some("failed"),
            message: Some(error),
            ..Outcome::new(pid, action)
        }
    }

    /// A process the command did not act on (`--exe`), and why.
    pub fn skipped(pid: u32, action: &'static str, reason: String) -> Outcome {
        Outcome {
            ok: false,
            status: Some("skipped"),
            message: Some(reason),
            ..Outcome::new(pid, action)
        }
    }

    /// The patch `id` is applied to the process already: nothing to do.
    pub fn already(pid: u32, id: &str) -> Outcome {
        Outcome {
            id: Some(id.to_string()),
            changed: Some(false),
            message: Some(format!("{id} is applied already")),
            ..Outcome::new(pid, "apply")
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The ids of the patches a `list` found, oldest first.
    pub fn listed_ids(&self) -> Vec<&str> {
        self.patches
            .iter()
            .flatten()
            .map(|p| p.id.as_str())
            .collect()
    }

    /// Marks an outcome of `--exe` as acted on.
    pub fn done(mut self) -> Outcome {
        self.status = Some(if self.ok { "ok" } else { "failed" });
        self
    }

    pub fn note_persisted(mut self, dir: &std::path::Path, added: bool) -> Outcome {
        let m = self.message.take().unwrap_or_default();
        self.message = Some(match added {
            true => format!("{m}; persisted in {}", dir.display()),
            false => format!("{m}; already persisted in {}", dir.display()),
        });
        self.persisted = Some(dir.display().to_string());
        self
    }

    pub fn note_unpersisted(mut self, dir: &std::path::Path) -> Outcome {
        let m = self.message.take().unwrap_or_default();
        self.message = Some(format!("{m}; removed from {}", dir.display()));
        self.persisted = Some(dir.display().to_string());
        self
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
            changed: Some(true),
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
            changed: Some(true),
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

    /// One line for one process of `--exe` (`PID: what happened`), its
    /// warnings on stderr; with `json`, the outcome as one JSON line.
    pub fn print_line(&self, json: bool) {
        if json {
            return self.print(true);
        }
        let pid = self.pid;
        match (self.status, &self.patches) {
            (Some("skipped"), _) => println!("{pid}: skipped: {}", self.text()),
            (Some("failed"), _) => println!("{pid}: failed: {}", self.text()),
            (_, Some(p)) if p.is_empty() => println!("{pid}: no patches"),
            (_, Some(p)) => {
                let each: Vec<String> = p
                    .iter()
                    .map(|p| format!("{} ({})", p.id, p.functions.join(" ")))
                    .collect();
                println!("{pid}: {}", each.join(", "));
            }
            _ => println!("{pid}: {}", self.text()),
        }
        for n in self.notes.iter().flatten() {
            match self.warn {
                true => eprintln!("hpctl: warning: process {pid}: {n}"),
                false => println!("{pid}:   {n}"),
            }
        }
    }

    fn text(&self) -> &str {
        self.message.as_deref().unwrap_or("")
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

/// What `--exe` changed in a patch directory (one JSON line of its own).
#[derive(Serialize)]
pub struct DirNote {
    pub ok: bool,
    pub action: &'static str,
    pub dir: String,
    pub changed: bool,
    pub message: String,
}

impl DirNote {
    pub fn print(&self, json: bool) {
        match json {
            true => println!(
                "{}",
                serde_json::to_string(self).expect("plain data serialises")
            ),
            false => println!("{}", self.message),
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
