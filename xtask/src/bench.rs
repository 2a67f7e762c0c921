//! `cargo xtask bench`: what live patching costs, as ratios measured side by
//! side in one run (the machine is noisy; absolute times mean little):
//!
//! * build — hpbuild on a large translation unit vs. the two plain compiles
//!   it cannot avoid (original and patched);
//! * call — a call through a patched function's entry jump vs. the same call
//!   before the patch;
//! * pause — the longest stall a busy thread sees while a patch is applied
//!   vs. its longest stall in a quiet window of the same length;
//! * build — hpbuild against one plain compile of a 3000-function unit,
//!   with an empty object cache and with a warm one (`cargo xtask bench
//!   build`);
//! * memory — resident memory of the program with the loader linked in vs.
//!   without it;
//! * apply — `hpctl apply` wall time vs. `hpctl list`, and the loader's time
//!   per function vs. its 1 µs target, for patches of 1 to 1000 functions
//!   (`bench/apply.rs`; `cargo xtask bench apply` runs only these);
//! * calls — a call to a patched function against a plain build: loader
//!   linked, entry jump, rewritten call site (`bench/calls.rs`; `cargo xtask
//!   bench calls`);
//! * stop — how long a busy thread is blocked while all threads are parked
//!   for an apply or revert, ptrace stop vs. the loader's signal stop, and
//!   the `EINTR` the program sees (`bench/stop.rs`; `cargo xtask bench stop`).

mod apply;
mod calls;
pub mod fixture;
mod stop;

use crate::tools::{self, workspace};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

