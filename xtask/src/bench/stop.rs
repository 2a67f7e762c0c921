//! Time all threads are parked: how long a busy thread is blocked by one
//! lazy apply or revert, with hpctl's ptrace stop (the default) and with the
//! loader's own signal stop (`--signal-stop`), side by side in one process;
//! and the `EINTR` returns the program sees (issue 7 item 4; targets: ≤ 100
//! µs p99, no `EINTR`).
//!
//! `fixtures/bench/stop.c` runs 8 busy threads (pure CPU loops calling the
//! patched `step()`) and one thread each in `nanosleep`, `poll`,
//! `epoll_wait` and `select`, counting `EINTR` returns. Each of [`CYCLES`]
//! cycles applies and reverts the patch with each stop method (`--lazy`:
//! one stop each; the fixture keeps threads out of the rewritten bytes so no
//! switch retries; the loader's log confirms one switch attempt per
//! operation) and runs `hpctl list` (no stop) as the control; the methods
//! alternate which goes first.
//!
//! **Blocked, not the longest gap** (a busy thread's longest gap between
//! two iterations is mostly time-slicing on a loaded machine). A pure-CPU
//! thread is blocked only while something parks it, so:
//!
//! * exactly, from the scheduler's tracepoints (when tracefs is writable,
//!   i.e. as root): a private tracing instance records `sched_switch` (a
//!   worker leaving the CPU in a state other than runnable: `t` for a
//!   ptrace stop, `S` for the signal stop's futex) and `sched_waking` of the
//!   8 workers, in `CLOCK_MONOTONIC`, with markers written before and after
//!   each hpctl command. Per worker: the sum of its block → wakeup intervals
//!   in the window. The same trace gives the program's side of the parked
//!   window: first worker parked → last parked (the stop), all parked at
//!   once, first resumed → last resumed (the resume);
//! * as a cross-check, wall − run − runqueue wait from
//!   `/proc/PID/task/TID/schedstat` read before and after each command. The
//!   kernel moves those counters only at scheduler events (a tick while the
//!   thread runs, every 4 ms at HZ=250, or a switch), so each read is up to a
//!   few ms stale and this estimate is only good to a few ms (the control
//!   column shows how far it strays when nothing stops anyone).
//!
//! With `HPBUILD_BENCH_KEEP=1` the trace of every command (the workers,
//! the program's other threads, hpctl) stays in `stop/trace.txt`.
//!
//! hpctl's own view: `hpctl apply --json` prints `parked_us` (first
//! interrupt to last detach, per ptrace stop). The loader logs, per switch,
//! the time from "all stopped" to "resume begins" and the stack walk and
//! write inside it (`loader/csrc/switch.c`, step 10).

use super::fixture::{self, quantile};
use super::{Program, Row};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Apply/revert cycles per stop method.
const CYCLES: usize = 50;
const BUSY: usize = 8;
const KINDS: [&str; 4] = ["nanosleep", "poll", "epoll_wait", "select"];
/// The target for the time all threads are parked (p99).
const TARGET_US: f64 = 100.0;

#[derive(Clone, Copy, PartialEq)]
enum Method {
    Ptrace,
    Signal,
    Control,
}

impl Method {
    fn label(self) -> &'static str {
        match self {
            Method::Ptrace => "ptrace stop (hpctl, default)",
            Method::Signal => "signal stop (--signal-stop)",
            Method::Control => "control: hpctl list (no stop)",
        }
    }
}

/// A private tracefs instance recording the workers' scheduler events.
struct Trace {
    dir: PathBuf,
}

