//! `cargo xtask stress` (issue 8 item 10): a patch applied and reverted
//! thousands of times while eight threads call the patched functions and
//! check every result.
//!
//! The program is `fixtures/bench/stress.c` (its header says what it checks:
//! a result of neither version is wrong, a result of the version not in
//! force is stale). Per cycle the driver tells it a switch is coming
//! (`pause`), runs `hpctl apply --json PID stress-fix.hpo`, tells it the new
//! version is in force (`expect 2`: its main thread checks one call itself),
//! then the same for `hpctl revert --json PID` (`expect 1`). hpctl's answer
//! must say the switch happened, and the revert must name the patch the apply
//! put in. A refusal that changed nothing because a thread stayed busy (a
//! consistent switch that waited 5 s in vain) or did not reach its stop in
//! time is retried, and counted by kind; any other failure ends the run.
//! Switches the loader itself had to retry (a replaced function on a stack,
//! or a stack it could not walk, when the threads were stopped) are counted
//! from its log.
//!
//! Each redirect mode gets a fresh process. Its mapping count (lines of
//! `/proc/PID/maps`) and private memory (`Private_*` of `smaps_rollup`) are
//! printed at the start, every `--every` cycles and at the end: reported,
//! and a failure only past `--max-maps-growth` when that is given. The run
//! fails on any wrong or stale result, a program that died or stopped
//! answering, state (the program's millisecond ticker and call counters) that
//! did not keep counting, or an unexpected hpctl failure.

use crate::bench::fixture;
use crate::demo::forward_lines;
use crate::tools;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// How long the program may take to answer one command.
const ANSWER_LIMIT: Duration = Duration::from_secs(10);
/// How long the program runs before its first sample.
const SETTLE: Duration = Duration::from_millis(200);
/// Busy refusals in a row before the run gives up.
const MAX_RETRIES_IN_A_ROW: u32 = 20;
/// What hpctl says when a consistent switch waited in vain.
const BUSY: &str = "is on the stack of thread";
/// What hpctl says when a thread did not reach its stop in time (nothing
/// was changed). Seen on a loaded 2-core machine for a runnable thread that
/// got no CPU for 500 ms: retried like a busy refusal, counted apart.
const STOP_TIMEOUT: &str = "did not stop within";

/// hpctl refusals that were retried.
#[derive(Clone, Copy, Default)]
struct Retries {
    busy: u64,
    stop_timeouts: u64,
}

impl std::fmt::Display for Retries {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "{} hpctl retries ({} busy, {} stop timeouts)",
            self.busy + self.stop_timeouts,
            self.busy,
            self.stop_timeouts
        )
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Redirect {
    Entry,
    CallSite,
}

impl Redirect {
    fn name(self) -> &'static str {
        match self {
            Redirect::Entry => "entry",
            Redirect::CallSite => "call-site",
        }
    }
}

struct Options {
    cycles: u64,
    modes: Vec<Redirect>,
    every: u64,
    max_maps_growth: Option<i64>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options {
            cycles: 10_000,
            modes: vec![Redirect::Entry, Redirect::CallSite],
            every: 0,
            max_maps_growth: None,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or(format!("{flag} needs a value"));
            let number = |v: &String| v.parse().map_err(|_| format!("{flag}: not a number: {v}"));
            match flag.as_str() {
                "--cycles" => o.cycles = number(value()?)?,
                "--every" => o.every = number(value()?)?,
                "--max-maps-growth" => o.max_maps_growth = Some(number(value()?)? as i64),
                "--redirect" => {
                    o.modes = match value()?.as_str() {
                        "entry" => vec![Redirect::Entry],
                        "call-site" => vec![Redirect::CallSite],
                        "both" => vec![Redirect::Entry, Redirect::CallSite],
                        other => {
                            return Err(format!("--redirect {other}: entry, call-site or both"))
                        }
                    }
                }
                _ => return Err(format!("unknown option {flag}\n{USAGE}")),
            }
        }
        if o.every == 0 {
            o.every = (o.cycles / 10).max(1);
        }
        Ok(o)
    }
}

pub const USAGE: &str = "stress [--cycles N] [--redirect entry|call-site|both] [--every N] [--max-maps-growth N]  apply/revert N times (default 10000, both modes) while 8 threads check every result of the patched functions";

