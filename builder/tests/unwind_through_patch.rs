//! The `.eh_frame` hpbuild ships lets the loader walk a stack *through* patch
//! code. Two patches built from the same base: p1 changes `inner()`, p2
//! changes `outer()`, which calls `inner()`. With p1 applied, a thread
//! blocks in `gate()` called from p1's `inner()`, called from the old
//! `outer()`. `apply --consistent` of p2 must find `outer()` on that stack
//! — only possible by unwinding p1's code (gcc -O2 keeps no frame pointer),
//! else the loader says the stack "could not be walked" — and succeed once
//! the thread is released. (The e2e harness has one patch per fixture, and
//! on a revert the patch's own frame is already the busy one, so this needs
//! two patches.) Talks to the loader as hpctl does (`format::protocol`).

use format::protocol::{send, Mode, Options, Reply, Request};

/// Lazy (None) or consistent with a timeout; the loader stops the threads
/// with its own signal (this test is not hpctl).
fn switch(consistent_ms: Option<u32>) -> Options {
    Options {
        mode: match consistent_ms {
            Some(timeout_ms) => Mode::Consistent { timeout_ms },
            None => Mode::Lazy,
        },
        ..Options::default()
    }
}
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

const HPBUILD: &str = env!("CARGO_BIN_EXE_hpbuild");

const PROG: &str = r#"#include <pthread.h>
#include <stdio.h>
#include <string.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int armed, waiting, released, result;

__attribute__((noinline)) void gate(void)
{
    pthread_mutex_lock(&mu);
    if (armed) {
        armed = 0;
        waiting = 1;
        pthread_cond_broadcast(&cv);
        while (!released)
            pthread_cond_wait(&cv, &mu);
    }
    pthread_mutex_unlock(&mu);
}

__attribute__((noinline)) int inner(int n)
{
    gate();
    return n + 1;
}

__attribute__((noinline)) int outer(int n)
{
    return inner(n) * 10;
}

static void *worker(void *arg)
{
    result = outer(*(int *)arg);
    return NULL;
}

int main(void)
{
    char line[64];
    int n, arg = 1;
    pthread_t t;

    setvbuf(stdout, NULL, _IOLBF, 0);
    while (fgets(line, sizeof line, stdin)) {
        if (sscanf(line, "call %d", &n) == 1) {
            printf("%d\n", outer(n));
        } else if (strcmp(line, "start\n") == 0) {
            armed = 1;
            pthread_create(&t, NULL, worker, &arg);
            pthread_mutex_lock(&mu);
            while (!waiting)
                pthread_cond_wait(&cv, &mu);
            pthread_mutex_unlock(&mu);
            printf("blocked\n");
        } else if (strcmp(line, "release\n") == 0) {
            pthread_mutex_lock(&mu);
            released = 1;
            pthread_cond_broadcast(&cv);
            pthread_mutex_unlock(&mu);
            pthread_join(t, NULL);
            printf("%d\n", result);
        }
    }
    return 0;
}
"#;

fn run(dir: &Path, cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `fix.patch` replacing `from` by `to` in prog.c, built into `NAME.hpo`.
fn build_patch(dir: &Path, name: &str, from: &str, to: &str) -> Vec<u8> {
    let new = PROG.replacen(from, to, 1);
    assert_ne!(new, PROG);
    std::fs::write(dir.join("new.c"), new).unwrap();
    let diff = Command::new("diff")
        .args([
            "-u", "--label", "a/prog.c", "--label", "b/prog.c", "prog.c", "new.c",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    std::fs::remove_file(dir.join("new.c")).unwrap();
    std::fs::write(dir.join(format!("../{name}.patch")), diff.stdout).unwrap();
    let hpo = format!("../{name}.hpo");
    run(
        dir,
        HPBUILD,
        &[
            "--base",
            ".",
            "--diff",
            &format!("../{name}.patch"),
            "-o",
            &hpo,
        ],
    );
    std::fs::read(dir.join(hpo)).unwrap()
}

struct Prog {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Prog {
    fn ask(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").unwrap();
        self.lines
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no answer to {line:?}"))
    }
}

impl Drop for Prog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn request(pid: u32, req: &Request) -> Reply {
    send(pid, req, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn consistent_apply_walks_through_an_earlier_patchs_code() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    std::fs::create_dir(&base).unwrap();
    std::fs::write(base.join("prog.c"), PROG).unwrap();
    let db = format!(
        r#"[{{"directory": "{}", "file": "prog.c", "arguments": ["gcc", "-O2", "-c", "prog.c", "-o", "prog.o"]}}]"#,
        base.display()
    );
    std::fs::write(base.join("compile_commands.json"), db).unwrap();
    let p1 = build_patch(&base, "p1", "return n + 1;", "return n + 2;");
    let p2 = build_patch(&base, "p2", "inner(n) * 10;", "inner(n) * 100;");

    // The program, built as in compile_commands.json, with the loader.
    let lib = tmp.path().join("lib");
    run(
        tmp.path(),
        HPBUILD,
        &["loader", "--out", lib.to_str().unwrap()],
    );
    run(&base, "gcc", &["-O2", "-c", "prog.c", "-o", "prog.o"]);
    let loader_args = loader::link_args(&lib);
    let mut args = vec!["prog.o", "-o", "prog"];
    args.extend(loader_args.iter().map(|a| a.to_str().unwrap()));
    run(&base, "gcc", &args);
    let log = tmp.path().join("hotpatch.log");
    let mut child = Command::new(base.join("prog"))
        .env("HOTPATCH_LOG", &log)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut prog = Prog {
        child,
        stdin,
        lines,
    };
    let pid = prog.child.id();
    assert_eq!(prog.ask("call 1"), "20"); // the loader is up once main runs
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    let r = request(
        pid,
        &Request::Apply {
            patch: p1,
            opts: switch(None),
        },
    );
    assert!(r.ok, "{r:?}");
    assert!(
        log_text().contains("with unwind information"),
        "{}",
        log_text()
    );
    assert_eq!(prog.ask("call 1"), "30");
    assert_eq!(prog.ask("start"), "blocked");

    // gate() <- p1's inner() <- old outer(): outer() is busy for p2.
    let r = request(
        pid,
        &Request::Apply {
            patch: p2.clone(),
            opts: switch(Some(300)),
        },
    );
    assert!(!r.ok, "{r:?}");
    assert!(
        r.message
            .contains("function outer is on the stack of thread")
            && !r.message.contains("could not be walked"),
        "{r:?}\n{}",
        log_text()
    );

    assert_eq!(prog.ask("release"), "30"); // old outer, p1's inner
    let r = request(
        pid,
        &Request::Apply {
            patch: p2,
            opts: switch(Some(5000)),
        },
    );
    assert!(r.ok, "{r:?}\n{}", log_text());
    assert_eq!(prog.ask("call 1"), "300");
}
