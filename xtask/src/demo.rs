//! The demo: a program built with the loader runs and serves requests; a
//! patch is built from fixtures/demo/fix.patch and applied while it runs,
//! then reverted. Every command is shown as it runs. The demo checks that
//! the prices change with the patch and back with the revert, that the
//! request counter carries on throughout, and that no line the program
//! printed before a switch is shown after it; its temporary directory is
//! removed at the end, whatever happened.

use crate::tools::{self, workspace};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

pub fn run() -> Result<(), String> {
    say("0. build hpbuild and hpctl (cargo build --release: 1–2 minutes the first time)");
    tools::release_binaries()?;
    let dir = TempDir::new()?;
    let result = demo(&dir.0);
    if let Err(e) = &result {
        println!("\n   (the demo failed: {e})");
    }
    result
}

fn demo(dir: &Path) -> Result<(), String> {
    let bin = tools::release_dir();
    let (hpbuild, hpctl) = (bin.join("hpbuild"), bin.join("hpctl"));
    let base = dir.join("base");
    std::fs::create_dir_all(&base).map_err(|e| e.to_string())?;
    let fixture = workspace().join("fixtures/demo");
    std::fs::copy(fixture.join("server.c"), base.join("server.c")).map_err(|e| e.to_string())?;

    say("1. build the program with the loader linked in (libhotpatch.a)");
    shown(
        Command::new(&hpbuild)
            .args(["loader", "--out"])
            .arg(dir.join("loader")),
    )?;
    build_program(&base, &dir.join("loader"))?;

    say("2. start it: it serves a request every 250 ms, pricing each at 10 (the bug)");
    let mut program = Program::start(&base.join("server"), &dir.join("loader.log"))?;
    program.watch(Duration::from_millis(1500));

    say("3. the fix, a unified diff against the running version:");
    let diff = std::fs::read_to_string(fixture.join("fix.patch")).map_err(|e| e.to_string())?;
    diff.lines().for_each(|l| println!("   | {l}"));

    say("4. build the patch from the diff (--explain: what ships and why)");
    let patch = dir.join("fix.hpo");
    shown(
        Command::new(&hpbuild)
            .args(["--explain", "--base"])
            .arg(&base)
            .arg("--diff")
            .arg(fixture.join("fix.patch"))
            .arg("-o")
            .arg(&patch),
    )?;
    program.catch_up("while the patch was built");

    let pid = program.pid();
    say(&format!("5. apply it to the running process {pid}"));
    let apply = program.switch(Command::new(&hpctl).arg("apply").arg(&pid).arg(&patch))?;
    shown(Command::new(&hpctl).arg("list").arg(&pid))?;
    program.watch(Duration::from_millis(1500));

    say(&format!(
        "6. revert it: process {pid} runs its own code again"
    ));
    let revert = program.switch(Command::new(&hpctl).arg("revert").arg(&pid))?;
    program.watch(Duration::from_millis(1000));
    program.stop();

    check(&program.seen, apply, revert)
}

fn say(msg: &str) {
    println!("\n== {msg}");
}

/// Runs a command after showing it as it would be typed (full paths, so it
/// can be copied).
fn shown(cmd: &mut Command) -> Result<(), String> {
    let words: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|w| w.to_string_lossy().into_owned())
        .collect();
    println!("$ {}", words.join(" "));
    tools::run(cmd)
}

/// The demo's scratch directory, removed when the demo ends (also when it
/// fails or panics).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, String> {
        let dir = std::env::temp_dir().join(format!("hpbuild-demo.{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(&self.0) {
            Ok(()) => println!("\n(removed {})", self.0.display()),
            Err(e) => eprintln!("cannot remove {}: {e}", self.0.display()),
        }
    }
}

/// Builds like a user would: record the compile command, compile, link the
/// loader with --whole-archive so its constructor is kept.
fn build_program(base: &Path, loader: &Path) -> Result<(), String> {
    let db = format!(
        r#"[{{"directory": "{}", "file": "server.c", "arguments": ["cc", "-O2", "-g", "-c", "server.c", "-o", "server.o"]}}]"#,
        base.display()
    );
    std::fs::write(base.join("compile_commands.json"), db).map_err(|e| e.to_string())?;
    println!("(compile_commands.json records: cc -O2 -g -c server.c -o server.o)");
    shown(
        Command::new("cc")
            .current_dir(base)
            .args(["-O2", "-g", "-c", "server.c", "-o", "server.o"]),
    )?;
    shown(
        Command::new("cc")
            .current_dir(base)
            .args(["server.o", "-o", "server"])
            .args(loader::link_args(loader)),
    )
}