pub fn run(args: &[String]) -> Result<(), String> {
    let opts = Options::parse(args)?;
    tools::release_binaries()?;
    let (dir, loader) = fixture::workdir("stress")?;
    let obj = fixture::compile(&dir, "stress")?;
    let exe = fixture::link(&dir, &obj, "stress", Some(&loader))?;
    let hpo = fixture::patch(&dir, "stress", &["inner", "outer"])?;
    let summaries: Vec<Summary> = opts
        .modes
        .iter()
        .map(|&mode| {
            let s = run_mode(&exe, &hpo, mode, &opts, &dir);
            println!("{}", s.line());
            s
        })
        .collect();
    let failed: Vec<String> = summaries
        .iter()
        .filter_map(|s| Some(format!("{}: {}", s.mode.name(), s.failure.as_ref()?)))
        .collect();
    if failed.is_empty() && std::env::var_os("HPBUILD_STRESS_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!(
            "stress files (program, patch, loader logs) kept in {}",
            dir.display()
        );
    }
    match failed.is_empty() {
        true => Ok(()),
        false => Err(failed.join("\n")),
    }
}

/// One redirect mode, start to end, in a fresh process.
fn run_mode(exe: &Path, hpo: &Path, mode: Redirect, opts: &Options, dir: &Path) -> Summary {
    let log = dir.join(format!("{}.log", mode.name()));
    let mut s = Summary::new(mode, log.clone());
    let started = Instant::now();
    let outcome = Target::start(exe, &log).and_then(|target| {
        let mut run = Run::new(target, hpo, mode)?;
        std::thread::sleep(SETTLE); // every thread running before the first sample
        s.start = run.sample()?;
        println!(
            "stress {}: pid {} {}",
            mode.name(),
            run.pid,
            s.start.describe()
        );
        s.end = s.start;
        let result = run
            .cycles(opts, &mut s, started)
            .and_then(|()| run.finish());
        s.retries = run.retries;
        s.hpctl_per_switch = run.hpctl_time / run.switches.max(1);
        if let Ok(end) = run.sample() {
            s.end = end;
        }
        result
    });
    s.wall = started.elapsed();
    s.loader_waits = loader_waits(&log);
    s.failure = outcome.err().or_else(|| s.maps_growth_failure(opts));
    s
}

/// The program under test, driven line by line on its stdin/stdout.
struct Target {
    child: Child,
    input: ChildStdin,
    lines: Receiver<String>,
}

impl Target {
    fn start(exe: &Path, log: &Path) -> Result<Target, String> {
        let mut child = fixture::spawn(exe, log)?;
        let input = child.stdin.take().expect("piped");
        let lines = forward_lines(&mut child);
        let mut t = Target {
            child,
            input,
            lines,
        };
        match t.answer()?.as_str() {
            "ready" => Ok(t),
            other => Err(format!("the program started with {other:?}, not \"ready\"")),
        }
    }

    fn ask(&mut self, cmd: &str) -> Result<String, String> {
        if writeln!(self.input, "{cmd}").is_err() {
            return Err(self.gone());
        }
        self.answer()
    }

    fn answer(&mut self) -> Result<String, String> {
        self.lines
            .recv_timeout(ANSWER_LIMIT)
            .map_err(|_| self.gone())
    }

    /// Why the program does not answer: it died, or it hangs.
    fn gone(&mut self) -> String {
        match self.child.try_wait() {
            Ok(Some(st)) => match st.signal() {
                Some(sig) => format!("the program crashed (killed by signal {sig})"),
                None => format!("the program exited ({st})"),
            },
            _ => format!(
                "the program did not answer within {} s (hung)",
                ANSWER_LIMIT.as_secs()
            ),
        }
    }

