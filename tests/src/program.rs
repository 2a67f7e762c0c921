//! A running fixture program driven line by line over stdin/stdout.

use crate::run::{with_newline, Output};
use crate::{Res, LINE_TIMEOUT};
use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// A fixture program talking over stdin/stdout; killed when dropped.
pub struct Program {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Option<String>>,
    /// The conversation so far (`> sent`, `< received`).
    pub transcript: Vec<String>,
    /// Where the program's stderr goes.
    pub stderr_path: PathBuf,
    /// Where HOTPATCH_LOG points.
    pub log_path: PathBuf,
    exited: Option<ExitStatus>,
}

impl Program {
    /// Starts `exe` in `workdir`; stderr goes to `workdir/prog.stderr`, the
    /// loader log to `workdir/hotpatch.log` (HOTPATCH_LOG).
    pub fn start(exe: &Path, workdir: &Path) -> Res<Program> {
        Program::start_with_env(exe, workdir, &[])
    }

    /// [`Program::start`] with these environment variables set too (e.g.
    /// `HOTPATCH_PUBKEY`).
    pub fn start_with_env(exe: &Path, workdir: &Path, env: &[(&str, &OsStr)]) -> Res<Program> {
        let stderr_path = workdir.join("prog.stderr");
        let log_path = workdir.join("hotpatch.log");
        let err = fs::File::create(&stderr_path)
            .map_err(|e| format!("{}: {e}", stderr_path.display()))?;
        let mut child = Command::new(exe)
            .current_dir(workdir)
            .env("HOTPATCH_LOG", &log_path)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            loop {
                let mut line = String::new();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(None);
                        return;
                    }
                    Ok(_) => {
                        if tx
                            .send(Some(line.trim_end_matches(['\n', '\r']).to_string()))
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        let stdin = child.stdin.take();
        Ok(Program {
            child,
            stdin,
            lines: rx,
            transcript: Vec::new(),
            stderr_path,
            log_path,
            exited: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exit_note(&mut self) -> String {
        thread::sleep(Duration::from_millis(50));
        if let Ok(Some(st)) = self.child.try_wait() {
            self.exited = Some(st);
        }
        match self.exited {
            Some(st) => format!("the program exited: {st}"),
            None => "the program is still running".into(),
        }
    }

    /// Sends one line and returns the answer line (waiting at most
    /// [`LINE_TIMEOUT`]). Any line that arrives unasked is an error: only
    /// the program writes to stdout, one line per command.
    pub fn ask(&mut self, line: &str) -> Res<String> {
        if let Ok(extra) = self.lines.try_recv() {
            if let Some(extra) = extra {
                self.transcript.push(format!("< {extra}    (unasked!)"));
                return Err(format!(
                    "unexpected line on the program's stdout before sending {line:?}: {extra:?} \
                     (the loader must never write to stdout)"
                ));
            }
            return Err(format!(
                "the program closed its stdout; {}",
                self.exit_note()
            ));
        }
        self.transcript.push(format!("> {line}"));
        let Some(stdin) = self.stdin.as_mut() else {
            return Err("stdin already closed".into());
        };
        if let Err(e) = stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|_| stdin.flush())
        {
            return Err(format!(
                "writing {line:?} to the program: {e}; {}",
                self.exit_note()
            ));
        }
        match self.lines.recv_timeout(LINE_TIMEOUT) {
            Ok(Some(ans)) => {
                self.transcript.push(format!("< {ans}"));
                Ok(ans)
            }
            Ok(None) | Err(RecvTimeoutError::Disconnected) => {
                self.transcript.push("< (end of output)".into());
                Err(format!(
                    "no answer to {line:?}: the program closed its stdout; {}",
                    self.exit_note()
                ))
            }
            Err(RecvTimeoutError::Timeout) => {
                self.transcript.push("< (no answer)".into());
                Err(format!(
                    "no answer to {line:?} within {LINE_TIMEOUT:?}; {}",
                    self.exit_note()
                ))
            }
        }
    }

    /// Sends `send`; the answer must be `expect`. With `retry`, resends until
    /// it is (for at most that long).
    pub fn expect(&mut self, send: &str, expect: &str, retry: Option<Duration>) -> Res<()> {
        let deadline = retry.map(|r| Instant::now() + r);
        let mut previous: Option<String> = None;
        let mut repeats = 0usize;
        loop {
            let got = self.ask(send)?;
            // Keep the transcript short while retrying: one entry per distinct answer.
            if previous.as_deref() == Some(got.as_str()) {
                let n = self.transcript.len();
                self.transcript.truncate(n - 2);
                repeats += 1;
                if let Some(last) = self.transcript.last_mut() {
                    if let Some(at) = last.find("    (same answer ") {
                        last.truncate(at);
                    }
                    *last += &format!("    (same answer {} more times)", repeats);
                }
            } else {
                repeats = 0;
                previous = Some(got.clone());
            }
            if got == expect {
                return Ok(());
            }
            match deadline {
                Some(d) if Instant::now() < d => thread::sleep(Duration::from_millis(50)),
                _ => {
                    let how = if retry.is_some() {
                        " (still, after retrying)"
                    } else {
                        ""
                    };
                    return Err(format!(
                        "sent {send:?}: expected {expect:?}, got {got:?}{how}"
                    ));
                }
            }
        }
    }

    /// Records a tool run in the transcript (`# command -> status: output`).
    pub fn note(&mut self, out: &Output) {
        let first = out
            .stdout
            .lines()
            .chain(out.stderr.lines())
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        self.transcript
            .push(format!("# {} -> {}: {}", out.cmdline, out.status, first));
    }

    /// The program's stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The loader's log: HOTPATCH_LOG's file, else /tmp/hotpatch.<pid>.log.
    pub fn loader_log(&self) -> String {
        let mut s = String::new();
        for p in [
            self.log_path.clone(),
            PathBuf::from(format!("/tmp/hotpatch.{}.log", self.pid())),
        ] {
            if let Ok(t) = fs::read_to_string(&p) {
                s += &format!("({})\n{}", p.display(), with_newline(&t));
            }
        }
        if s.is_empty() {
            s = format!(
                "(no log at {} nor /tmp/hotpatch.{}.log)\n",
                self.log_path.display(),
                self.pid()
            );
        }
        s
    }

    /// Conversation, stderr and loader log, for failure messages.
    pub fn report(&self) -> String {
        format!(
            "--- program conversation (pid {}) ---\n{}\n--- program stderr ---\n{}--- loader log ---\n{}--------------",
            self.pid(),
            self.transcript.join("\n"),
            with_newline(&self.stderr()),
            self.loader_log()
        )
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
