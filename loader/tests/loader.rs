//! End-to-end tests of libhotpatch.a and hpctl against real multi-threaded C
//! programs. Patches are made as hpbuild makes them (differ + emit, common/).

mod common;

use common::{hpctl, make_patch, Proc, Work};
use format::protocol::{self, Request};
use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::time::Duration;

/// Raw protocol requests below switch at once (no client to stop threads).
fn lazy() -> protocol::Options {
    protocol::Options {
        mode: protocol::Mode::Lazy,
        ..protocol::Options::default()
    }
}

const PROG: &str = include_str!("programs/prog.c");
const FILE: &str = "prog.c";

/// The program's source with the version knobs set.
fn version(overrides: &[(&str, &str)]) -> String {
    let mut defs = [
        ("COMPUTE_FACTOR", "2"),
        ("COMPUTE_PRELUDE", ""),
        ("COMPUTE_EXTRA", ""),
        ("GREETING", "\"hello v1\""),
        ("SAY_FORMAT", "\"say v1 %d\\n\""),
        ("SAY_EXTRA", ""),
        ("WORK_FACTOR", "3"),
        ("TLS_STEP", "1"),
        ("TLS_BIAS", "0"),
        ("BUSY_EXTRA", "\"\""),
    ];
    for (k, v) in overrides {
        defs.iter_mut().find(|(n, _)| n == k).unwrap().1 = v;
    }
    let mut s: String = defs
        .iter()
        .map(|(k, v)| format!("#define {k} {v}\n"))
        .collect();
    s.push_str(PROG);
    s
}

fn v1() -> String {
    version(&[])
}

/// compute ×3, greet "hello v2", say prints through printf and puts.
fn v2() -> String {
    version(&[
        ("COMPUTE_FACTOR", "3"),
        ("GREETING", "\"hello v2\""),
        ("SAY_FORMAT", "\"say v2 %d\\n\""),
        ("SAY_EXTRA", "puts(\"extra line from the patch\");"),
    ])
}

struct Setup {
    work: Work,
    proc_: Proc,
}

fn start(tag: &str, extra: &[&str]) -> Setup {
    let work = Work::new(tag);
    let exe = common::build_program(&work, FILE, &v1(), extra);
    let proc_ = Proc::start(&exe, &work);
    Setup { work, proc_ }
}

fn patch_file(s: &Setup, id: &str, new_src: &str, funcs: &[&str], extra: &[&str]) -> String {
    patch_from(s, id, &v1(), new_src, funcs, extra)
}

/// A patch built against `base_src` (for stacking: v1 with the fixes below).
fn patch_from(
    s: &Setup,
    id: &str,
    base_src: &str,
    new_src: &str,
    funcs: &[&str],
    extra: &[&str],
) -> String {
    make_patch(&s.work, id, FILE, base_src, new_src, funcs, extra);
    s.work
        .path(&format!("{id}.hpo"))
        .to_str()
        .unwrap()
        .to_string()
}

fn assert_v1(p: &mut Proc) {
    assert_eq!(p.ask("compute 1"), "44");
    assert_eq!(p.ask("greet"), "hello v1");
    assert_eq!(p.ask("say 5"), "say v1 5");
    assert_eq!(p.read_line(), "said");
}

#[test]
fn apply_list_revert_through_hpctl() {
    let mut s = start("main", &[]);
    let pid = s.proc_.pid().to_string();
    let file = patch_file(&s, "fix-1", &v2(), &["compute", "greet", "say"], &[]);

    assert_v1(&mut s.proc_);
    assert_eq!(s.proc_.ask("calls"), "1");

    let (ok, out, err) = hpctl(&["apply", &pid, &file]);
    assert!(ok, "apply failed: {err}\nlog:\n{}", s.proc_.log_text());
    assert_eq!(
        out,
        "applied fix-1: 3 functions (consistent: no thread was running them)"
    );

    // New code, old state: the global and the static counter are the program's.
    assert_eq!(s.proc_.ask("compute 1"), "45");
    assert_eq!(s.proc_.ask("calls"), "2");
    assert_eq!(s.proc_.ask("g_value"), "42");
    assert_eq!(s.proc_.ask("greet"), "hello v2");
    // printf and puts from patch code: calls into libc through stubs.
    assert_eq!(s.proc_.ask("say 7"), "say v2 7");
    assert_eq!(s.proc_.read_line(), "extra line from the patch");
    assert_eq!(s.proc_.read_line(), "said");

    let (ok, out, _) = hpctl(&["list", &pid]);
    assert!(ok);
    // In the patch's record order: the differ's, symbol table order (locals first).
    assert_eq!(out, "fix-1 prog.c::greet compute say");
    let (ok, out, _) = hpctl(&["list", &pid, "--json"]);
    assert!(ok);
    assert_eq!(
        out,
        format!(
            "{{\"ok\":true,\"pid\":{pid},\"action\":\"list\",\"patches\":[{{\"id\":\"fix-1\",\"functions\":[\"prog.c::greet\",\"compute\",\"say\"]}}]}}"
        )
    );

    // The same patch twice is refused.
    let (ok, _, err) = hpctl(&["apply", &pid, &file]);
    assert!(!ok);
    assert!(err.contains("already applied"), "{err}");

    let (ok, out, err) = hpctl(&["revert", &pid, "--json"]);
    assert!(ok, "{err}");
    assert!(out.contains("\"id\":\"fix-1\""), "{out}");
    assert_v1(&mut s.proc_);
    assert_eq!(s.proc_.ask("calls"), "3");

    let (ok, _, err) = hpctl(&["revert", &pid]);
    assert!(!ok);
    assert_eq!(err, "hpctl: no patch applied");
    let (ok, out, _) = hpctl(&["list", &pid]);
    assert!(ok);
    assert_eq!(out, format!("no patches applied to process {pid}"));

    // The spinning threads were stopped and resumed, not killed.
    let a: u64 = s.proc_.ask("spins").parse().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let b: u64 = s.proc_.ask("spins").parse().unwrap();
    assert!(b > a);
    // A consistent revert (the default) unmaps the patch's code.
    assert!(s.proc_.log_text().contains("is freed"));
    // hpctl stops the threads with ptrace: interrupted sleeps restart.
    let eintr = s.proc_.ask("eintr");
    assert!(s.proc_.log_text().contains("stopped by the client"));
    assert!(eintr.starts_with("nanosleep_eintr=0/"), "{eintr}");
}

