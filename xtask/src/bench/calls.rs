//! Call cost: what a call to a patched function costs, against the same
//! call in a program built without the loader (issue 7 item 4).
//!
//! `fixtures/bench/calls.c`: `loop(n)` calls the noinline `callee()`, which
//! reads a volatile global, n times (the disassembly is checked: one direct
//! call inside the loop's backward jump). One object, four processes:
//!
//! | variant | what | target |
//! |---|---|---|
//! | plain | linked without the loader | 1.00× (the baseline) |
//! | loader | loader linked, nothing applied | ≤ 1.02× |
//! | entry jump | `hpctl apply --lazy PID fix.hpo`: the loop calls the old entry, which jumps to the new code | (reported) |
//! | call site | `hpctl apply --lazy --redirect call-site PID fix.hpo`: the loop's call is rewritten to the new code | 1.00× within noise |
//!
//! The patches are applied (and checked live: `check` answers 2, and
//! `hpctl list --json` counts the call sites) before any timing. Then
//! [`ROUNDS`] rounds time [`CALLS`] calls in every process, the order
//! rotating each round, so the variants share the machine's noise; the
//! minimum per variant is the cost (the least disturbed run), the median
//! shows the noise.

use super::fixture::{self, quantile};
use super::{Program, Row};
use std::path::Path;
use std::process::Command;

/// Rounds; each times every variant once.
const ROUNDS: usize = 101;
/// Calls per timing: a few milliseconds, shorter than a time slice, so
/// that on a busy machine many timings run undisturbed.
const CALLS: u64 = 2_000_000;

struct Variant {
    name: &'static str,
    how: String,
    prog: Program,
    ns: Vec<f64>,
}