pub fn forward_lines(child: &mut Child) -> Receiver<String> {
    let out = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A program line and when the demo received it.
struct Line {
    at: Instant,
    text: String,
}

/// The running demo program and every line it printed so far.
struct Program {
    child: Child,
    lines: Receiver<Line>,
    seen: Vec<Line>,
    /// When the last apply or revert command returned.
    switched: Option<Instant>,
}

impl Program {
    fn start(exe: &Path, log: &Path) -> Result<Program, String> {
        println!("$ {} &", exe.display());
        let mut child = Command::new(exe)
            .env("HOTPATCH_LOG", log)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the demo program: {e}"))?;
        let raw = forward_lines(&mut child);
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for text in raw {
                let at = Instant::now();
                if tx.send(Line { at, text }).is_err() {
                    break;
                }
            }
        });
        Ok(Program {
            child,
            lines,
            seen: Vec::new(),
            switched: None,
        })
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn show(&mut self, line: Line, note: &str) {
        println!("   [program] {}{note}", line.text);
        self.seen.push(line);
    }

    /// Prints and keeps the program's lines for a while. A line that
    /// arrived while the last switch command ran says so: it may come from
    /// either code.
    fn watch(&mut self, for_: Duration) {
        let end = Instant::now() + for_;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if self.switched.is_some_and(|t| line.at < t) => {
                    self.show(line, "   (printed while hpctl ran)")
                }
                Ok(line) => self.show(line, ""),
                Err(_) => break,
            }
        }
    }

    /// Shows what the program printed while the demo did something else.
    fn catch_up(&mut self, while_: &str) {
        while let Ok(line) = self.lines.try_recv() {
            self.show(line, &format!("   ({while_})"));
        }
    }

    /// Runs `cmd` (hpctl apply or revert) right after the program printed a
    /// line, so the switch falls well inside its 250 ms pause, and returns
    /// when the command finished: lines received later were printed after
    /// the switch. Everything printed before is shown first.
    fn switch(&mut self, cmd: &mut Command) -> Result<Instant, String> {
        self.catch_up("before the switch");
        let fresh = self
            .lines
            .recv_timeout(Duration::from_secs(2))
            .map_err(|_| "the program stopped printing".to_string())?;
        self.show(fresh, "");
        shown(cmd)?;
        let done = Instant::now();
        self.switched = Some(done);
        Ok(done)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        self.stop();
    }
}

/// (request number, size, price) of a line "request N: size S price P total T".
fn parse(line: &str) -> Option<(u64, u64, u64)> {
    let w: Vec<&str> = line.split_whitespace().collect();
    Some((
        w.get(1)?.trim_end_matches(':').parse().ok()?,
        w.get(3)?.parse().ok()?,
        w.get(5)?.parse().ok()?,
    ))
}

fn fixed_price(size: u64) -> u64 {
    10 + 3 * size
}

/// The verdict: every line after the apply is priced by the fix, every
/// line after the revert by the old code again, and the request counter
/// never restarts or skips.
fn check(seen: &[Line], applied: Instant, reverted: Instant) -> Result<(), String> {
    let requests: Vec<(Instant, (u64, u64, u64))> = seen
        .iter()
        .filter_map(|l| Some((l.at, parse(&l.text)?)))
        .collect();
    if let Some(w) = requests.windows(2).find(|w| w[1].1 .0 != w[0].1 .0 + 1) {
        return Err(format!(
            "the request counter went from {} to {}: state was lost",
            w[0].1 .0, w[1].1 .0
        ));
    }
    let patched: Vec<_> = requests
        .iter()
        .filter(|(at, _)| *at > applied && *at < reverted)
        .map(|(_, r)| r)
        .collect();
    let old_again: Vec<_> = requests
        .iter()
        .filter(|(at, _)| *at > reverted)
        .map(|(_, r)| r)
        .collect();
    if patched.is_empty() || old_again.is_empty() {
        return Err("the program printed nothing after the apply or the revert".into());
    }
    if let Some(r) = patched.iter().find(|(_, s, p)| *p != fixed_price(*s)) {
        return Err(format!(
            "request {} after the apply was priced {} (the fix prices size {} at {})",
            r.0,
            r.2,
            r.1,
            fixed_price(r.1)
        ));
    }
    if let Some(r) = old_again.iter().find(|(_, _, p)| *p != 10) {
        return Err(format!(
            "request {} after the revert was priced {}, not 10",
            r.0, r.2
        ));
    }
    say(&format!(
        "done: with the patch, requests {}–{} were priced by size; after the revert, 10 again \
         from request {}; the counter never restarted",
        patched[0].0,
        patched[patched.len() - 1].0,
        old_again[0].0
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{check, Line};
    use std::time::{Duration, Instant};

    /// Lines "request N: size 1 price P", received `ms` after `t0`.
    fn lines(t0: Instant, rows: &[(u64, u64, u64)]) -> Vec<Line> {
        rows.iter()
            .map(|&(ms, n, price)| Line {
                at: t0 + Duration::from_millis(ms),
                text: format!("request {n}: size 1 price {price} total 0"),
            })
            .collect()
    }

    #[test]
    fn the_verdict_catches_old_lines_after_the_switch_and_lost_state() {
        let t0 = Instant::now();
        let (applied, reverted) = (
            t0 + Duration::from_millis(100),
            t0 + Duration::from_millis(300),
        );
        let good = lines(t0, &[(50, 1, 10), (150, 2, 13), (250, 3, 13), (350, 4, 10)]);
        assert!(check(&good, applied, reverted).is_ok());
        // A line priced by the old code shown after the apply returned.
        let stale = lines(t0, &[(50, 1, 10), (150, 2, 10), (250, 3, 13), (350, 4, 10)]);
        let e = check(&stale, applied, reverted).unwrap_err();
        assert!(
            e.starts_with("request 2 after the apply was priced 10"),
            "{e}"
        );
        let restarted = lines(t0, &[(50, 1, 10), (150, 1, 13), (350, 2, 10)]);
        let e = check(&restarted, applied, reverted).unwrap_err();
        assert!(e.contains("counter went from 1 to 1"), "{e}");
    }
}
