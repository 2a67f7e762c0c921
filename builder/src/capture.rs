//! `hpbuild capture -- make …`: records the exact compile command of every
//! translation unit the project's own build runs, for projects that do not
//! write compile_commands.json (plain Makefiles such as Lua's), and its link
//! and archive steps in link_commands.json (`linkrec`), which say what each
//! unit is linked into.
//!
//! The build runs with a directory of compiler shims first in PATH (`cc`,
//! `gcc`, `clang`, versioned and triplet names found in PATH). A shim is a
//! two-line script that execs `hpbuild cc-wrap NAME "$@"` (see `ccwrap`), so
//! a Makefile's `CC= gcc -std=gnu99` is caught without editing the Makefile
//! or overriding CC — which matters because Makefiles split CC on spaces and
//! some tools exec it as a single path. A compiler named by absolute path
//! bypasses PATH; the error says so.

use crate::bail;
use crate::ccwrap::{LINKS_ENV, LOG_ENV, PATH_ENV};
use crate::error::{Error, Result};
use crate::linkrec::{self, LinkStep};
use serde::{Deserialize, Serialize};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// One recorded compile, as written to the log by `cc-wrap` and then to
/// compile_commands.json (the `output` field is part of the JSON format).
#[derive(Serialize, Deserialize, Clone)]
pub struct Recorded {
    pub directory: String,
    pub file: String,
    pub arguments: Vec<String>,
    pub output: String,
}

/// Tool names to shim: fixed ones plus every `gcc-12`, `clang-16`,
/// `x86_64-linux-gnu-gcc-12`, `x86_64-linux-gnu-ar`… present in PATH. The
/// archivers are there for the link record (`linkrec`).
fn tool_names(path: &str) -> Vec<String> {
    let mut names: Vec<String> = ["cc", "c99", "c89", "gcc", "clang", "ar", "gcc-ar"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for dir in std::env::split_paths(path) {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_tool = (linkrec::is_compiler(&name) || linkrec::is_archiver(&name))
                && !names.contains(&name);
            if is_tool {
                names.push(name);
            }
        }
    }
    names
}

/// Runs `cmd` in the current directory with the shims in PATH and writes
/// `<dir>/compile_commands.json`.
pub fn run(dir: &Path, cmd: &[String]) -> Result<()> {
    if cmd.is_empty() {
        bail!(
            "usage: hpbuild capture [--dir DIR] -- BUILD-COMMAND… (e.g. `hpbuild capture -- make`)"
        );
    }
    let me = std::env::current_exe()
        .map_err(|e| Error::new(format!("cannot find the hpbuild executable: {e}")))?;
    let scratch = tempfile::Builder::new()
        .prefix("hpbuild-capture.")
        .tempdir()
        .map_err(|e| Error::new(format!("cannot create a scratch directory: {e}")))?;
    let shims = scratch.path().join("bin");
    let log = scratch.path().join("commands.jsonl");
    let links_log = scratch.path().join("links.jsonl");
    fs::create_dir_all(&shims).map_err(|e| Error::new(format!("cannot create shims: {e}")))?;
    let orig_path = std::env::var("PATH").unwrap_or_default();
    for name in tool_names(&orig_path) {
        write_shim(&shims.join(&name), &me, &name)?;
    }
    let status = Command::new(&cmd[0])
        .args(&cmd[1..])
        .env("PATH", format!("{}:{orig_path}", shims.display()))
        .env(PATH_ENV, &orig_path)
        .env(LOG_ENV, &log)
        .env(LINKS_ENV, &links_log)
        .status()
        .map_err(|e| Error::new(format!("cannot run the build command {}: {e}", cmd[0])))?;
    if !status.success() {
        bail!(
            "the build command `{}` failed ({status}); fix the build first",
            cmd.join(" ")
        );
    }
    let entries = read_log(&log)?;
    if entries.is_empty() {
        bail!(
            "`{}` compiled no C file through cc/gcc/clang: run it on a clean tree (e.g. `make clean` first); a compiler given by absolute path (CC=/usr/bin/gcc) bypasses the capture",
            cmd.join(" ")
        );
    }
    let out = dir.join("compile_commands.json");
    let merged = merge(&out, &entries);
    let json = serde_json::to_string_pretty(&merged).expect("entries serialise");
    fs::write(&out, json)
        .map_err(|e| Error::new(format!("cannot write {}: {e}", out.display())))?;
    let links = write_links(dir, &links_log)?;
    eprintln!(
        "hpbuild: recorded {} compile command(s) in {} ({} unit(s) in all){links}",
        entries.len(),
        out.display(),
        merged.len()
    );
    Ok(())
}

