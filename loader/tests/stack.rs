//! The whole-stack consistency check: real threads blocked inside replaced
//! functions (in read() and nanosleep() through libc, at the bottom of a deep
//! recursion), programs built by gcc -O2 (no frame pointers) and clang.

mod common;

use common::{hpctl, make_patch, Proc, Work};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PROG: &str = include_str!("programs/stack.c");
const FILE: &str = "stack.c";

fn version(serve: u32, nap: u32, deep: u32) -> String {
    format!(
        "#define SERVE_FACTOR {serve}\n#define NAP_FACTOR {nap}\n#define DEEP_FACTOR {deep}\n{PROG}"
    )
}

fn v1() -> String {
    version(10, 1, 2)
}

struct Setup {
    work: Work,
    p: Proc,
    pid: String,
}

fn start(tag: &str, cc: &'static str, extra: &[&str]) -> Setup {
    common::set_cc(cc);
    let work = Work::new(tag);
    let exe = common::build_program(&work, FILE, &v1(), extra);
    let p = Proc::start(&exe, &work);
    let pid = p.pid().to_string();
    Setup { work, p, pid }
}

fn patch(s: &Setup, id: &str, new: &str, funcs: &[&str], extra: &[&str]) -> String {
    make_patch(&s.work, id, FILE, &v1(), new, funcs, extra);
    s.work
        .path(&format!("{id}.hpo"))
        .to_str()
        .unwrap()
        .to_string()
}

/// serve ×10 → ×20.
fn serve_patch(s: &Setup, extra: &[&str]) -> String {
    patch(s, "serve2", &version(20, 1, 2), &["serve"], extra)
}

/// (a) A thread blocked in read() inside serve(): --consistent times out
/// naming it; a plain apply switches and says so; the blocked call finishes
/// in the old code, the next one runs the new. Then revert --consistent
/// waits for the new code to be left and unmaps it.
fn blocked_call(tag: &str, cc: &'static str, extra: &[&str]) {
    let mut s = start(tag, cc, extra);
    let tid = s.p.ask("serve");
    let file = serve_patch(&s, extra);

    let t0 = Instant::now();
    let (ok, _, err) = hpctl(&[
        "apply",
        "--consistent",
        "--timeout-ms",
        "400",
        &s.pid,
        &file,
    ]);
    let waited = t0.elapsed();
    assert!(!ok, "consistent apply succeeded while serve() was running");
    assert_eq!(
        err,
        format!(
            "hpctl: function serve is on the stack of thread {tid} (it never returned within \
             400 ms): it cannot switch consistently; apply with --lazy to switch \
             future calls only"
        ),
        "log:\n{}",
        s.p.log_text()
    );
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    eprintln!("[{tag}] consistent apply gave up after {waited:?}");

    let (ok, out, err) = hpctl(&["apply", "--lazy", &s.pid, &file]);
    assert!(ok, "{err}\n{}", s.p.log_text());
    assert_eq!(out, "applied serve2: 1 function");
    assert_eq!(
        err.trim_end(),
        format!("hpctl: warning: thread {tid} is running old serve(); it finishes in the old code")
    );
    let log = s.p.log_text();
    assert!(
        log.contains(&format!("thread {tid} is running old serve()")),
        "{log}"
    );
    // The blocked call returns from the old code, the next call is new.
    assert_eq!(s.p.ask("feed 3"), "30");
    assert_eq!(s.p.ask("go"), "ok");
    assert_eq!(s.p.ask("feed 3"), "60");

    // Now blocked inside the patch's serve(): a consistent revert refuses.
    assert_eq!(s.p.ask("go"), "ok");
    let (ok, _, err) = hpctl(&["revert", "--consistent", "--timeout-ms", "300", &s.pid]);
    assert!(!ok);
    assert_eq!(
        err,
        format!(
            "hpctl: patch serve2's serve() is on the stack of thread {tid} (it never returned \
             within 300 ms): it cannot be removed consistently; revert with --lazy to \
             restore the old code for future calls (the patch's code is freed once no thread is in it)"
        )
    );
    // Release it in the middle of a consistent revert: that succeeds and unmaps.
    let bg = Command::new(env!("CARGO_BIN_EXE_hpctl"))
        .args(["revert", "--consistent", &s.pid])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.p.ask("feed 4"), "80"); // still the new code: not reverted yet
    let out = bg.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "reverted serve2 (consistent: its code is freed)"
    );
    assert!(s.p.log_text().contains("is freed"));
    assert_eq!(s.p.ask("go"), "ok");
    assert_eq!(s.p.ask("feed 4"), "40");
    assert_eq!(s.p.ask("ping"), "pong");
}

#[test]
fn blocked_call_gcc_o2_without_frame_pointers() {
    blocked_call("blocked-gcc", "gcc", &["-fomit-frame-pointer"]);
}

