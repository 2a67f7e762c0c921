//! Operations (issue 10 items 1 and 2): `hpctl --exe PATH` on every process
//! of a binary, and patches that survive restarts (`--persist`, the patch
//! directory the loader re-applies from before main).
//!
//! The story the tests tell: three processes of one build, one of another
//! build started from the same path before it was rebuilt, one without the
//! loader. A patch applied to one process is lost when it restarts (the
//! "before"); `apply --exe --persist` patches the three (their call counters
//! carry on), skips the other two with the reason, and a restarted process
//! comes back patched before its first call. A second run changes nothing.
//! A persisted patch that no longer matches the binary is logged and never
//! applied.

mod common;

use common::{make_patch, Work};
use object::Object;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

const PROG: &str = include_str!("programs/ops.c");
const FILE: &str = "ops.c";

/// A running test program with its own log and the test's patch directory.
struct Running {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    log: PathBuf,
}

impl Running {
    fn start(exe: &Path, work: &Work, name: &str, env: &[(&str, &str)]) -> Running {
        let log = work.path(&format!("{name}.log"));
        let _ = std::fs::remove_file(&log);
        let mut child = Command::new(exe)
            .env("HOTPATCH_LOG", &log)
            .env("HOTPATCH_DIR", work.path("state"))
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut r = Running {
            stdout: BufReader::new(child.stdout.take().unwrap()),
            child,
            stdin,
            log,
        };
        assert_eq!(r.line(), "ready");
        if env.iter().all(|(k, _)| *k != "HOTPATCH_DISABLE") {
            r.wait_listening();
        }
        r
    }

