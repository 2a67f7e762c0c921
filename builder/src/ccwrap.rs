//! `hpbuild cc-wrap NAME ARGS…` (hidden): the compiler shim behind
//! `hpbuild capture`. Runs the real compiler exactly as asked, and when it
//! compiled C sources (to objects, or compiled and linked them in one
//! command: then the record is the compile half), appends one record per
//! source to the capture log, and a record of each link or archive step
//! (`linkrec`; the `ar` shims run here too). The build's result is the compiler's: the wrapper never
//! changes arguments and exits with the compiler's status.

use crate::capture::Recorded;
use crate::linkrec;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

/// The PATH the build had before the shims were put in front.
pub const PATH_ENV: &str = "HPBUILD_CAPTURE_PATH";
/// The JSON-lines log the records are appended to.
pub const LOG_ENV: &str = "HPBUILD_CAPTURE_LOG";
/// The JSON-lines log of link and archive steps (`linkrec`).
pub const LINKS_ENV: &str = "HPBUILD_CAPTURE_LINKS";

/// Options whose value is the next argument (so it is not a source file).
pub const TAKES_VALUE: &[&str] = &[
    "-o",
    "-MF",
    "-MT",
    "-MQ",
    "-I",
    "-D",
    "-U",
    "-include",
    "-imacros",
    "-isystem",
    "-iquote",
    "-idirafter",
    "-x",
    "-L",
    "-l",
    "-Xlinker",
    "-Xassembler",
    "-Xpreprocessor",
    "--param",
    "-aux-info",
    "-T",
    "-u",
    "-z",
];

pub fn run(args: &[String]) -> i32 {
    let Some((name, rest)) = args.split_first() else {
        eprintln!("hpbuild cc-wrap: usage: hpbuild cc-wrap COMPILER ARGS…");
        return 2;
    };
    let real = real_compiler(name);
    // Before the command runs: whether an archive is new is known only then.
    let link = link_step(name, rest);
    let status = match Command::new(&real).args(rest).status() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hpbuild cc-wrap: cannot run {}: {e}", real.display());
            return 127;
        }
    };
    if status.success() {
        if let Err(e) = record(name, rest).and_then(|()| record_link(link)) {
            // A lost record is a capture bug, not a build failure: say it.
            eprintln!("hpbuild cc-wrap: cannot record the compile command: {e}");
        }
    }
    status.code().unwrap_or(1)
}