/// Checks in `objdump -d` of `exe` that `loop` calls `callee` inside its
/// loop (a direct call between the target of a backward jump and the jump),
/// so every iteration makes the call. Returns loop's address.
fn loop_calls_callee(exe: &Path) -> Result<u64, String> {
    let out = Command::new("objdump")
        .args(["-d", "--no-show-raw-insn"])
        .arg(exe)
        .output()
        .map_err(|e| format!("objdump: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let body: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.ends_with(" <loop>:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect();
    let addr = |l: &str| u64::from_str_radix(l.trim().split(':').next()?.trim(), 16).ok();
    let start = text
        .lines()
        .find(|l| l.ends_with(" <loop>:"))
        .and_then(|l| u64::from_str_radix(l.split(' ').next()?, 16).ok())
        .ok_or(format!("{}: no loop() in the disassembly", exe.display()))?;
    let calls: Vec<u64> = body
        .iter()
        .filter(|l| l.contains("call") && l.contains("<callee>"))
        .filter_map(|l| addr(l))
        .collect();
    // A jump whose target (the hex number before "<loop+") lies at or
    // before the call, placed after it.
    let back_jumps: Vec<(u64, u64)> = body
        .iter()
        .filter(|l| l.contains("\tj") && l.contains("<loop+"))
        .filter_map(|l| {
            let at = addr(l)?;
            let target = l.split('<').next()?.split_whitespace().last()?;
            Some((at, u64::from_str_radix(target, 16).ok()?))
        })
        .collect();
    let in_loop = calls
        .iter()
        .any(|&c| back_jumps.iter().any(|&(at, to)| to <= c && c < at));
    if calls.len() != 1 || !in_loop {
        return Err(format!(
            "{}: loop() should make one direct call to callee() inside its loop (calls at {calls:x?}, backward jumps {back_jumps:x?})",
            exe.display()
        ));
    }
    Ok(start)
}

fn start(exe: &Path, log: &Path, name: &'static str, how: &str) -> Result<Variant, String> {
    Ok(Variant {
        name,
        how: how.to_string(),
        prog: Program::start_logged(exe, log)?,
        ns: Vec::new(),
    })
}

/// The rows for the main table and this bench's own table.
pub fn rows(dir: &Path, loader: &Path) -> Result<(Vec<Row>, String), String> {
    let dir = dir.join("calls");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let obj = fixture::compile(&dir, "calls")?;
    let plain = fixture::link(&dir, &obj, "calls-plain", None)?;
    let linked = fixture::link(&dir, &obj, "calls", Some(loader))?;
    let loop_at = [loop_calls_callee(&plain)?, loop_calls_callee(&linked)?];
    let hpo = fixture::patch(&dir, "calls", &["callee"])?;
    let hpo = hpo.to_str().ok_or("non-UTF-8 temp path")?;

    let log = |n: &str| dir.join(format!("{n}.log"));
    let mut vs = vec![
        start(&plain, &log("plain"), "plain", "no loader")?,
        start(
            &linked,
            &log("loader"),
            "loader",
            "loader linked, nothing applied",
        )?,
        start(&linked, &log("entry"), "entry jump", "hpctl apply --lazy")?,
        start(
            &linked,
            &log("call-site"),
            "call site",
            "hpctl apply --lazy --redirect call-site",
        )?,
    ];
    let pid = |v: &Variant| v.prog.child.id().to_string();
    fixture::hpctl(&["apply", "--lazy", &pid(&vs[2]), hpo])?;
    fixture::hpctl(&[
        "apply",
        "--lazy",
        "--redirect",
        "call-site",
        &pid(&vs[3]),
        hpo,
    ])?;
    for (i, v) in vs.iter_mut().enumerate() {
        let want = if i >= 2 { 2.0 } else { 1.0 };
        let got = v.prog.number("check")?;
        if got != want {
            return Err(format!("{}: callee(0) = {got}, expected {want}", v.name));
        }
    }
    let entry_sites = fixture::call_sites(&pid(&vs[2]))?;
    let sites = fixture::call_sites(&pid(&vs[3]))?;
    if entry_sites != 0 || sites == 0 {
        return Err(format!(
            "call sites rewritten: {entry_sites} with the entry jump (expected 0), {sites} with --redirect call-site (expected some)"
        ));
    }
    vs[3].how += &format!(" ({sites} call sites)");

    for v in &mut vs {
        v.prog.number("time 1000000")?; // warm: page faults, caches
    }
    for round in 0..ROUNDS {
        for k in 0..vs.len() {
            let i = (round + k) % vs.len();
            let ns = vs[i].prog.number(&format!("time {CALLS}"))?;
            vs[i].ns.push(ns);
        }
    }

    let min = |v: &Variant| v.ns.iter().copied().fold(f64::INFINITY, f64::min);
    let med = |v: &Variant| quantile(&v.ns, 0.5);
    let (base_min, base_med) = (min(&vs[0]), med(&vs[0]));
    let target = ["1.00 (baseline)", "≤ 1.02", "—", "1.00 within noise"];
    let mut table = format!(
        "calls: {CALLS} calls of a noinline function per timing, {ROUNDS} rounds, the four processes interleaved; reproduce: cargo xtask bench calls\n\
         loop() at {:#x} (plain) and {:#x} (loader linked): one direct call per iteration (objdump)\n\n\
         | variant | how | min ns/call | median ns/call | max ns/call | min ratio | median ratio | target |\n|---|---|---|---|---|---|---|---|\n",
        loop_at[0], loop_at[1]
    );
    for (v, t) in vs.iter().zip(target) {
        table += &format!(
            "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {t} |\n",
            v.name,
            v.how,
            min(v),
            med(v),
            quantile(&v.ns, 1.0),
            min(v) / base_min,
            med(v) / base_med
        );
    }
    let rows = vs[1..]
        .iter()
        .map(|v| Row {
            metric: format!("call cost, {} (ns/call, min of {ROUNDS})", v.name),
            baseline: format!("{base_min:.3} (plain build, no loader)"),
            measured: format!("{:.3} ({})", min(v), v.how),
            ratio: min(v) / base_min,
        })
        .collect();
    Ok((rows, table))
}