    /// The socket is bound before main runs; wait for the kernel's table.
    fn wait_listening(&self) {
        let name = format!("@{}", format::protocol::socket_name(self.pid()));
        for _ in 0..500 {
            if std::fs::read_to_string("/proc/net/unix")
                .unwrap()
                .contains(&name)
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!(
            "process {} never listened; log:\n{}",
            self.pid(),
            self.log()
        );
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn line(&mut self) -> String {
        let mut s = String::new();
        self.stdout.read_line(&mut s).unwrap();
        assert!(!s.is_empty(), "program exited; log:\n{}", self.log());
        s.trim_end().to_string()
    }

    fn call(&mut self, n: u32) -> String {
        writeln!(self.stdin, "call {n}").unwrap();
        self.line()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs hpctl with the test's patch directory; (exit code, stdout, stderr).
fn hpctl(work: &Work, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hpctl"))
        .env("HOTPATCH_DIR", work.path("state"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The JSON line about process `pid`.
fn of(lines: &[Value], pid: u32) -> &Value {
    lines
        .iter()
        .find(|v| v["pid"] == pid)
        .unwrap_or_else(|| panic!("no line for {pid} in {lines:?}"))
}

fn build_id(exe: &Path) -> String {
    let bytes = std::fs::read(exe).unwrap();
    let file = object::File::parse(&*bytes).unwrap();
    format::hex(file.build_id().unwrap().expect("gcc links a build-id"))
}

fn series(work: &Work, exe: &Path) -> String {
    let path = work.path(&format!("state/{}/series", build_id(exe)));
    std::fs::read_to_string(path).unwrap_or_default()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The program with a prefix of defines.
fn variant(defines: &str) -> String {
    format!("{defines}\n{PROG}")
}

/// The patch `scale-3` (scale() multiplies by 3) over PROG; its path.
fn scale3_patch(work: &Work) -> PathBuf {
    make_patch(
        work,
        "scale-3",
        FILE,
        PROG,
        &variant("#define FACTOR 3"),
        &["scale"],
        &[],
    );
    work.path("scale-3.hpo")
}

#[test]
fn every_process_of_a_binary_is_patched_and_a_restarted_one_gets_its_patch_back() {
    let work = Work::new("ops-exe");
    // Another build started from the path before the binary was rebuilt.
    let exe = common::build_program(&work, FILE, &variant("#define BUILD_TAG \"old\""), &[]);
    let mut other = Running::start(&exe, &work, "other", &[]);
    let old_id = build_id(&exe);
    common::build_program(&work, FILE, PROG, &[]);
    assert_ne!(build_id(&exe), old_id, "a rebuild gives another build-id");
    let patch = scale3_patch(&work);
    let mut procs: Vec<Running> = ["a", "b", "c"]
        .iter()
        .map(|n| Running::start(&exe, &work, n, &[]))
        .collect();
    let mut bare = Running::start(&exe, &work, "bare", &[("HOTPATCH_DISABLE", "1")]);
    for p in &mut procs {
        assert_eq!(p.call(5), "result 10 calls 1");
    }

    // Before: a patch applied to one process is gone when it restarts.
    let (code, _, err) = hpctl(&work, &["apply", &procs[0].pid().to_string(), s(&patch)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(procs[0].call(5), "result 15 calls 2");
    procs[0] = Running::start(&exe, &work, "a", &[]);
    assert_eq!(procs[0].call(5), "result 10 calls 1", "restarted: fix lost");

    // Every process of the build, one JSON line each, and the directory.
    let args = ["apply", "--exe", s(&exe), s(&patch), "--persist", "--json"];
    let (code, out, err) = hpctl(&work, &args);
    assert_eq!(code, 0, "{out}{err}");
    let lines = json_lines(&out);
    for p in &procs {
        let v = of(&lines, p.pid());
        assert_eq!(
            (v["status"].as_str(), v["changed"].as_bool()),
            (Some("ok"), Some(true)),
            "{v}"
        );
    }
    let skipped = of(&lines, other.pid());
    assert_eq!(skipped["status"], "skipped");
    assert!(
        skipped["message"]
            .as_str()
            .unwrap()
            .contains(&format!("another build (build-id {old_id}")),
        "{skipped}"
    );
    let skipped = of(&lines, bare.pid());
    assert_eq!(skipped["status"], "skipped");
    assert!(
        skipped["message"]
            .as_str()
            .unwrap()
            .starts_with("no hotpatch loader listening"),
        "{skipped}"
    );
    let dir = lines
        .iter()
        .find(|v| v["action"] == "persist")
        .expect("a persist line");
    assert_eq!(dir["changed"], true, "{dir}");
    assert!(series(&work, &exe).contains(" scale-3\n"));

    // The running processes changed behaviour and kept their counters.
    for p in &mut procs {
        assert_eq!(p.call(5), "result 15 calls 2");
    }
    assert_eq!(
        other.call(5),
        "result 10 calls 1",
        "another build is not touched"
    );
    assert_eq!(bare.call(5), "result 10 calls 1");

    // A restarted process applies it before main: its first call is patched.
    procs[1] = Running::start(&exe, &work, "b", &[]);
    assert_eq!(procs[1].call(5), "result 15 calls 1");
    let log = procs[1].log();
    assert!(log.contains("start-up: re-applied scale-3 from "), "{log}");
    let (code, out, _) = hpctl(&work, &["list", &procs[1].pid().to_string()]);
    assert_eq!((code, out.trim()), (0, "scale-3 scale"));

    // Again: nothing changes, and the exit status says all is well.
    let (code, out, err) = hpctl(&work, &args);
    assert_eq!(code, 0, "{out}{err}");
    let lines = json_lines(&out);
    for p in &procs {
        assert_eq!(of(&lines, p.pid())["changed"], false);
    }
    let dir = lines.iter().find(|v| v["action"] == "persist").unwrap();
    assert_eq!(dir["changed"], false, "{dir}");
    let entries = series(&work, &exe);
    assert_eq!(
        entries.lines().filter(|l| l.ends_with(" scale-3")).count(),
        1,
        "{entries}"
    );

    // One text line per process.
    let (code, out, _) = hpctl(&work, &["list", "--exe", s(&exe)]);
    assert_eq!(code, 0);
    for p in &procs {
        assert!(
            out.contains(&format!("{}: scale-3 (scale)\n", p.pid())),
            "{out}"
        );
    }
    assert!(
        out.contains(&format!("{}: skipped: another build", other.pid())),
        "{out}"
    );
    assert_eq!(out.lines().count(), 5, "{out}");

    // Revert everywhere: out of the directory too; a restart runs old code.
    let (code, out, err) = hpctl(&work, &["revert", "--exe", s(&exe)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("scale-3: removed from "), "{out}");
    assert!(!series(&work, &exe).contains(" scale-3"));
    // (b restarted with one call since.)
    for (p, calls) in procs.iter_mut().zip([3, 2, 3]) {
        assert_eq!(p.call(5), format!("result 10 calls {calls}"));
    }
    procs[2] = Running::start(&exe, &work, "c", &[]);
    assert_eq!(procs[2].call(5), "result 10 calls 1");
}

#[test]
fn the_exit_status_says_whether_all_some_or_none_succeeded() {
    let work = Work::new("ops-status");
    let exe = common::build_program(&work, FILE, PROG, &[]);
    let patch = scale3_patch(&work);
    let args = ["apply", "--exe", s(&exe), s(&patch)];

    let (code, _, err) = hpctl(&work, &args);
    assert_eq!(code, 1, "no process runs it");
    assert!(
        err.contains("no running process of") && err.contains("nothing was done"),
        "{err}"
    );

    let mut running = Running::start(&exe, &work, "running", &[]);
    let stopped = Running::start(&exe, &work, "stopped", &[]);
    common::stop_process(stopped.pid());
    let (code, out, err) = hpctl(&work, &args);
    // SAFETY: signals a child of this test.
    unsafe { libc::kill(stopped.pid() as i32, libc::SIGCONT) };
    assert_eq!(code, 3, "{out}{err}");
    let p = stopped.pid();
    assert!(
        out.contains(&format!("{p}: failed: process {p} is stopped (state T)")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{}: applied scale-3", running.pid())),
        "{out}"
    );
    assert!(err.contains("succeeded on 1 of 2 processes"), "{err}");
    assert_eq!(running.call(5), "result 15 calls 1");

    let (code, _, err) = hpctl(&work, &["apply", "--exe", s(&exe), "1", s(&patch)]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("with --exe, give the patch file only"),
        "{err}"
    );
}

#[test]
fn a_persisted_patch_that_no_longer_matches_is_logged_and_never_applied() {
    let work = Work::new("ops-stale");
    let exe = common::build_program(&work, FILE, PROG, &[]);
    let patch = scale3_patch(&work);
    let p = Running::start(&exe, &work, "v1", &[]);
    let (code, out, err) = hpctl(
        &work,
        &["apply", &p.pid().to_string(), s(&patch), "--persist"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("; persisted in "), "{out}");
    let v1 = work.path(&format!("state/{}", build_id(&exe)));
    drop(p);

    // Rebuilt with other code in scale(); its directory given the old
    // build's series (what a rebuilt binary must never run).
    common::build_program(&work, FILE, &variant("#define FACTOR 4"), &[]);
    let v2 = work.path(&format!("state/{}", build_id(&exe)));
    std::fs::create_dir_all(&v2).unwrap();
    for f in std::fs::read_dir(&v1).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, v2.join(f.file_name().unwrap())).unwrap();
    }
    let mut p = Running::start(&exe, &work, "v2", &[]);
    assert_eq!(p.call(5), "result 20 calls 1");
    let log = p.log();
    assert!(
        log.contains("start-up: patch scale-3 from ") && log.contains("NOT applied: "),
        "{log}"
    );
    assert!(log.contains("scale"), "{log}");

    // A directory others may write is not read at all.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&v1, std::fs::Permissions::from_mode(0o777)).unwrap();
    common::build_program(&work, FILE, PROG, &[]);
    let mut p = Running::start(&exe, &work, "open", &[]);
    assert_eq!(p.call(5), "result 10 calls 1");
    assert!(
        p.log()
            .contains("writable by nobody else); nothing re-applied"),
        "{}",
        p.log()
    );
}