pub fn run() -> Result<(), String> {
    let only = std::env::args().nth(2);
    let only = only.as_deref();
    if !matches!(only, None | Some("build" | "apply" | "calls" | "stop")) {
        return Err(format!(
            "unknown bench {:?} (build, apply, calls or stop; none for all)",
            only.unwrap_or_default()
        ));
    }
    let all = only.is_none();
    tools::release_binaries()?;
    let (dir, loader) = fixture::workdir("bench")?;
    let mut rows = Vec::new();
    let mut tables = Vec::new();
    if all || only == Some("build") {
        rows.extend(build_ratio(&dir)?);
    }
    if all {
        rows.extend(runtime_rows(&dir)?);
    }
    if all || only == Some("apply") {
        rows.extend(apply::rows(&dir, &loader)?);
    }
    type Bench = fn(&Path, &Path) -> Result<(Vec<Row>, String), String>;
    for (name, bench) in [("calls", calls::rows as Bench), ("stop", stop::rows)] {
        if all || only == Some(name) {
            let (r, table) = bench(&dir, &loader)?;
            rows.extend(r);
            tables.push(table);
        }
    }
    for t in &tables {
        println!("{t}");
    }
    println!(
        "reproduce: cargo xtask bench{}\n",
        only.map_or(String::new(), |o| format!(" {o}"))
    );
    println!("| metric | baseline | with hpbuild | ratio |\n|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.2} |",
            r.metric, r.baseline, r.measured, r.ratio
        );
    }
    if std::env::var_os("HPBUILD_BENCH_KEEP").is_some() {
        eprintln!("bench files kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

struct Row {
    metric: String,
    baseline: String,
    measured: String,
    ratio: f64,
}

pub fn bin(name: &str) -> PathBuf {
    workspace().join("target/release").join(name)
}

fn timed(cmd: &mut Command) -> Result<f64, String> {
    let start = Instant::now();
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(start.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A translation unit of `n` small functions; the fix edits one of them.
fn synthetic_unit(n: usize, fixed: bool) -> String {
    let mut s = String::from("#include <stdio.h>\nlong total;\n");
    for i in 0..n {
        let k = if fixed && i == n / 2 { i + 1 } else { i };
        s += &format!(
            "long f{i}(long x)\n{{\n    if (x > {k}) total += x;\n    return x * {k} + {i};\n}}\n"
        );
    }
    s
}

fn build_ratio(dir: &Path) -> Result<Vec<Row>, String> {
    let (base, patched) = (dir.join("big"), dir.join("big-fixed"));
    for (d, fixed) in [(&base, false), (&patched, true)] {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
        std::fs::write(d.join("big.c"), synthetic_unit(3000, fixed)).map_err(|e| e.to_string())?;
    }
    let db = format!(
        r#"[{{"directory": "{}", "file": "big.c", "arguments": ["cc", "-O2", "-g", "-c", "big.c", "-o", "big.o"]}}]"#,
        base.display()
    );
    std::fs::write(base.join("compile_commands.json"), db).map_err(|e| e.to_string())?;
    let diff = Command::new("diff")
        .args(["-u", "big/big.c", "big-fixed/big.c"])
        .current_dir(dir)
        .output();
    let diff = diff.map_err(|e| e.to_string())?.stdout;
    std::fs::write(dir.join("big.patch"), diff).map_err(|e| e.to_string())?;

    // Per round, side by side: one plain compile of the unit, hpbuild with
    // an empty object cache (cold: the first patch against a base), and
    // again with that cache (warm: the git hook's next patch, or a retry).
    let (mut plain, mut cold, mut warm) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..3 {
        plain.push(timed(Command::new("cc").current_dir(&base).args([
            "-O2",
            "-g",
            "-c",
            "big.c",
            "-o",
            "/dev/null",
        ]))?);
        let cache = dir.join(format!("cache{round}"));
        let hpbuild = || {
            let mut c = Command::new(bin("hpbuild"));
            c.env("HPBUILD_CACHE", &cache)
                .arg("--base")
                .arg(&base)
                .arg("--diff")
                .arg(dir.join("big.patch"))
                .arg("-o")
                .arg(dir.join("big.hpo"));
            c
        };
        cold.push(timed(&mut hpbuild())?);
        warm.push(timed(&mut hpbuild())?);
    }
    let (p, c, w) = (median(plain), median(cold), median(warm));
    let row = |what: &str, t: f64| Row {
        metric: format!("build: 3000-function unit, one edited, {what} (s)"),
        baseline: format!("{p:.2} (one plain compile)"),
        measured: format!("{t:.2} (hpbuild)"),
        ratio: t / p,
    };
    Ok(vec![
        row("cold cache (target ≤ 1.2×)", c),
        row("warm cache (target ≤ 1.05×)", w),
    ])
}

/// The bench program, driven line by line.
struct Program {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Program {
    fn start(exe: &Path) -> Result<Program, String> {
        Program::start_logged(exe, &exe.with_extension("log"))
    }

    fn start_logged(exe: &Path, log: &Path) -> Result<Program, String> {
        let mut child = fixture::spawn(exe, log)?;
        let input = child.stdin.take().expect("piped");
        let output = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Program {
            child,
            input,
            output,
        })
    }

    fn ask(&mut self, cmd: &str) -> Result<String, String> {
        writeln!(self.input, "{cmd}").map_err(|e| e.to_string())?;
        let mut line = String::new();
        self.output
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        Ok(line.trim().to_string())
    }

    fn number(&mut self, cmd: &str) -> Result<f64, String> {
        let answer = self.ask(cmd)?;
        answer
            .split_whitespace()
            .next()
            .and_then(|w| w.parse().ok())
            .ok_or(format!("bench program answered {answer:?} to {cmd:?}"))
    }

    /// Best of five: the least disturbed run is the closest to the cost.
    fn ns_per_call(&mut self) -> Result<f64, String> {
        let runs: Result<Vec<f64>, String> =
            (0..5).map(|_| self.number("calls 20000000")).collect();
        Ok(runs?.into_iter().fold(f64::INFINITY, f64::min))
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn build_program(dir: &Path, with_loader: bool) -> Result<PathBuf, String> {
    let src = workspace().join("fixtures/bench/bench.c");
    let exe = dir.join(if with_loader { "bench" } else { "bench-plain" });
    let mut cmd = Command::new("cc");
    cmd.current_dir(dir)
        .args(["-O2", "-g", "-c"])
        .arg(&src)
        .arg("-o")
        .arg(dir.join("bench.o"));
    tools::run(&mut cmd)?;
    let mut link = Command::new("cc");
    link.current_dir(dir).arg("bench.o").arg("-o").arg(&exe);
    if with_loader {
        link.args(loader::link_args(&dir.join("loader")));
    }
    tools::run(link.arg("-lpthread"))?;
    Ok(exe)
}

fn runtime_rows(dir: &Path) -> Result<Vec<Row>, String> {
    let base = dir.join("prog");
    std::fs::create_dir_all(&base).map_err(|e| e.to_string())?;
    std::fs::copy(
        workspace().join("fixtures/bench/bench.c"),
        base.join("bench.c"),
    )
    .map_err(|e| e.to_string())?;
    let db = format!(
        r#"[{{"directory": "{}", "file": "bench.c", "arguments": ["cc", "-O2", "-g", "-c", "bench.c", "-o", "bench.o"]}}]"#,
        base.display()
    );
    std::fs::write(base.join("compile_commands.json"), db).map_err(|e| e.to_string())?;
    let patch = dir.join("fix.hpo");
    tools::run(
        Command::new(bin("hpbuild"))
            .arg("--base")
            .arg(&base)
            .arg("--diff")
            .arg(workspace().join("fixtures/bench/fix.patch"))
            .arg("-o")
            .arg(&patch),
    )?;

    let plain_rss = Program::start(&build_program(dir, false)?)?.number("rss")?;
    let mut prog = Program::start(&build_program(dir, true)?)?;
    let loader_rss = prog.number("rss")?;
    let before = prog.ns_per_call()?;
    prog.number("jitter")?;
    let quiet_window = Duration::from_millis(300);
    std::thread::sleep(quiet_window);
    let quiet = prog.number("jitter")?;
    let apply_start = Instant::now();
    tools::run(
        Command::new(bin("hpctl"))
            .arg("apply")
            .args(apply::lazy_flag()) // the stall of one switch, not of a consistent wait
            .arg(prog.child.id().to_string())
            .arg(&patch)
            .stdout(Stdio::null()),
    )?;
    std::thread::sleep(quiet_window.saturating_sub(apply_start.elapsed()));
    let during = prog.number("jitter")?;
    let after = prog.ns_per_call()?;
    Ok(vec![
        Row {
            metric: "call through the patched function (ns)".into(),
            baseline: format!("{before:.2} (before)"),
            measured: format!("{after:.2} (after, via entry jump)"),
            ratio: after / before,
        },
        Row {
            metric: "longest stall of a busy thread in 300 ms (µs)".into(),
            baseline: format!("{quiet:.0} (quiet)"),
            measured: format!("{during:.0} (during apply)"),
            ratio: during / quiet.max(1.0),
        },
        Row {
            metric: "resident memory at start (KiB)".into(),
            baseline: format!("{plain_rss:.0} (no loader)"),
            measured: format!("{loader_rss:.0} (loader linked)"),
            ratio: loader_rss / plain_rss,
        },
    ])
}