/// Stacked patches are checked against the code that is active: a fix
/// built against v1 cannot replace a function another patch already
/// replaced (it would silently drop that fix); one built on top of it can.
#[test]
fn stacked_patches_and_c_api() {
    let mut s = start("stack", &[]);
    let factor3 = version(&[("COMPUTE_FACTOR", "3")]);
    let a = patch_file(&s, "a", &factor3, &["compute"], &[]);
    let b = patch_file(
        &s,
        "b",
        &version(&[("COMPUTE_FACTOR", "4")]),
        &["compute"],
        &[],
    );
    let factor4 = version(&[("COMPUTE_FACTOR", "4")]);
    let b_on_a = patch_from(&s, "b-on-a", &factor3, &factor4, &["compute"], &[]);
    // The C API, from the program's own main thread.
    assert_eq!(
        s.proc_.ask(&format!("apply {a}")),
        "0 applied a: 1 function"
    );
    assert_eq!(s.proc_.ask("compute 1"), "45");
    // b was built against v1 alone: applying it would lose a's fix.
    let refused = s.proc_.ask(&format!("apply {b}"));
    assert!(
        refused.starts_with("-1 function compute: patch a replaced it")
            && refused.contains("built against the code before a"),
        "{refused}"
    );
    assert_eq!(s.proc_.ask("compute 1"), "45");
    assert_eq!(s.proc_.ask("list"), "1 a compute|");
    assert_eq!(
        s.proc_.ask(&format!("apply {b_on_a}")),
        "0 applied b-on-a: 1 function"
    );
    assert_eq!(s.proc_.ask("compute 1"), "46");
    assert_eq!(s.proc_.ask("list"), "2 a compute|b-on-a compute|");
    assert_eq!(s.proc_.ask("revert"), "0 reverted b-on-a");
    assert_eq!(s.proc_.ask("compute 1"), "45");
    assert_eq!(s.proc_.ask("revert"), "0 reverted a");
    assert_eq!(s.proc_.ask("compute 1"), "44");
    // And the other way round: a fix built on top of a is refused while a
    // is not applied.
    let refused = s.proc_.ask(&format!("apply {b_on_a}"));
    assert!(
        refused.starts_with("-1 function compute: running code does not match"),
        "{refused}"
    );
    assert_eq!(s.proc_.ask("revert"), "-1 no patch applied");
}

/// Levels, each built on the one below: levels 1-3 each change the size of
/// compute, level 2 replaces a function level 1 added (it is in no symbol
/// table of the executable), level 3 replaces it again and calls it from
/// its own compute, level 4 replaces only that function (level 3's direct
/// call must reach it). Reverts go back one level at a time, through hpctl
/// (consistent switches).
#[test]
fn stacked_levels_built_on_each_other() {
    levels("levels", &[]);
}

#[test]
fn stacked_levels_with_call_site_redirects() {
    levels("levels-cs", &["--redirect", "call-site"]);
}