#[test]
fn blocked_call_clang() {
    blocked_call("blocked-clang", "clang", &[]);
}

#[test]
fn blocked_call_gcc_cet_pie() {
    blocked_call("blocked-cet", "gcc", &["-fcf-protection=full", "-fPIE"]);
}

/// A static function is named as called, then its file: `serve() (stack.c)`.
#[test]
fn lazy_warning_names_a_static_function_then_its_file() {
    let statics = |t: String| t.replace("KEEP long serve(void)", "static KEEP long serve(void)");
    common::set_cc("gcc");
    let work = Work::new("static-name");
    let exe = common::build_program(&work, FILE, &statics(v1()), &[]);
    let mut p = Proc::start(&exe, &work);
    let tid = p.ask("serve");
    let (old, new) = (statics(v1()), statics(version(20, 1, 2)));
    make_patch(&work, "serve2", FILE, &old, &new, &["serve"], &[]);
    let file = work.path("serve2.hpo");
    let pid = p.pid().to_string();
    let (ok, _, err) = hpctl(&["apply", "--lazy", &pid, file.to_str().unwrap()]);
    assert!(ok, "{err}\n{}", p.log_text());
    assert_eq!(
        err.trim_end(),
        format!(
            "hpctl: warning: thread {tid} is running old serve() (stack.c); it finishes in the \
             old code"
        )
    );
    assert_eq!(p.ask("go"), "ok");
}

/// (b) The blocked call is released while --consistent waits: it succeeds.
#[test]
fn consistent_apply_succeeds_once_the_call_returns() {
    let mut s = start("released", "gcc", &[]);
    s.p.ask("serve");
    let file = serve_patch(&s, &[]);
    let t0 = Instant::now();
    let bg = Command::new(env!("CARGO_BIN_EXE_hpctl"))
        .args(["apply", "--consistent", &s.pid, &file])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Completes in the old code; the thread then parks outside serve().
    assert_eq!(s.p.ask("feed 2"), "20");
    let out = bg.wait_with_output().unwrap();
    let took = t0.elapsed();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.p.log_text()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "applied serve2: 1 function (consistent: no thread was running them)"
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    eprintln!("consistent apply waited {took:?}");
    assert_eq!(s.p.ask("go"), "ok");
    assert_eq!(s.p.ask("feed 2"), "40");
}

/// (c) Deep recursion in progress: deep_entry() is 300 frames up the stack.
/// Deeper than the walker's bound (512), the walk is reported incomplete
/// and --consistent refuses rather than guess.
#[test]
fn deep_recursion() {
    let mut s = start("deep", "gcc", &[]);
    let tid = s.p.ask("deep 300");
    let file = patch(&s, "deep3", &version(10, 1, 3), &["deep_entry"], &[]);
    let (ok, _, err) = hpctl(&[
        "apply",
        "--consistent",
        "--timeout-ms",
        "200",
        &s.pid,
        &file,
    ]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "function deep_entry is on the stack of thread {tid} (it never returned within 200 ms)"
        )),
        "{err}\n{}",
        s.p.log_text()
    );
    let (ok, _, err) = hpctl(&["apply", "--lazy", &s.pid, &file]);
    assert!(ok, "{err}");
    assert!(
        err.contains(&format!("thread {tid} is running old deep_entry()")),
        "{err}"
    );
    // The running call finishes in the old code: (300 + 1) × 2.
    assert_eq!(s.p.ask("undeep"), "602");
    drop(s);

    let mut s = start("deeper", "gcc", &[]);
    let tid = s.p.ask("deep 1000");
    let file = patch(&s, "deep3", &version(10, 1, 3), &["deep_entry"], &[]);
    let (ok, _, err) = hpctl(&[
        "apply",
        "--consistent",
        "--timeout-ms",
        "200",
        &s.pid,
        &file,
    ]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "the stack of thread {tid} could not be walked within 200 ms (deeper than 512 frames)"
        )),
        "{err}"
    );
    let (ok, _, err) = hpctl(&["apply", "--lazy", &s.pid, &file]);
    assert!(ok);
    assert!(
        err.contains(&format!(
            "thread {tid}: stack walk stopped early (deeper than 512 frames)"
        )),
        "{err}"
    );
    assert_eq!(s.p.ask("undeep"), "2002");
}

