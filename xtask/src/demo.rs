//! The demo: a program built with the loader runs and serves requests; a
//! patch is built from fixtures/demo/fix.patch and applied while it runs;
//! the demo checks that the prices change and the counters carry on.

use crate::tools::{self, workspace};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

pub fn run() -> Result<(), String> {
    tools::release_binaries()?;
    let bin = workspace().join("target/release");
    let dir = tempdir()?;
    let base = dir.join("base");
    std::fs::create_dir_all(&base).map_err(|e| e.to_string())?;
    let fixture = workspace().join("fixtures/demo");
    std::fs::copy(fixture.join("server.c"), base.join("server.c")).map_err(|e| e.to_string())?;

    say("1. build the program with the loader linked in (libhotpatch.a)");
    tools::run(
        Command::new(bin.join("hpbuild"))
            .args(["loader", "--out"])
            .arg(dir.join("loader")),
    )?;
    build_program(&base, &dir.join("loader"))?;

    say("2. start it: it serves a request every 250 ms, pricing each at 10 (the bug)");
    let mut child = Command::new(base.join("server"))
        .env("HOTPATCH_LOG", dir.join("loader.log"))
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the demo program: {e}"))?;
    let lines = forward_lines(&mut child);
    let before = watch(&lines, Duration::from_millis(1500));

    say("3. build the patch from the diff (hpbuild --explain shows what ships and why)");
    let patch = dir.join("fix.hpo");
    tools::run(
        Command::new(bin.join("hpbuild"))
            .args(["--explain", "--base"])
            .arg(&base)
            .arg("--diff")
            .arg(fixture.join("fix.patch"))
            .arg("-o")
            .arg(&patch),
    )?;

    say(&format!(
        "4. apply it to the running process {}",
        child.id()
    ));
    tools::run(
        Command::new(bin.join("hpctl"))
            .arg("apply")
            .arg(child.id().to_string())
            .arg(&patch),
    )?;
    tools::run(
        Command::new(bin.join("hpctl"))
            .arg("list")
            .arg(child.id().to_string()),
    )?;
    let after = watch(&lines, Duration::from_millis(1500));
    let _ = child.kill();
    let _ = child.wait();
    verdict(&before, &after)
}

fn say(msg: &str) {
    println!("\n== {msg}");
}

fn tempdir() -> Result<std::path::PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("hpbuild-demo.{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// Builds like a user would: record the compile command, compile, link the
/// loader with --whole-archive so its constructor is kept.
fn build_program(base: &Path, loader: &Path) -> Result<(), String> {
    let db = format!(
        r#"[{{"directory": "{}", "file": "server.c", "arguments": ["cc", "-O2", "-g", "-c", "server.c", "-o", "server.o"]}}]"#,
        base.display()
    );
    std::fs::write(base.join("compile_commands.json"), db).map_err(|e| e.to_string())?;
    tools::run(
        Command::new("cc")
            .current_dir(base)
            .args(["-O2", "-g", "-c", "server.c", "-o", "server.o"]),
    )?;
    tools::run(
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

/// Prints and collects the program's lines for a while.
fn watch(lines: &Receiver<String>, for_: Duration) -> Vec<String> {
    let end = Instant::now() + for_;
    let mut seen = Vec::new();
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) => {
                println!("   [program] {line}");
                seen.push(line);
            }
            Err(_) => break,
        }
    }
    seen
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

fn verdict(before: &[String], after: &[String]) -> Result<(), String> {
    let b: Vec<_> = before.iter().filter_map(|l| parse(l)).collect();
    let a: Vec<_> = after.iter().filter_map(|l| parse(l)).collect();
    let (Some(last_before), Some(first_after)) = (b.last(), a.first()) else {
        return Err("the program printed nothing to compare".into());
    };
    let fixed = a
        .iter()
        .filter(|(_, size, price)| *price == 10 + 3 * size)
        .count();
    if fixed == 0 || a.last().is_some_and(|(_, s, p)| *p != 10 + 3 * s) {
        return Err(
            "after the patch the prices did not change: the patch did not take effect".into(),
        );
    }
    if first_after.0 != last_before.0 + 1 {
        return Err(format!(
            "the request counter restarted ({} after {}): state was lost",
            first_after.0, last_before.0
        ));
    }
    say(&format!(
        "done: prices now grow with the size, and the request counter went on from {} to {} without a restart",
        last_before.0, first_after.0
    ));
    Ok(())
}