fn levels(tag: &str, redirect: &[&str]) {
    let mut s = start(tag, &[]);
    let pid = s.proc_.pid().to_string();
    let bonus = |body: &str| {
        format!("__attribute__((noipa)) static int level_bonus(int x) {{ return {body}; }}")
    };
    let l1 = version(&[
        ("COMPUTE_PRELUDE", &bonus("x + 100")),
        ("COMPUTE_EXTRA", "+ level_bonus(x)"),
    ]);
    let l2 = version(&[
        ("COMPUTE_PRELUDE", &bonus("x * 7 + 1000")),
        ("COMPUTE_EXTRA", "+ level_bonus(x) + level_bonus(x + 1)"),
    ]);
    let three = "+ level_bonus(x) + level_bonus(x + 1) + level_bonus(x + 2)";
    let l3 = version(&[
        ("COMPUTE_PRELUDE", &bonus("x * 8 + 1500")),
        ("COMPUTE_EXTRA", three),
    ]);
    // Level 4 replaces only level_bonus, which level 3's compute calls
    // inside level 3's own code: that call must reach level 4 too.
    let l4 = version(&[
        ("COMPUTE_PRELUDE", &bonus("x * 9 + 2000")),
        ("COMPUTE_EXTRA", three),
    ]);
    let l1f = patch_from(&s, "l1", &v1(), &l1, &["compute"], &[]);
    let l2f = patch_from(&s, "l2", &l1, &l2, &["compute", "level_bonus"], &[]);
    let l3f = patch_from(&s, "l3", &l2, &l3, &["compute", "level_bonus"], &[]);
    let l4f = patch_from(&s, "l4", &l3, &l4, &["level_bonus"], &[]);

    // Level 2 needs level 1 below it: its base check fails on v1.
    let apply = |path: &str| {
        let mut args = vec!["apply"];
        args.extend_from_slice(redirect);
        args.extend([pid.as_str(), path]);
        hpctl(&args)
    };
    let (ok, _, err) = apply(&l2f);
    assert!(!ok && err.contains("level_bonus"), "{err}");
    assert_eq!(s.proc_.ask("compute 1"), "44");

    let levels = [
        (&l1f, "l1", "145"),
        (&l2f, "l2", "2065"),
        (&l3f, "l3", "4592"),
        (&l4f, "l4", "6098"),
    ];
    for (path, id, want) in levels {
        let (ok, out, err) = apply(path);
        assert!(ok, "{id}: {err}\nlog:\n{}", s.proc_.log_text());
        assert!(out.starts_with(&format!("applied {id}:")), "{out}");
        assert_eq!(s.proc_.ask("compute 1"), want, "after applying {id}");
    }
    let (ok, out, _) = hpctl(&["list", &pid]);
    assert!(ok);
    // With call-site redirects every function has its direct calls
    // rewritten (compute's from main and the forked child's loop, level 2's
    // level_bonus from level 1's compute); the counts are not the point.
    let shown: Vec<String> = out
        .lines()
        .map(|l| {
            l.split(' ')
                .filter(|w| !w.starts_with('(') && *w != "call" && *w != "sites)")
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let calls = out.matches(" call sites)").count();
    assert_eq!(calls, if redirect.is_empty() { 0 } else { 6 }, "{out}");
    assert_eq!(
        shown.join("\n"),
        "l1 compute\nl2 prog.c::level_bonus compute\nl3 prog.c::level_bonus compute\nl4 prog.c::level_bonus"
    );
    // The static counter compute bumps is the program's through every level.
    let calls: u64 = s.proc_.ask("calls").parse().unwrap();
    assert_eq!(calls, 5);
    for (id, want) in [("l4", "4592"), ("l3", "2065"), ("l2", "145"), ("l1", "44")] {
        let (ok, out, err) = hpctl(&["revert", &pid]);
        assert!(ok, "revert {id}: {err}");
        assert!(out.contains(id), "{out}");
        assert_eq!(s.proc_.ask("compute 1"), want, "after reverting {id}");
    }
    assert!(s.proc_.alive());
}

/// Call-site redirects stack: the second patch rewrites the sites the first
/// one pointed at its code, and each revert puts back exactly the level
/// below (a wrong byte would call unmapped code: the consistent revert
/// unmaps each patch).
#[test]
fn stacked_call_site_patches_revert_level_by_level() {
    let mut s = start("stack-cs", &[]);
    let pid = s.proc_.pid().to_string();
    let a = patch_file(
        &s,
        "csa",
        &version(&[("COMPUTE_FACTOR", "3")]),
        &["compute"],
        &[],
    );
    // Built on top of csa, as a second level must be.
    let b = patch_from(
        &s,
        "csb",
        &version(&[("COMPUTE_FACTOR", "3")]),
        &version(&[("COMPUTE_FACTOR", "4")]),
        &["compute"],
        &[],
    );
    for (file, want) in [(&a, "45"), (&b, "46")] {
        let (ok, out, err) = hpctl(&["apply", "--redirect", "call-site", &pid, file]);
        assert!(ok, "{err}\n{}", s.proc_.log_text());
        assert!(out.contains(" call sites)"), "{out}");
        assert_eq!(s.proc_.ask("compute 1"), want);
    }
    let (ok, out, _) = hpctl(&["list", &pid, "--json"]);
    assert!(ok);
    assert!(out.contains("\"call_sites\":["), "{out}");
    let (ok, out, _) = hpctl(&["list", &pid]);
    assert!(ok);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("compute (") && !l.contains("(0 call sites)")),
        "{out}"
    );
    for want in ["45", "44"] {
        let (ok, _, err) = hpctl(&["revert", &pid]);
        assert!(ok, "{err}");
        assert_eq!(s.proc_.ask("compute 1"), want);
    }
    assert_v1(&mut s.proc_);
}