/// (d) A thread sleeping in nanosleep() (libc → kernel) inside napper(): the
/// walk must go through libc's CFI to find napper. napper() is re-entered at
/// once, so a consistent switch never finds a free moment.
#[test]
fn thread_in_nanosleep_is_found_through_libc() {
    let mut s = start("nap", "gcc", &[]);
    let tid = s.p.ask("nap");
    std::thread::sleep(Duration::from_millis(50));
    let file = patch(&s, "nap2", &version(10, 2, 2), &["napper"], &[]);
    let (ok, _, err) = hpctl(&[
        "apply",
        "--consistent",
        "--timeout-ms",
        "300",
        &s.pid,
        &file,
    ]);
    assert!(!ok);
    assert!(
        err.contains(&format!("function napper is on the stack of thread {tid}")),
        "{err}\n{}",
        s.p.log_text()
    );
    let (ok, out, _) = hpctl(&["apply", "--lazy", &s.pid, &file, "--json"]);
    assert!(ok);
    assert!(
        out.contains(&format!(
            "\"notes\":[\"thread {tid} is running old napper(); it finishes in the old code\"]"
        )),
        "{out}"
    );
    let log = s.p.log_text();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("switch attempt"))
        .unwrap();
    eprintln!("{line}");
}

/// A thread blocked below a patch's own code (serve() replaced by patch 1)
/// is unwound through that code using the patch's .eh_frame, so patch 2,
/// replacing serve_loop() further up, finds serve_loop() on its stack.
#[test]
fn unwinding_through_patch_code() {
    let mut s = start("through", "gcc", &[]);
    let tid = s.p.ask("serve");
    let file = serve_patch(&s, &[]);
    let (ok, _, err) = hpctl(&["apply", "--lazy", &s.pid, &file]);
    assert!(ok, "{err}");
    assert_eq!(s.p.ask("feed 1"), "10");
    assert_eq!(s.p.ask("go"), "ok"); // now blocked in the patch's serve()
    assert!(s.p.log_text().contains("with unwind information"));
    // serve_loop() with one more instruction: the differ ships only code
    // that changed.
    let loop2 = format!("#define LOOP_EXTRA __asm__ volatile(\"nop\");\n{}", v1());
    let file2 = patch(&s, "loop2", &loop2, &["serve_loop"], &[]);
    let (ok, _, err) = hpctl(&[
        "apply",
        "--consistent",
        "--timeout-ms",
        "200",
        &s.pid,
        &file2,
    ]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "function serve_loop is on the stack of thread {tid}"
        )),
        "{err}\n{}",
        s.p.log_text()
    );
    assert_eq!(s.p.ask("feed 1"), "20");
}

/// Threads elsewhere (main in fgets → read, the listener) never block a
/// consistent apply, and the stop with stack walks stays short.
#[test]
fn idle_threads_do_not_block_a_consistent_apply() {
    let mut s = start("idle", "gcc", &[]);
    s.p.ask("nap"); // sleeping, but in napper(), which this patch leaves alone
    let file = serve_patch(&s, &[]);
    for _ in 0..5 {
        let (ok, out, err) = hpctl(&["apply", "--consistent", &s.pid, &file]);
        assert!(ok, "{err}\n{}", s.p.log_text());
        assert!(
            out.ends_with("(consistent: no thread was running them)"),
            "{out}"
        );
        let (ok, _, err) = hpctl(&["revert", "--consistent", &s.pid]);
        assert!(ok, "{err}");
    }
    let log = s.p.log_text();
    for l in log.lines().filter(|l| l.contains("stack check:")).take(2) {
        eprintln!("{l}");
    }
    assert_eq!(s.p.ask("ping"), "pong");
}

/// Threads spinning in code without unwind information with a junk frame
/// pointer (0xdeadbeef000, 1, the stack pointer itself): their walks end
/// "incomplete" without harm; a plain apply says so and switches, a
/// consistent one refuses to guess.
#[test]
fn junk_frame_pointers_never_crash_the_walker() {
    let mut s = start("junk", "gcc", &[]);
    for mode in 0..3 {
        assert_eq!(s.p.ask(&format!("jit {mode}")), "ok");
    }
    let tid = s.p.ask("serve");
    let file = serve_patch(&s, &[]);
    for _ in 0..20 {
        let (ok, _, err) = hpctl(&["apply", "--consistent", "--timeout-ms", "50", &s.pid, &file]);
        assert!(!ok);
        assert!(
            err.contains("could not be walked") || err.contains("function serve is on the stack"),
            "{err}"
        );
    }
    let (ok, _, err) = hpctl(&[
        "apply",
        "--consistent",
        "--timeout-ms",
        "100",
        &s.pid,
        &file,
    ]);
    assert!(!ok);
    eprintln!("{err}");
    let (ok, _, err) = hpctl(&["apply", "--lazy", &s.pid, &file]);
    assert!(ok, "{err}");
    assert!(
        err.contains(&format!("thread {tid} is running old serve()")),
        "{err}"
    );
    assert!(err.contains("stack walk stopped early"), "{err}");
    eprintln!("{err}");
    assert_eq!(s.p.ask("feed 1"), "10");
    assert_eq!(s.p.ask("go"), "ok");
    assert_eq!(s.p.ask("feed 1"), "20");
    assert_eq!(s.p.ask("ping"), "pong");
}