/// The compiler the build meant: `name` looked up in the PATH the build had
/// before the shims (so the shim never finds itself).
fn real_compiler(name: &str) -> PathBuf {
    if name.contains('/') {
        return PathBuf::from(name);
    }
    let path = std::env::var(PATH_ENV).unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// The C sources among the arguments (skipping option values).
fn sources(args: &[String]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut skip = false;
    for (i, a) in args.iter().enumerate() {
        if skip {
            skip = false;
            continue;
        }
        if TAKES_VALUE.contains(&a.as_str()) {
            skip = true;
            continue;
        }
        if !a.starts_with('-') && a.ends_with(".c") {
            out.push(i);
        }
    }
    out
}

/// Only real compiles to objects are units: `-c` present, no
/// preprocess-only or assembly-only mode.
fn is_compile(args: &[String]) -> bool {
    args.iter().any(|a| a == "-c") && !is_other_mode(args)
}

fn is_other_mode(args: &[String]) -> bool {
    args.iter()
        .any(|a| matches!(a.as_str(), "-E" | "-S" | "-M" | "-MM" | "-fsyntax-only"))
}

/// `cc -o shell shell.c sqlite3.o -lm`: C sources compiled and linked in one
/// command (no `-c`). Each source is a unit too.
fn is_compile_and_link(args: &[String]) -> bool {
    !args.iter().any(|a| a == "-c") && !is_other_mode(args) && !sources(args).is_empty()
}

/// The compile half of a compile-and-link command for the source at `i`:
/// the other inputs (sources, objects, archives), the output and the link
/// options dropped, `-c` added.
fn compile_half(name: &str, args: &[String], i: usize, srcs: &[usize]) -> Vec<String> {
    let mut out = vec![name.to_string(), "-c".to_string()];
    let mut skip = false;
    for (j, a) in args.iter().enumerate() {
        if skip {
            skip = false;
            continue;
        }
        let link_only = matches!(a.as_str(), "-o" | "-l" | "-L" | "-Xlinker" | "-T");
        if link_only {
            skip = true;
            continue;
        }
        let input = (!a.starts_with('-') && srcs.contains(&j)) || linkrec::is_link_input(a);
        let link_flag = ["-l", "-L", "-Wl,", "-o"].iter().any(|p| a.starts_with(p));
        if (input && j != i) || link_flag {
            continue;
        }
        out.push(a.clone());
    }
    out
}

fn output_of(args: &[String], source: &str) -> String {
    if let Some(i) = args.iter().position(|a| a == "-o") {
        if let Some(o) = args.get(i + 1) {
            return o.clone();
        }
    }
    if let Some(o) = args.iter().find_map(|a| a.strip_prefix("-o")) {
        return o.to_string();
    }
    crate::linkrec::object_for_source(source)
}

fn record(name: &str, args: &[String]) -> std::io::Result<()> {
    let Ok(log) = std::env::var(LOG_ENV) else {
        return Ok(());
    };
    if linkrec::is_archiver(name) {
        return Ok(());
    }
    let linked = is_compile_and_link(args);
    if !is_compile(args) && !linked {
        return Ok(());
    }
    let srcs = sources(args);
    let directory = std::env::current_dir()?.to_string_lossy().into_owned();
    let mut lines = String::new();
    for &i in &srcs {
        // `cc -c a.c b.c` is two units: each entry keeps only its own source.
        let arguments = if linked {
            compile_half(name, args, i, &srcs)
        } else {
            let mut a = vec![name.to_string()];
            a.extend(
                args.iter()
                    .enumerate()
                    .filter(|(j, _)| *j == i || !srcs.contains(j))
                    .map(|(_, a)| a.clone()),
            );
            a
        };
        let output = if linked {
            output_of(&[], &args[i]) // the object the compile half would write
        } else {
            output_of(args, &args[i])
        };
        let r = Recorded {
            directory: directory.clone(),
            file: args[i].clone(),
            output,
            arguments,
        };
        lines.push_str(&serde_json::to_string(&r).expect("record serialises"));
        lines.push('\n');
    }
    append(&log, &lines)
}

/// The link or archive step a command is, if any. An archive the command
/// creates (none was there before it ran) is `fresh`: it holds only the
/// members named here.
fn link_step(name: &str, args: &[String]) -> Option<linkrec::LinkStep> {
    let directory = std::env::current_dir().ok()?.to_string_lossy().into_owned();
    if !linkrec::is_archiver(name) {
        return linkrec::from_cc(&directory, args);
    }
    let mut step = linkrec::from_ar(&directory, args)?;
    step.fresh = !std::path::Path::new(&step.output).exists();
    Some(step)
}

/// A link or archive step, to the links log.
fn record_link(step: Option<linkrec::LinkStep>) -> std::io::Result<()> {
    let (Ok(log), Some(step)) = (std::env::var(LINKS_ENV), step) else {
        return Ok(());
    };
    let line = serde_json::to_string(&step).expect("step serialises");
    append(&log, &format!("{line}\n"))
}

/// One O_APPEND write per command keeps parallel (`make -j`) records whole.
fn append(log: &str, lines: &str) -> std::io::Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?
        .write_all(lines.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn finds_sources_not_option_values() {
        let a = v("-std=gnu99 -O2 -I inc -o x.o -c lapi.c -include pre.c");
        assert_eq!(sources(&a), vec![7]);
        assert!(is_compile(&a));
        assert_eq!(output_of(&a, "lapi.c"), "x.o");
    }

    #[test]
    fn link_and_preprocess_are_not_units() {
        assert!(!is_compile(&v("-o lua lua.o liblua.a -lm")));
        assert!(!is_compile_and_link(&v("-o lua lua.o liblua.a -lm")));
        assert!(!is_compile(&v("-M -c a.c")));
        assert_eq!(output_of(&v("-c src/a.c"), "src/a.c"), "a.o");
    }

    #[test]
    fn compile_and_link_in_one_command_is_a_unit() {
        let a = v("-O2 -DSQLITE_X -I. -o sqlite3 shell.c sqlite3.o -lm -ldl -Wl,-z,now");
        assert!(is_compile_and_link(&a));
        let srcs = sources(&a);
        assert_eq!(
            compile_half("gcc", &a, srcs[0], &srcs),
            v("gcc -c -O2 -DSQLITE_X -I. shell.c")
        );
        assert_eq!(output_of(&[], "shell.c"), "shell.o");
    }
}