/// A stopped process cannot answer: hpctl says so at once and sends
/// nothing, so the patch is not applied behind its back when the process
/// continues (issue 8, truthful replies).
#[test]
fn stopped_process_is_refused_at_once() {
    let mut s = start("stopped", &[]);
    let pid = s.proc_.pid();
    let file = patch_file(&s, "fix-s", &v2(), &["compute", "greet", "say"], &[]);
    common::stop_process(pid);
    let t0 = std::time::Instant::now();
    let (ok, _, err) = hpctl(&["apply", &pid.to_string(), &file]);
    assert!(!ok);
    assert!(err.contains("is stopped (state T)"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    std::thread::sleep(Duration::from_millis(100));
    assert_v1(&mut s.proc_);
    let (ok, out, _) = hpctl(&["list", &pid.to_string()]);
    assert!(ok);
    assert_eq!(out, format!("no patches applied to process {pid}"));
}

#[test]
fn mismatched_patch_is_refused_and_process_unchanged() {
    let mut s = start("mismatch", &[]);
    let pid = s.proc_.pid().to_string();
    // Built against a different "deployed" version (compute ×5 instead of ×2).
    let other_base = version(&[("COMPUTE_FACTOR", "5")]);
    make_patch(
        &s.work,
        "wrong",
        FILE,
        &other_base,
        &v2(),
        &["compute", "greet", "say"],
        &[],
    );
    let file = s.work.path("wrong.hpo");
    let (ok, _, err) = hpctl(&["apply", &pid, file.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains(
            "function compute: running code does not match the code this patch was built against"
        ),
        "{err}"
    );
    assert!(
        err.contains("was the patch built from the deployed version?"),
        "{err}"
    );
    assert_v1(&mut s.proc_);

    // A static function of a different size.
    let other_base = version(&[("GREETING", "g_value > 1 ? \"x\" : \"y\"")]);
    make_patch(
        &s.work,
        "wrong2",
        FILE,
        &other_base,
        &v2(),
        &["compute", "greet", "say"],
        &[],
    );
    let file = s.work.path("wrong2.hpo");
    let (ok, _, err) = hpctl(&["apply", &pid, file.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("function greet (prog.c): running code does not match"),
        "{err}"
    );
    assert!(err.contains("size"), "{err}");
    assert_v1(&mut s.proc_);
    let (ok, out, _) = hpctl(&["list", &pid]);
    assert!(ok && out.starts_with("no patches"), "{out}");
}

#[test]
fn garbage_over_the_socket_gives_err_and_process_survives() {
    let mut s = start("garbage", &[]);
    let pid = s.proc_.pid();
    let good = make_patch(
        &s.work,
        "g",
        FILE,
        &v1(),
        &v2(),
        &["compute", "greet", "say"],
        &[],
    );
    let t = Duration::from_secs(10);

    let r = protocol::send(
        pid,
        &Request::Apply {
            patch: vec![0x41; 1000],
            opts: lazy(),
        },
        t,
    )
    .unwrap();
    assert!(!r.ok);
    assert!(r.message.contains("not an ELF"), "{}", r.message);

    // Every truncation of a real patch is refused cleanly.
    for len in [1, 16, 63, 64, 200, good.len() / 2, good.len() - 1] {
        let r = protocol::send(
            pid,
            &Request::Apply {
                patch: good[..len].to_vec(),
                opts: lazy(),
            },
            t,
        )
        .unwrap();
        assert!(!r.ok, "truncated to {len} accepted");
    }
    // Random byte flips in a valid patch must never crash the process.
    // Sealed again (where the flips leave the hash findable), so they reach
    // the checks behind the content hash.
    let mut seed = 0x1234_5678_u64;
    for _ in 0..200 {
        let mut p = good.clone();
        for _ in 0..4 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let at = (seed >> 33) as usize % p.len();
            p[at] ^= (seed >> 8) as u8 | 1;
        }
        let _ = format::seal(&mut p);
        let r = protocol::send(
            pid,
            &Request::Apply {
                patch: p,
                opts: lazy(),
            },
            t,
        )
        .unwrap();
        if r.ok {
            // A flip in a harmless place (padding, a name we don't use): undo.
            assert!(protocol::send(pid, &Request::Revert(lazy()), t).unwrap().ok);
        }
        assert!(s.proc_.alive());
    }

    // Announce more bytes than are sent, then close the write side.
    let addr = SocketAddr::from_abstract_name(protocol::socket_name(pid).as_bytes()).unwrap();
    let mut c = UnixStream::connect_addr(&addr).unwrap();
    c.write_all(b"APPLY 1000\nELF-ish").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    assert!(
        reply.starts_with("ERR truncated request: expected 1000 patch bytes, got 7"),
        "{reply}"
    );

    for bad in [
        &b"HELLO\n"[..],
        b"APPLY x\n",
        b"APPLY 999999999999\n",
        b"APPLY 0\n",
    ] {
        let mut c = UnixStream::connect_addr(&addr).unwrap();
        c.write_all(bad).unwrap();
        let mut reply = String::new();
        c.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("ERR "), "{reply}");
    }

    assert_v1(&mut s.proc_);
    // And a good patch still works afterwards.
    let r = protocol::send(
        pid,
        &Request::Apply {
            patch: good,
            opts: lazy(),
        },
        t,
    )
    .unwrap();
    assert!(r.ok, "{}", r.message);
    assert_eq!(s.proc_.ask("compute 1"), "45");
}

#[test]
fn busy_function_is_refused_by_name() {
    let mut s = start("busy", &[]);
    let pid = s.proc_.pid().to_string();
    assert_eq!(s.proc_.ask("busy"), "started");
    std::thread::sleep(Duration::from_millis(50));
    let file = patch_file(
        &s,
        "busy",
        &version(&[("BUSY_EXTRA", "\"\\n nop\"")]),
        &["busy_loop"],
        &[],
    );
    // Consistent (the default): busy_loop never leaves the stack.
    let (ok, _, err) = hpctl(&["apply", "--timeout-ms", "300", &pid, &file]);
    assert!(!ok);
    assert!(
        err.contains("function busy_loop is on the stack of thread"),
        "{err}"
    );
    // Lazy: the thread sits in the bytes the jump would overwrite.
    let (ok, _, err) = hpctl(&["apply", "--lazy", &pid, &file]);
    assert!(!ok);
    assert!(err.contains("function busy_loop is busy: thread"), "{err}");
    assert!(err.contains("is executing its first bytes"), "{err}");
    assert_v1(&mut s.proc_);
}

#[test]
fn function_under_heavy_use_is_patched_while_threads_spin() {
    let mut s = start("spin", &[]);
    let pid = s.proc_.pid().to_string();
    let file = patch_file(
        &s,
        "wu",
        &version(&[("WORK_FACTOR", "5")]),
        &["work_unit"],
        &[],
    );
    assert_eq!(s.proc_.ask("wu 10"), "30");
    for round in 0..10 {
        let (ok, _, err) = hpctl(&["apply", &pid, &file]);
        assert!(ok, "round {round}: {err}");
        assert_eq!(s.proc_.ask("wu 10"), "50");
        let (ok, _, err) = hpctl(&["revert", &pid]);
        assert!(ok, "round {round}: {err}");
        assert_eq!(s.proc_.ask("wu 10"), "30");
    }
    let a: u64 = s.proc_.ask("spins").parse().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(s.proc_.ask("spins").parse::<u64>().unwrap() > a);
    let eintr = s.proc_.ask("eintr");
    eprintln!("EINTR after 20 stops: {eintr}");
    assert!(
        eintr.ends_with("read_eintr=0") && eintr.starts_with("nanosleep_eintr=0/"),
        "read() and nanosleep() must be restarted (hpctl stops with ptrace): {eintr}"
    );
}

#[test]
fn endbr64_functions_keep_their_landing_pad() {
    let flags = ["-fcf-protection=full"];
    let work = Work::new("cet");
    let exe = common::build_program(&work, FILE, &v1(), &flags);
    let mut p = Proc::start(&exe, &work);
    let pid = p.pid().to_string();
    make_patch(
        &work,
        "cet",
        FILE,
        &v1(),
        &v2(),
        &["compute", "greet", "say"],
        &flags,
    );
    let file = work.path("cet.hpo");
    let before = p.ask("head");
    assert!(
        before.starts_with("f30f1efa"),
        "compute does not start with endbr64: {before}"
    );
    let (ok, _, err) = hpctl(&["apply", &pid, file.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(p.ask("compute 1"), "45");
    assert_eq!(p.ask("greet"), "hello v2");
    // endbr64 kept, the jump right after it.
    let after = p.ask("head");
    assert!(after.starts_with("f30f1efae9"), "{after}");
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(
        !maps
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("rwxp")),
        "W+X mapping:\n{maps}"
    );
    let (ok, _, err) = hpctl(&["revert", &pid]);
    assert!(ok, "{err}");
    assert_eq!(p.ask("compute 1"), "44");
    assert_eq!(p.ask("head"), before);
}

#[test]
fn other_users_are_refused_by_the_loader() {
    // Needs root (to act as another user) and setpriv + python3 as a raw client.
    let root = std::fs::metadata("/proc/self").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    let have = |tool: &str| {
        std::process::Command::new(tool)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if root.ok() != Some(true) || !have("setpriv") || !have("/usr/bin/python3") {
        eprintln!("skipped: needs root, setpriv and python3");
        return;
    }
    let s = start("peercred", &[]);
    let name = protocol::socket_name(s.proc_.pid());
    let script = format!(
        "import socket; s=socket.socket(socket.AF_UNIX); s.connect('\\0{name}'); print(s.recv(4096).decode().strip())"
    );
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            &script,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("ERR permission denied: uid 65534 may not patch this process"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // hpctl checks the owner itself before connecting.
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_hpctl"),
            "list",
        ])
        .arg(s.proc_.pid().to_string())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "hpctl: process {} belongs to uid 0; run hpctl as that user or as root",
            s.proc_.pid()
        )
    );
}

/// A patch using a thread-local of the executable gets the same TP offset
/// the program's own code uses; `model` selects how the code reaches it.
fn tls_patch_works(tag: &str, extra: &[&str], reloc: &str) {
    let mut s = start(tag, extra);
    let pid = s.proc_.pid().to_string();
    let own: i64 = s.proc_.ask("tlsown").parse().unwrap();
    assert_eq!(s.proc_.ask("tlsoff"), own.to_string());
    assert_eq!(s.proc_.ask("tls"), "1");
    let new = version(&[("TLS_STEP", "2"), ("TLS_BIAS", "1000")]);
    let file = patch_file(&s, tag, &new, &["tls_bump", "tls_offset"], extra);
    let obj = std::fs::read(&file).unwrap();
    let relocs = common::reloc_types(&obj);
    assert!(
        relocs.iter().any(|r| r == reloc),
        "{tag}: patch has {relocs:?}, wanted {reloc}"
    );
    let (ok, _, err) = hpctl(&["apply", &pid, &file]);
    assert!(ok, "{err}\n{}", s.proc_.log_text());
    // The patched code finds tls_count exactly where the program's own code does.
    assert_eq!(s.proc_.ask("tlsoff"), (own + 1000).to_string());
    // The main thread's count continues in steps of 2.
    assert_eq!(s.proc_.ask("tls"), "3");
    assert_eq!(s.proc_.ask("tls"), "5");
    assert!(s.proc_.alive());
}

#[test]
fn tls_local_exec_tpoff32() {
    tls_patch_works("tls-le", &[], "R_X86_64_TPOFF32");
}

#[test]
fn tls_initial_exec_gottpoff() {
    // -fPIC keeps the compiler from upgrading initial-exec to local-exec
    // (code that may end up in a shared object cannot know the offset).
    tls_patch_works(
        "tls-ie",
        &["-fPIC", "-ftls-model=initial-exec"],
        "R_X86_64_GOTTPOFF",
    );
}

#[test]
fn tls_local_exec_in_a_non_pie_program() {
    tls_patch_works("tls-nopie", &["-fno-pie", "-no-pie"], "R_X86_64_TPOFF32");
}

/// -fPIC code uses local-dynamic TLS (__tls_get_addr): for the executable's
/// thread-locals, refused with a reason (a library's are reached that way:
/// library.rs).
/// (The patch replaces compute(), which had no TLS access, so what refuses
/// it is the loader's relocation check, not the fingerprint of code the
/// linker rewrote.)
#[test]
fn tls_dynamic_models_are_refused_with_a_reason() {
    let mut s = start("tls-ld", &["-fPIC"]);
    let pid = s.proc_.pid().to_string();
    let file = patch_file(
        &s,
        "tls-ld",
        &version(&[("COMPUTE_FACTOR", "(2 + (int)tls_count)")]),
        &["compute"],
        &["-fPIC"],
    );
    let (ok, _, err) = hpctl(&["apply", &pid, &file]);
    assert!(!ok);
    assert!(err.contains("relocation R_X86_64_TLS"), "{err}");
    assert!(err.contains("tls_count"), "{err}");
    assert!(err.contains("general/local-dynamic access"), "{err}");
    assert!(err.contains("-fPIE or -fno-pie"), "{err}");
    assert_eq!(s.proc_.ask("tls"), "1");
}

#[test]
fn hpctl_reports_what_to_do() {
    let work = Work::new("hpctl");
    // No such process.
    let (ok, _, err) = hpctl(&["list", "999999999"]);
    assert!(!ok);
    assert_eq!(err, "hpctl: no such process 999999999");
    // A process without the loader.
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let spid = sleeper.id().to_string();
    let (ok, _, err) = hpctl(&["revert", &spid]);
    assert!(!ok);
    assert_eq!(
        err,
        format!("hpctl: process {spid} has no hotpatch loader listening (link libhotpatch.a with -Wl,--whole-archive)")
    );
    // Bad patch files are rejected before the process is contacted.
    let junk = work.path("junk.hpo");
    std::fs::write(&junk, b"definitely not ELF").unwrap();
    let (ok, out, err) = hpctl(&["apply", &spid, junk.to_str().unwrap(), "--json"]);
    assert!(!ok);
    assert!(
        err.contains("is not a usable patch: not an ELF object"),
        "{err}"
    );
    assert!(out.starts_with("{\"ok\":false,\"error\":"), "{out}");
    let (ok, _, err) = hpctl(&["apply", &spid, "/nonexistent/x.hpo"]);
    assert!(!ok);
    assert!(
        err.contains("cannot read patch file /nonexistent/x.hpo"),
        "{err}"
    );
    // An ELF object without metadata.
    let plain = common::compile(&work, "plain", "plain.c", "int f(void){return 1;}\n", &[]);
    let (ok, _, err) = hpctl(&["apply", &spid, plain.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("no .hotpatch.meta section"), "{err}");
    // Another user's process (only meaningful when not root).
    let (ok, _, err) = hpctl(&["list", "1"]);
    assert!(!ok);
    assert!(
        err.contains("belongs to uid") || err.contains("no hotpatch loader"),
        "{err}"
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

/// A -no-pie program: the patch's code is -fno-pie too and reaches its own
/// string literal with an absolute R_X86_64_32, so the region must be (and
/// is) placed below 2 GiB near the executable.
#[test]
fn non_pie_program_takes_absolute_32_bit_relocations() {
    let flags = ["-fno-pie", "-no-pie"];
    let mut s = start("nopie", &flags);
    let pid = s.proc_.pid().to_string();
    assert_v1(&mut s.proc_);
    let file = patch_file(&s, "nopie", &v2(), &["compute", "greet", "say"], &flags);
    let relocs = common::reloc_types(&std::fs::read(&file).unwrap());
    assert!(
        relocs
            .iter()
            .any(|r| r == "R_X86_64_32" || r == "R_X86_64_32S"),
        "{relocs:?}"
    );
    let (ok, _, err) = hpctl(&["apply", &pid, &file]);
    assert!(ok, "{err}\n{}", s.proc_.log_text());
    assert_eq!(s.proc_.ask("greet"), "hello v2");
    assert_eq!(s.proc_.ask("compute 1"), "45");
    let log = s.proc_.log_text();
    let region = log
        .lines()
        .find_map(|l| l.split("patch text ").nth(1))
        .and_then(|r| r.split('-').nth(1))
        .map(|end| {
            u64::from_str_radix(end.trim_start_matches("0x").split(' ').next().unwrap(), 16)
                .unwrap()
        })
        .expect("the loader logs where the patch's code is");
    assert!(region <= 1 << 31, "region ends at {region:#x}, above 2 GiB");
}

/// Reads "value loops" from a file a forked child rewrites, until the value
/// is `want` (5 s at most); returns the loop count then.
fn wait_child_value(path: &std::path::Path, want: &str) -> u64 {
    let mut seen = String::new();
    for _ in 0..500 {
        seen = std::fs::read_to_string(path).unwrap_or_default();
        let mut fields = seen.split_whitespace();
        if fields.next() == Some(want) {
            return fields.next().unwrap().parse().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{}: wanted {want}, last read {seen:?}", path.display());
}

fn no_writable_code(pid: &str) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let rwx: Vec<&str> = maps.lines().filter(|l| l.contains(" rwx")).collect();
    assert!(rwx.is_empty(), "process {pid} has W+X pages: {rwx:?}");
}

/// A forked child and a daemon (fork, setsid, fork) each get their own
/// listener: a patch applied before the fork is inherited and can be
/// reverted in one process alone, and either can be patched on its own,
/// with its threads and its state. No process ever has a writable and
/// executable page.
#[test]
fn forked_children_and_daemons_are_patchable() {
    let mut s = start("fork", &[]);
    let pid = s.proc_.pid().to_string();
    let file = patch_file(
        &s,
        "fk",
        &version(&[("COMPUTE_FACTOR", "3")]),
        &["compute"],
        &[],
    );
    let (ok, _, err) = hpctl(&["apply", &pid, &file]);
    assert!(ok, "{err}");
    let child_out = s.work.path("child.txt");
    let daemon_out = s.work.path("daemon.txt");
    let child = s.proc_.ask(&format!("fork {}", child_out.display()));
    let daemon = s.proc_.ask(&format!("daemon {}", daemon_out.display()));
    let kill = |p: &str| {
        let _ = std::process::Command::new("kill").args(["-9", p]).status();
    };
    let guard = [child.clone(), daemon.clone()];
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert!(child.parse::<u32>().unwrap() > 0 && daemon.parse::<u32>().unwrap() > 0);
        // Both inherited the patched code.
        wait_child_value(&child_out, "45");
        wait_child_value(&daemon_out, "45");
        // The child reverts alone; the parent keeps its patch.
        let (ok, out, err) = hpctl(&["revert", &child]);
        assert!(ok, "revert in the child: {err}");
        assert!(out.contains("reverted fk"), "{out}");
        let before = wait_child_value(&child_out, "44");
        assert_eq!(s.proc_.ask("compute 1"), "45");
        // And takes it again, its loop counter going on.
        let (ok, _, err) = hpctl(&["apply", &child, &file]);
        assert!(ok, "apply in the child: {err}");
        assert!(wait_child_value(&child_out, "45") > before);
        // The daemon, in its own session, likewise.
        let (ok, _, err) = hpctl(&["revert", &daemon]);
        assert!(ok, "revert in the daemon: {err}");
        wait_child_value(&daemon_out, "44");
        let (ok, out, _) = hpctl(&["list", &daemon]);
        assert!(ok);
        assert_eq!(out, format!("no patches applied to process {daemon}"));
        for p in [&pid, &child, &daemon] {
            no_writable_code(p);
        }
    }));
    for p in &guard {
        kill(p);
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// Threads are created and exit all the time during every apply and
/// revert: each stop method still switches every time (a thread that exits
/// mid-stop needs no stop; one blocking signals for a moment in
/// pthread_create is not refused).
#[test]
fn threads_starting_and_exiting_during_apply() {
    let mut s = start("churn", &[]);
    let pid = s.proc_.pid().to_string();
    let file = patch_file(
        &s,
        "churn",
        &version(&[("COMPUTE_FACTOR", "3")]),
        &["compute"],
        &[],
    );
    assert_eq!(s.proc_.ask("churn"), "churning");
    for how in [&[][..], &["--lazy"][..], &["--signal-stop"][..]] {
        for round in 0..10 {
            for (op, want) in [("apply", "45"), ("revert", "44")] {
                let mut args = vec![op];
                args.extend_from_slice(how);
                args.push(&pid);
                if op == "apply" {
                    args.push(&file);
                }
                let (ok, _, err) = hpctl(&args);
                assert!(ok, "{op} {how:?} round {round}: {err}");
                assert_eq!(s.proc_.ask("compute 1"), want, "{op} {how:?} round {round}");
            }
        }
    }
    // And the C API (the loader's own signal stop), from the main thread.
    for _ in 0..5 {
        assert_eq!(
            s.proc_.ask(&format!("apply {file}")),
            "0 applied churn: 1 function"
        );
        assert_eq!(s.proc_.ask("revert"), "0 reverted churn");
    }
    assert!(s.proc_.alive());
}

/// (mappings, private KiB) of a process.
fn memory_of(pid: &str) -> (usize, u64) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let private = rollup
        .lines()
        .filter(|l| l.starts_with("Private_"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    (maps.lines().count(), private)
}

/// Patches share pages, and a reverted patch's memory comes back, lazily
/// reverted ones included (freed by a later switch that finds no thread in
/// them): the mapping count stays flat over many cycles and a patch costs
/// at most a page.
#[test]
fn memory_comes_back_after_revert() {
    let mut s = start("memory", &[]);
    let pid = s.proc_.pid().to_string();
    let file = patch_file(
        &s,
        "mem",
        &version(&[("COMPUTE_FACTOR", "3")]),
        &["compute"],
        &[],
    );
    let cycle = |lazy: bool| {
        let (ok, _, err) = hpctl(&["apply", &pid, &file]);
        assert!(ok, "{err}");
        let revert: &[&str] = if lazy {
            &["revert", "--lazy"]
        } else {
            &["revert"]
        };
        let (ok, _, err) = hpctl(&[revert, &[pid.as_str()]].concat());
        assert!(ok, "{err}");
    };
    for _ in 0..3 {
        cycle(true); // the loader's one-time tables and caches
    }
    let (maps0, private0) = memory_of(&pid);
    for i in 0..40 {
        cycle(i % 2 == 0);
    }
    let (maps1, private1) = memory_of(&pid);
    assert_eq!(maps1, maps0, "mappings after 40 apply/revert cycles");
    assert!(
        private1 <= private0 + 16,
        "private memory grew from {private0} to {private1} KiB over 40 cycles"
    );
    // One applied patch costs at most a page.
    let (ok, _, err) = hpctl(&["apply", &pid, &file]);
    assert!(ok, "{err}");
    let (maps2, private2) = memory_of(&pid);
    assert_eq!(
        maps2, maps1,
        "an apply into the existing patch memory maps nothing"
    );
    assert!(
        private2 <= private1 + 4,
        "a 1-function patch took {} KiB",
        private2 - private1
    );
    assert_eq!(s.proc_.ask("compute 1"), "45");
}