/// Writes `<dir>/link_commands.json`: the existing steps, updated by this
/// build's. Returns the summary's addition.
fn write_links(dir: &Path, log: &Path) -> Result<String> {
    let new = read_jsonl::<LinkStep>(log)?;
    if new.is_empty() {
        return Ok(String::new());
    }
    let out = dir.join(linkrec::FILE_NAME);
    let old: Vec<LinkStep> = fs::read_to_string(&out)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let merged = merge_links(old, &new);
    let json = serde_json::to_string_pretty(&merged).expect("steps serialise");
    fs::write(&out, json)
        .map_err(|e| Error::new(format!("cannot write {}: {e}", out.display())))?;
    Ok(format!(
        " and {} link step(s) in {}",
        new.len(),
        out.display()
    ))
}

/// The last step writing an output wins, except that an archive that
/// existed keeps the members earlier steps put in it (`ar r` adds or
/// replaces members, and an incremental build adds only the objects it
/// rebuilt); one the step created holds its members only.
fn merge_links(mut steps: Vec<LinkStep>, new: &[LinkStep]) -> Vec<LinkStep> {
    for n in new {
        let same = |s: &LinkStep| s.directory == n.directory && s.output == n.output;
        let mut step = n.clone();
        step.fresh = false; // recorded: what it says is already applied
        if let Some(old) = steps.iter().find(|s| same(s)) {
            let adds = old.kind == linkrec::Kind::Archive && n.kind == linkrec::Kind::Archive;
            if adds && !n.fresh {
                let mut members = old.inputs.clone();
                members.extend(n.inputs.iter().filter(|m| !old.inputs.contains(m)).cloned());
                step.inputs = members;
            }
        }
        steps.retain(|s| !same(s));
        steps.push(step);
    }
    steps
}

/// An incremental build recompiles only what changed: keep the existing
/// database's entries for the units this build did not compile.
fn merge(existing: &Path, new: &[Recorded]) -> Vec<serde_json::Value> {
    let old: Vec<serde_json::Value> = fs::read_to_string(existing)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let key = |v: &serde_json::Value| {
        let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
        (s("directory"), s("file"), s("output"))
    };
    let mut out: Vec<serde_json::Value> = old
        .into_iter()
        .filter(|v| {
            let k = key(v);
            !new.iter()
                .any(|r| (&r.directory, &r.file, &r.output) == (&k.0, &k.1, &k.2))
        })
        .collect();
    out.extend(
        new.iter()
            .map(|r| serde_json::to_value(r).expect("record serialises")),
    );
    out
}

fn write_shim(path: &Path, hpbuild: &Path, name: &str) -> Result<()> {
    let quoted = shlex::try_quote(&hpbuild.to_string_lossy())
        .map(|q| q.into_owned())
        .unwrap_or_else(|_| hpbuild.display().to_string());
    let text = format!("#!/bin/sh\nexec {quoted} cc-wrap {name} \"$@\"\n");
    fs::write(path, text)
        .and_then(|_| fs::set_permissions(path, fs::Permissions::from_mode(0o755)))
        .map_err(|e| Error::new(format!("cannot write shim {}: {e}", path.display())))
}

/// The log's entries, the last compile of each (directory, file, output)
/// winning — a unit rebuilt during the build keeps its final command.
fn read_log(log: &Path) -> Result<Vec<Recorded>> {
    let mut out: Vec<Recorded> = Vec::new();
    for r in read_jsonl::<Recorded>(log)? {
        out.retain(|o| (&o.directory, &o.file, &o.output) != (&r.directory, &r.file, &r.output));
        out.push(r);
    }
    Ok(out)
}

/// The records of a JSON-lines log, in order (none if it was never written).
fn read_jsonl<T: serde::de::DeserializeOwned>(log: &Path) -> Result<Vec<T>> {
    let Ok(text) = fs::read_to_string(log) else {
        return Ok(Vec::new());
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line)
                .map_err(|e| Error::new(format!("corrupt capture log {}: {e}", log.display())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linkrec::from_ar;

    fn ar(args: &str, fresh: bool) -> LinkStep {
        let args: Vec<String> = args.split_whitespace().map(String::from).collect();
        LinkStep {
            fresh,
            ..from_ar("/b", &args).unwrap()
        }
    }

    #[test]
    fn an_archive_keeps_earlier_members_unless_the_step_created_it() {
        let built = merge_links(Vec::new(), &[ar("rcs lib.a a.o b.o", true)]);
        let added = merge_links(built.clone(), &[ar("rcs lib.a c.o", false)]);
        assert_eq!(added[0].inputs, ["a.o", "b.o", "c.o"]);
        let rebuilt = merge_links(added, &[ar("rcs lib.a a.o", true)]);
        assert_eq!(rebuilt[0].inputs, ["a.o"]);
        assert!(!rebuilt[0].fresh);
    }
}