impl Trace {
    /// Records the scheduler events of `pids` and of whatever this process
    /// starts (hpctl), for a look at single stops (`trace.txt`); the
    /// reason when tracefs is not mounted or not writable.
    fn start(pids: &[u32]) -> Result<Trace, String> {
        let root = Path::new("/sys/kernel/tracing");
        if !root.join("instances").is_dir() {
            return Err("tracefs is not mounted at /sys/kernel/tracing".into());
        }
        let dir = root
            .join("instances")
            .join(format!("hpbuild-bench.{}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let trace = Trace { dir };
        let pids: Vec<String> = pids
            .iter()
            .copied()
            .chain([std::process::id()])
            .map(|p| p.to_string())
            .collect();
        for (file, value) in [
            ("trace_clock", "mono"),
            ("buffer_size_kb", "4096"),
            ("options/event-fork", "1"),
            ("set_event_pid", pids.join(" ").as_str()),
            ("events/sched/sched_switch/enable", "1"),
            ("events/sched/sched_waking/enable", "1"),
            ("tracing_on", "1"),
        ] {
            trace.write(file, value)?;
        }
        Ok(trace)
    }

    fn write(&self, file: &str, value: &str) -> Result<(), String> {
        let path = self.dir.join(file);
        std::fs::write(&path, value).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn mark(&self, text: &str) -> Result<(), String> {
        self.write("trace_marker", text)
    }

    /// Everything recorded since the last call (the buffer is cleared).
    fn take(&self) -> Result<String, String> {
        let path = self.dir.join("trace");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        self.write("trace", "")?;
        Ok(text)
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        let _ = self.write("tracing_on", "0");
        let _ = self.write("events/sched/enable", "0");
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// One traced event: µs (CLOCK_MONOTONIC) and what.
enum Event<'a> {
    /// Task `prev` left the CPU in state `state` ("R"/"R+": preempted,
    /// still runnable) and `next` got it.
    Switch {
        prev: u32,
        state: &'a str,
        next: u32,
    },
    /// Someone started waking `pid` (`sched_waking`: on the waker's CPU,
    /// before any IPI, so it is recorded even when the wakee's CPU is
    /// idle).
    Waking {
        pid: u32,
    },
    Marker(&'a str),
}

fn field<'a>(rest: &'a str, key: &str) -> Option<&'a str> {
    rest.split_whitespace().find_map(|w| w.strip_prefix(key))
}

fn parse_event(line: &str) -> Option<(f64, Event<'_>)> {
    let (head, kind, rest) = [
        ": sched_switch: ",
        ": sched_waking: ",
        ": tracing_mark_write: ",
    ]
    .iter()
    .find_map(|k| line.split_once(k).map(|(h, r)| (h, *k, r)))?;
    let secs: f64 = head.split_whitespace().last()?.parse().ok()?;
    let event = match kind {
        ": sched_switch: " => Event::Switch {
            prev: field(rest, "prev_pid=")?.parse().ok()?,
            state: field(rest, "prev_state=")?,
            next: field(rest, "next_pid=")?.parse().ok()?,
        },
        ": sched_waking: " => Event::Waking {
            pid: field(rest, "pid=")?.parse().ok()?,
        },
        _ => Event::Marker(rest.trim()),
    };
    Some((secs * 1e6, event))
}

/// The workers' blocks during one command, from its trace.
struct Timeline {
    /// Per worker: µs blocked between the markers.
    blocked: Vec<f64>,
    /// First worker parked → last worker parked.
    stopping: Option<f64>,
    /// Last worker parked → first worker resumed (all parked at once).
    all_parked: Option<f64>,
    /// First worker resumed → last worker resumed.
    resuming: Option<f64>,
    /// Blocks without a recorded wakeup, ended where the worker next got
    /// a CPU (an upper bound), or still open at the end marker.
    unmatched: usize,
}

fn timeline(text: &str, tids: &[u32], op: usize) -> Result<Timeline, String> {
    let (start, end) = (format!("hpbench start {op}"), format!("hpbench end {op}"));
    let mut inside = false;
    let mut since: Vec<Option<f64>> = vec![None; tids.len()];
    let mut blocked = vec![0.0; tids.len()];
    let (mut parked_at, mut woken_at) = (Vec::new(), Vec::new());
    let mut bounds = (None, None);
    let mut unmatched = 0;
    for (t, e) in text.lines().filter_map(parse_event) {
        match e {
            Event::Marker(m) if m == start => {
                inside = true;
                bounds.0 = Some(t);
            }
            Event::Marker(m) if m == end => {
                bounds.1 = Some(t);
                break;
            }
            Event::Switch { prev, state, next } if inside => {
                if let Some(w) = tids.iter().position(|&x| x == next) {
                    if let Some(s) = since[w].take() {
                        blocked[w] += t - s;
                        woken_at.push(t);
                        unmatched += 1;
                    }
                }
                if let Some(w) = tids.iter().position(|&x| x == prev) {
                    if !state.starts_with('R') {
                        since[w] = Some(t);
                        parked_at.push(t);
                    }
                }
            }
            Event::Waking { pid } if inside => {
                if let Some(w) = tids.iter().position(|&x| x == pid) {
                    if let Some(s) = since[w].take() {
                        blocked[w] += t - s;
                        woken_at.push(t);
                    }
                }
            }
            _ => {}
        }
    }
    let (Some(_), Some(t_end)) = bounds else {
        return Err(format!(
            "the trace of command {op} lacks its markers (buffer too small?)"
        ));
    };
    for (w, s) in since.iter().enumerate() {
        if let Some(s) = s {
            blocked[w] += t_end - s;
            unmatched += 1;
        }
    }
    let min = |v: &[f64]| v.iter().copied().reduce(f64::min);
    let max = |v: &[f64]| v.iter().copied().reduce(f64::max);
    let span = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    Ok(Timeline {
        blocked,
        stopping: span(min(&parked_at), max(&parked_at)),
        all_parked: span(max(&parked_at), min(&woken_at)),
        resuming: span(min(&woken_at), max(&woken_at)),
        unmatched,
    })
}

/// run time + runqueue wait of one thread, µs (as stale as the kernel's
/// last update of them).
fn on_cpu_or_queued(schedstat: &File) -> Result<f64, String> {
    let mut buf = [0u8; 128];
    let n = schedstat
        .read_at(&mut buf, 0)
        .map_err(|e| format!("schedstat: {e}"))?;
    let text = String::from_utf8_lossy(&buf[..n]);
    let mut f = text.split_whitespace().map(|w| w.parse::<u64>().ok());
    match (f.next().flatten(), f.next().flatten()) {
        (Some(run), Some(wait)) => Ok((run + wait) as f64 / 1e3),
        _ => Err(format!("unexpected schedstat: {text:?}")),
    }
}

/// Per worker: (µs since `epoch`, run + wait µs).
fn schedstats(files: &[File], epoch: Instant) -> Result<Vec<(f64, f64)>, String> {
    files
        .iter()
        .map(|f| {
            let v = on_cpu_or_queued(f)?;
            Ok((epoch.elapsed().as_secs_f64() * 1e6, v))
        })
        .collect()
}

/// The busy threads' tids and all the program's tids, once all its
/// threads are up.
fn threads(pid: u32) -> Result<(Vec<u32>, Vec<u32>), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (mut busy, mut all) = (Vec::new(), Vec::new());
        let mut sleepers = 0;
        let dir = std::fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| e.to_string())?;
        for e in dir.flatten() {
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            let Some(tid) = e.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            all.push(tid);
            match comm.trim() {
                c if c.starts_with("busy") => busy.push(tid),
                c if KINDS.contains(&c) => sleepers += 1,
                _ => {}
            }
        }
        if busy.len() == BUSY && sleepers == KINDS.len() {
            return Ok((busy, all));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "process {pid}: {} busy threads and {sleepers} sleepers after 5 s",
                busy.len()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One "switch attempt" line of the loader's log.
struct Switch {
    by_client: bool,
    inside: f64,
    walk: f64,
    write: f64,
}

/// "... switch attempt 1: 13 threads stopped by the client; 293 us inside
/// (walk 264 us, 51 frames; write 15 us)"
fn parse_switch(line: &str) -> Option<Switch> {
    let rest = line.split_once("threads stopped by ")?.1;
    let nums: Vec<f64> = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let [inside, walk, _frames, write, ..] = nums[..] else {
        return None;
    };
    Some(Switch {
        by_client: rest.starts_with("the client"),
        inside,
        walk,
        write,
    })
}

/// What one apply, revert or list did.
struct Op {
    method: Method,
    /// From the trace (None without tracefs).
    timeline: Option<Timeline>,
    /// Per worker, µs: Δwall − Δ(run + wait) from schedstat.
    schedstat: Vec<f64>,
    /// hpctl's parked_us, one per ptrace stop.
    parked: Vec<f64>,
    switches: Vec<Switch>,
    eintr: [u64; 4],
    wall_ms: f64,
}

/// The program, its busy workers and what has been read of the loader's
/// log and the trace.
struct Bench<'a> {
    prog: Program,
    pid: String,
    tids: Vec<u32>,
    schedstat: Vec<File>,
    trace: Option<Trace>,
    traces: String,
    epoch: Instant,
    log: &'a Path,
    log_seen: usize,
    eintr: [u64; 4],
    ops: usize,
}

impl Bench<'_> {
    fn eintr_now(&mut self) -> Result<[u64; 4], String> {
        let line = self.prog.ask("eintr")?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut out = [0u64; 4];
        for (k, kind) in KINDS.iter().enumerate() {
            let i = words.iter().position(|w| w == kind);
            out[k] = i
                .and_then(|i| words.get(i + 1)?.parse().ok())
                .ok_or(format!("the stop program answered {line:?} to eintr"))?;
        }
        Ok(out)
    }

    /// The loader's "switch attempt" lines logged since the last call.
    fn new_switches(&mut self) -> Result<Vec<Switch>, String> {
        let text = std::fs::read_to_string(self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let new = text.get(self.log_seen..).unwrap_or("");
        self.log_seen = text.len();
        Ok(new.lines().filter_map(parse_switch).collect())
    }

    fn op(&mut self, method: Method, args: &[&str]) -> Result<Op, String> {
        let n = self.ops;
        self.ops += 1;
        if let Some(t) = &self.trace {
            t.take()?;
            t.mark(&format!("hpbench start {n}"))?;
        }
        let before = schedstats(&self.schedstat, self.epoch)?;
        let t0 = Instant::now();
        let out = fixture::hpctl(args)?;
        let wall_ms = t0.elapsed().as_secs_f64() * 1e3;
        let after = schedstats(&self.schedstat, self.epoch)?;
        let timeline = match &self.trace {
            Some(t) => {
                t.mark(&format!("hpbench end {n}"))?;
                let text = t.take()?;
                let tl = timeline(&text, &self.tids, n)?;
                self.traces += &text;
                Some(tl)
            }
            None => None,
        };
        let json: serde_json::Value = match method {
            Method::Control => serde_json::Value::Null,
            _ => serde_json::from_str(&out).map_err(|e| format!("hpctl --json: {e}: {out}"))?,
        };
        let parked = json["parked_us"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_f64())
            .collect();
        // The sleepers count an EINTR when they next run, long before this
        // round trip through the program's main thread.
        let eintr = self.eintr_now()?;
        let delta = std::array::from_fn(|k| eintr[k] - self.eintr[k]);
        self.eintr = eintr;
        Ok(Op {
            method,
            timeline,
            schedstat: before
                .iter()
                .zip(&after)
                .map(|(b, a)| (a.0 - b.0) - (a.1 - b.1))
                .collect(),
            parked,
            switches: self.new_switches()?,
            eintr: delta,
            wall_ms,
        })
    }

    fn apply_revert(&mut self, method: Method, hpo: &str) -> Result<Vec<Op>, String> {
        let pid = self.pid.clone();
        let mut flags = vec!["--lazy", "--json"];
        if method == Method::Signal {
            flags.push("--signal-stop");
        }
        let apply: Vec<&str> = ["apply"]
            .into_iter()
            .chain(flags.iter().copied())
            .chain([pid.as_str(), hpo])
            .collect();
        let revert: Vec<&str> = ["revert"]
            .into_iter()
            .chain(flags.iter().copied())
            .chain([pid.as_str()])
            .collect();
        let a = self.op(method, &apply)?;
        if self.prog.number("check")? != 2.0 {
            return Err(format!(
                "{}: the patch is not live after apply",
                method.label()
            ));
        }
        let r = self.op(method, &revert)?;
        if self.prog.number("check")? != 1.0 {
            return Err(format!(
                "{}: the old code is not back after revert",
                method.label()
            ));
        }
        Ok(vec![a, r])
    }
}

/// The rows for the main table and this bench's own table.
pub fn rows(dir: &Path, loader: &Path) -> Result<(Vec<Row>, String), String> {
    let dir = dir.join("stop");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let obj = fixture::compile(&dir, "stop")?;
    let exe = fixture::link(&dir, &obj, "stop", Some(loader))?;
    let hpo = fixture::patch(&dir, "stop", &["step"])?;
    let hpo = hpo.to_str().ok_or("non-UTF-8 temp path")?;
    let log = dir.join("stop.log");
    let prog = Program::start_logged(&exe, &log)?;
    let pid = prog.child.id();
    let (tids, all) = threads(pid)?;
    let schedstat = tids
        .iter()
        .map(|tid| {
            let path = format!("/proc/{pid}/task/{tid}/schedstat");
            File::open(&path).map_err(|e| format!("{path}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (trace, no_trace) = match Trace::start(&all) {
        Ok(t) => (Some(t), None),
        Err(why) => (None, Some(why)),
    };
    let mut b = Bench {
        prog,
        pid: pid.to_string(),
        tids,
        schedstat,
        trace,
        traces: String::new(),
        epoch: Instant::now(),
        log: &log,
        log_seen: 0,
        eintr: [0; 4],
        ops: 0,
    };
    // Warm-up (not counted): the first apply loads the executable's symbols.
    b.apply_revert(Method::Ptrace, hpo)?;
    b.apply_revert(Method::Signal, hpo)?;
    b.eintr = b.eintr_now()?;
    b.new_switches()?;
    b.traces.clear();

    let mut ops = Vec::new();
    for cycle in 0..CYCLES {
        let order = if cycle % 2 == 0 {
            [Method::Ptrace, Method::Signal]
        } else {
            [Method::Signal, Method::Ptrace]
        };
        for m in order {
            ops.extend(b.apply_revert(m, hpo)?);
        }
        let pid = b.pid.clone();
        ops.push(b.op(Method::Control, &["list", &pid])?);
    }
    // Kept with HPBUILD_BENCH_KEEP=1, for a look at single stops.
    let _ = std::fs::write(dir.join("trace.txt"), &b.traces);
    Ok(report(&ops, no_trace.as_deref()))
}

fn triple(v: &[f64]) -> String {
    if v.is_empty() {
        return "—".into();
    }
    format!(
        "{:.0} / {:.0} / {:.0}",
        quantile(v, 0.5),
        quantile(v, 0.99),
        quantile(v, 1.0)
    )
}

fn report(ops: &[Op], no_trace: Option<&str>) -> (Vec<Row>, String) {
    let methods = [Method::Ptrace, Method::Signal, Method::Control];
    let of = |m: Method| ops.iter().filter(move |o| o.method == m);
    let collect =
        |m: Method, f: &dyn Fn(&Op) -> Vec<f64>| -> Vec<f64> { of(m).flat_map(f).collect() };
    let traced = |m: Method, f: fn(&Timeline) -> Vec<f64>| {
        collect(m, &|o| o.timeline.as_ref().map(f).unwrap_or_default())
    };
    let blocked = |m| traced(m, |t| t.blocked.clone());
    let sw = |m, f: fn(&Switch) -> f64| collect(m, &|o| o.switches.iter().map(f).collect());
    let mut lines: Vec<(String, [String; 3])> = Vec::new();
    let mut line = |name: &str, f: &dyn Fn(Method) -> String| {
        lines.push((name.to_string(), methods.map(f)));
    };
    line(
        "**busy worker blocked** (tracepoints), p50 / p99 / max",
        &|m| triple(&blocked(m)),
    );
    line("program side: first worker parked → last parked", &|m| {
        triple(&traced(m, |t| t.stopping.into_iter().collect()))
    });
    line("program side: all workers parked at once", &|m| {
        triple(&traced(m, |t| t.all_parked.into_iter().collect()))
    });
    line(
        "program side: first worker resumed → last resumed",
        &|m| triple(&traced(m, |t| t.resuming.into_iter().collect())),
    );
    line(
        "hpctl `parked_us` (first interrupt → last detach)",
        &|m| triple(&collect(m, &|o| o.parked.clone())),
    );
    line("loader: all stopped → resume begins", &|m| {
        triple(&sw(m, |s| s.inside))
    });
    line("… of which the stack walk", &|m| {
        triple(&sw(m, |s| s.walk))
    });
    line("… of which write + membarrier", &|m| {
        triple(&sw(m, |s| s.write))
    });
    line(
        "busy worker blocked, schedstat estimate (± a few ms)",
        &|m| triple(&collect(m, &|o| o.schedstat.clone())),
    );
    line("hpctl wall time (ms)", &|m| {
        let v = collect(m, &|o| vec![o.wall_ms]);
        format!(
            "{:.1} / {:.1} / {:.1}",
            quantile(&v, 0.5),
            quantile(&v, 0.99),
            quantile(&v, 1.0)
        )
    });
    line("commands / stops (loader's switch attempts)", &|m| {
        let n = of(m).count();
        let stops: usize = of(m).map(|o| o.switches.len()).sum();
        let by_client = of(m)
            .flat_map(|o| &o.switches)
            .filter(|s| s.by_client)
            .count();
        let unmatched: usize = of(m)
            .filter_map(|o| o.timeline.as_ref())
            .map(|t| t.unmatched)
            .sum();
        let open = if unmatched > 0 {
            format!("; {unmatched} blocks without a traced wakeup")
        } else {
            String::new()
        };
        format!("{n} / {stops} ({by_client} by the client{open})")
    });
    for (k, kind) in KINDS.iter().enumerate() {
        line(&format!("`EINTR` returns of `{kind}`"), &|m| {
            of(m).map(|o| o.eintr[k]).sum::<u64>().to_string()
        });
    }

    let n = of(Method::Ptrace).count();
    let mut table = format!(
        "stop: {CYCLES} lazy apply + revert cycles per stop method ({n} commands each) on one process ({BUSY} busy workers, 4 sleepers; 13 threads stopped per switch), interleaved, `hpctl list` as the control; µs, p50 / p99 / max unless stated; reproduce: cargo xtask bench stop\n"
    );
    if let Some(why) = no_trace {
        table += &format!(
            "no tracepoints ({why}): only the schedstat estimate is available; for exact blocked times run as root with tracefs mounted (mount -t tracefs nodev /sys/kernel/tracing)\n"
        );
    }
    table += &format!(
        "\n| per apply or revert | {} | {} | {} |\n|---|---|---|---|\n",
        methods[0].label(),
        methods[1].label(),
        methods[2].label()
    );
    for (name, cells) in &lines {
        table += &format!("| {name} | {} | {} | {} |\n", cells[0], cells[1], cells[2]);
    }

    let mut rows = Vec::new();
    for m in [Method::Ptrace, Method::Signal] {
        let (v, how) = match no_trace {
            None => (blocked(m), "tracepoints"),
            Some(_) => (
                collect(m, &|o| o.schedstat.clone()),
                "schedstat, ± a few ms",
            ),
        };
        let p99 = quantile(&v, 0.99);
        rows.push(Row {
            metric: format!(
                "stop: a busy worker blocked per apply/revert, p99 (µs), {}",
                m.label()
            ),
            baseline: format!("{TARGET_US:.0} (target)"),
            measured: format!(
                "{p99:.0} (p50 {:.0}, max {:.0}; {} samples, {how})",
                quantile(&v, 0.5),
                quantile(&v, 1.0),
                v.len()
            ),
            ratio: p99 / TARGET_US,
        });
    }
    for m in [Method::Ptrace, Method::Signal] {
        let stops: usize = of(m).map(|o| o.switches.len().max(1)).sum();
        let per_kind: Vec<String> = KINDS
            .iter()
            .enumerate()
            .map(|(k, kind)| format!("{kind} {}", of(m).map(|o| o.eintr[k]).sum::<u64>()))
            .collect();
        let total: u64 = of(m).map(|o| o.eintr.iter().sum::<u64>()).sum();
        rows.push(Row {
            metric: format!("stop: EINTR returns per stop (ratio column), {}", m.label()),
            baseline: "0 (target)".into(),
            measured: format!("{} in {stops} stops", per_kind.join(", ")),
            ratio: total as f64 / stops as f64,
        });
    }
    (rows, table)
}
