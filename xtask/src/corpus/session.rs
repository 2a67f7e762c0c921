//! A long-running process fed requests through a pipe: the Lua driver or the
//! sqlite3 shell. Output lines arrive on a channel so a hung or dead process
//! becomes an error with a reason instead of a hang.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

pub struct Session {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    /// The line that ends each reply starts with this.
    done: String,
}

impl Session {
    /// Starts `cmd` (stdout and stderr are read as one stream by the caller's
    /// choice of command: a shell `2>&1` or a driver that writes stdout).
    pub fn start(mut cmd: Command, done: &str) -> Result<Session, String> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
        let stdin = child.stdin.take().expect("piped");
        let out = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Session {
            child,
            stdin,
            lines: rx,
            done: done.to_string(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `text` and returns the reply's lines (without the end line).
    pub fn request(&mut self, text: &str, timeout: Duration) -> Result<Vec<String>, String> {
        self.stdin
            .write_all(text.as_bytes())
            .and_then(|_| self.stdin.flush())
            .map_err(|e| {
                format!(
                    "the process stopped reading its input: {e} ({})",
                    self.status()
                )
            })?;
        let end = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(&self.done) => return Ok(out),
                Ok(l) => out.push(l),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("no reply within {timeout:?}; got {out:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!(
                        "the process died ({}); its last output: {out:?}",
                        self.status()
                    ))
                }
            }
        }
    }

    fn status(&mut self) -> String {
        std::thread::sleep(Duration::from_millis(50));
        match self.child.try_wait() {
            Ok(Some(s)) => s.to_string(),
            _ => "still running".into(),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