    fn status(&mut self) -> Result<Status, String> {
        let line = self.ask("status")?;
        Status::parse(&line).ok_or(format!("the program answered {line:?} to status"))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The program's counters (its `status` line).
#[derive(Clone, Copy, Default)]
struct Status {
    calls: u64,
    judged: u64,
    wrong: u64,
    stale: u64,
    threads: u64,
    ticks: u64,
}

impl Status {
    fn parse(line: &str) -> Option<Status> {
        let w: Vec<&str> = line.split_whitespace().collect();
        let field = |name: &str| -> Option<u64> {
            let at = w.iter().position(|x| *x == name)?;
            w.get(at + 1)?.parse().ok()
        };
        Some(Status {
            calls: field("calls")?,
            judged: field("judged")?,
            wrong: field("wrong")?,
            stale: field("stale")?,
            threads: field("threads")?,
            ticks: field("ticks")?,
        })
    }
}

/// The target's mappings and private memory, with its counters.
#[derive(Clone, Copy, Default)]
struct Sample {
    maps: usize,
    private_kib: u64,
    status: Status,
}

impl Sample {
    fn describe(&self) -> String {
        format!(
            "maps {}, private {} KiB, {} calls checked, {} threads created, ticks {}",
            self.maps, self.private_kib, self.status.calls, self.status.threads, self.status.ticks
        )
    }
}

/// Lines of /proc/PID/maps and the sum of Private_* in smaps_rollup (KiB).
fn memory(pid: u32) -> Result<(usize, u64), String> {
    let read = |what: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{what}"))
            .map_err(|e| format!("/proc/{pid}/{what}: {e}"))
    };
    let maps = read("maps")?.lines().count();
    let private = read("smaps_rollup")?
        .lines()
        .filter(|l| l.starts_with("Private_"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    Ok((maps, private))
}

/// Switches the loader retried (`attempt 1: ...; retrying` in its log).
fn loader_waits(log: &Path) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().filter(|l| l.ends_with("; retrying")).count()
}

/// One mode's cycles against one process.
struct Run {
    target: Target,
    pid: u32,
    hpo: String,
    mode: Redirect,
    retries: Retries,
    /// hpctl runs (retries included) and their wall time together.
    switches: u32,
    hpctl_time: Duration,
    applied_id: String,
    last: Status,
    /// Call sites rewritten (call-site mode, checked after the first apply).
    sites: Option<u64>,
}

impl Run {
    fn new(target: Target, hpo: &Path, mode: Redirect) -> Result<Run, String> {
        let pid = target.child.id();
        let hpo = hpo.to_str().ok_or("non-UTF-8 temp path")?.to_string();
        let mut run = Run {
            target,
            pid,
            hpo,
            mode,
            retries: Retries::default(),
            switches: 0,
            hpctl_time: Duration::ZERO,
            applied_id: String::new(),
            last: Status::default(),
            sites: None,
        };
        run.last = run.target.status()?;
        Ok(run)
    }

    fn sample(&mut self) -> Result<Sample, String> {
        let (maps, private_kib) = memory(self.pid)?;
        Ok(Sample {
            maps,
            private_kib,
            status: self.target.status()?,
        })
    }

    fn cycles(&mut self, opts: &Options, s: &mut Summary, started: Instant) -> Result<(), String> {
        for cycle in 1..=opts.cycles {
            self.cycle()?;
            s.cycles = cycle;
            if cycle % opts.every == 0 || cycle == opts.cycles {
                let now = self.sample()?;
                s.end = now;
                self.check(&now.status)?;
                let rate = cycle as f64 / started.elapsed().as_secs_f64();
                println!(
                    "stress {}: cycle {cycle}/{}: {}, {}, {rate:.1} cycles/s",
                    self.mode.name(),
                    opts.cycles,
                    now.describe(),
                    self.retries
                );
            }
        }
        Ok(())
    }

    /// Apply (version 2), then revert (version 1).
    fn cycle(&mut self) -> Result<(), String> {
        let (pid, hpo) = (self.pid.to_string(), self.hpo.clone());
        let mut apply = vec!["apply", "--json"];
        if self.mode == Redirect::CallSite {
            apply.extend(["--redirect", "call-site"]);
        }
        apply.extend([pid.as_str(), hpo.as_str()]);
        let applied = self.switch(&apply, 2)?;
        self.applied_id = string(&applied["id"]);
        if self.mode == Redirect::CallSite && self.sites.is_none() {
            self.sites = Some(fixture::call_sites(&pid)?).filter(|&n| n > 0);
            let Some(n) = self.sites else {
                return Err("--redirect call-site rewrote no call site".into());
            };
            println!("stress call-site: {n} call sites rewritten by each apply");
        }
        let reverted = self.switch(&["revert", "--json", &pid], 1)?;
        let id = string(&reverted["id"]);
        if id != self.applied_id {
            return Err(format!(
                "hpctl revert removed {id:?}, but the apply put in {:?}",
                self.applied_id
            ));
        }
        Ok(())
    }

    /// One switch: tell the program, run hpctl (again while the refusal is
    /// a busy thread), check hpctl's answer and the program's own call.
    fn switch(&mut self, args: &[&str], version: u32) -> Result<serde_json::Value, String> {
        self.expect_answer("pause", "ok")?;
        let mut in_a_row = 0;
        let out = loop {
            let t = Instant::now();
            let out = fixture::hpctl(args);
            self.hpctl_time += t.elapsed();
            self.switches += 1;
            match out {
                Ok(out) => break out,
                Err(e) if e.contains(BUSY) && in_a_row < MAX_RETRIES_IN_A_ROW => {
                    self.retries.busy += 1;
                    in_a_row += 1;
                }
                Err(e) if e.contains(STOP_TIMEOUT) && in_a_row < MAX_RETRIES_IN_A_ROW => {
                    eprintln!("stress {}: retrying: {e}", self.mode.name());
                    self.retries.stop_timeouts += 1;
                    in_a_row += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let json: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| format!("hpctl {}: {e} in {out:?}", args[0]))?;
        if json["ok"] != true || json["action"] != args[0] {
            return Err(format!("hpctl {} answered {out}", args[0]));
        }
        self.expect_answer(&format!("expect {version}"), &format!("main {version}"))?;
        Ok(json)
    }

    fn expect_answer(&mut self, cmd: &str, want: &str) -> Result<(), String> {
        let got = self.target.ask(cmd)?;
        if got == want {
            return Ok(());
        }
        let status = self.target.ask("status").unwrap_or_default();
        Err(format!(
            "after {cmd:?} the program answered {got:?}, expected {want:?} (status: {status})"
        ))
    }

    /// No result was wrong or stale, and the counters kept counting since
    /// the previous sample.
    fn check(&mut self, now: &Status) -> Result<(), String> {
        let last = std::mem::replace(&mut self.last, *now);
        if now.wrong > 0 || now.stale > 0 {
            let line = self.target.ask("status").unwrap_or_default();
            return Err(format!(
                "{} wrong and {} stale results ({line})",
                now.wrong, now.stale
            ));
        }
        if now.ticks <= last.ticks || now.calls <= last.calls {
            return Err(format!(
                "state did not keep counting: ticks {} -> {}, calls {} -> {}",
                last.ticks, now.ticks, last.calls, now.calls
            ));
        }
        Ok(())
    }

    /// The end: nothing left applied, the program alive and still counting.
    fn finish(&mut self) -> Result<(), String> {
        let out = fixture::hpctl(&["list", "--json", &self.pid.to_string()])?;
        if out.contains("\"functions\"") {
            return Err(format!("patches left applied after the last revert: {out}"));
        }
        std::thread::sleep(Duration::from_millis(20));
        let now = self.target.status()?;
        self.check(&now)
    }
}

fn string(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// What one mode did, for the summary line.
struct Summary {
    mode: Redirect,
    log: PathBuf,
    cycles: u64,
    retries: Retries,
    loader_waits: usize,
    hpctl_per_switch: Duration,
    wall: Duration,
    start: Sample,
    end: Sample,
    failure: Option<String>,
}

impl Summary {
    fn new(mode: Redirect, log: PathBuf) -> Summary {
        Summary {
            mode,
            log,
            cycles: 0,
            retries: Retries::default(),
            loader_waits: 0,
            hpctl_per_switch: Duration::ZERO,
            wall: Duration::ZERO,
            start: Sample::default(),
            end: Sample::default(),
            failure: None,
        }
    }

    fn maps_growth_failure(&self, opts: &Options) -> Option<String> {
        let growth = self.end.maps as i64 - self.start.maps as i64;
        let limit = opts.max_maps_growth?;
        (growth > limit).then(|| {
            format!(
                "mappings grew by {growth} over {} cycles (limit {limit})",
                self.cycles
            )
        })
    }

    fn line(&self) -> String {
        let (a, b) = (&self.start, &self.end);
        let secs = self.wall.as_secs_f64();
        let crashed = self
            .failure
            .as_deref()
            .is_some_and(|f| f.contains("crashed") || f.contains("exited"));
        format!(
            "stress {}: {} cycles, {} calls checked ({} against the version in force), {} wrong, {} stale, {} crashes, {}, {} loader waits, {} threads created, {secs:.1} s, {:.1} cycles/s, hpctl {:.1} ms per switch, maps {}→{}, private {}→{} KiB{}",
            self.mode.name(),
            self.cycles,
            b.status.calls,
            b.status.judged,
            b.status.wrong,
            b.status.stale,
            u32::from(crashed),
            self.retries,
            self.loader_waits,
            b.status.threads,
            self.cycles as f64 / secs.max(1e-9),
            self.hpctl_per_switch.as_secs_f64() * 1e3,
            a.maps,
            b.maps,
            a.private_kib,
            b.private_kib,
            match &self.failure {
                Some(f) => format!(": FAILED: {f} (loader log {})", self.log.display()),
                None => String::new(),
            }
        )
    }
}
