//! Running commands with a time limit; output goes to anonymous files so a
//! child can never block on a full pipe.

use crate::Res;
use std::fs;
use std::io::{Read, Seek};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// What a finished command left behind.
#[derive(Debug)]
pub struct Output {
    /// The command line, for messages.
    pub cmdline: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The command, its exit status and its output, for failure messages.
    pub fn report(&self) -> String {
        format!(
            "$ {}\nexit: {}\n--- stdout ---\n{}--- stderr ---\n{}--------------",
            self.cmdline,
            self.status,
            with_newline(&self.stdout),
            with_newline(&self.stderr)
        )
    }
}

pub(crate) fn with_newline(s: &str) -> String {
    if s.is_empty() || s.ends_with('\n') {
        s.to_string()
    } else {
        format!("{s}\n")
    }
}

/// A printable form of a command line.
pub fn cmdline(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
            s.push_str(&format!("'{}'", a.replace('\'', "'\\''")));
        } else {
            s.push_str(&a);
        }
    }
    s
}

/// A started command whose output goes to anonymous files, so it can never
/// block on a full pipe.
pub struct Running {
    child: Child,
    cmdline: String,
    out: fs::File,
    err: fs::File,
}

impl Running {
    /// Starts `cmd` with stdin from /dev/null.
    pub fn start(cmd: &mut Command) -> Res<Running> {
        let cmdline = cmdline(cmd);
        let out = tempfile::tempfile().map_err(|e| format!("tempfile: {e}"))?;
        let err = tempfile::tempfile().map_err(|e| format!("tempfile: {e}"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(|e| e.to_string())?)
            .stderr(err.try_clone().map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("cannot run `{cmdline}`: {e}"))?;
        Ok(Running {
            child,
            cmdline,
            out,
            err,
        })
    }

    /// The exit status if the command has finished.
    pub fn poll(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits at most `limit`; kills the command when it takes longer.
    pub fn finish(mut self, limit: Duration) -> Res<Output> {
        let deadline = Instant::now() + limit;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    let partial = self.collect(None);
                    return Err(format!(
                        "`{}` did not finish within {:?} and was killed\n{}",
                        self.cmdline,
                        limit,
                        partial.map(|o| o.report()).unwrap_or_default()
                    ));
                }
                Ok(None) => thread::sleep(Duration::from_millis(10)),
                Err(e) => return Err(format!("waiting for `{}`: {e}", self.cmdline)),
            }
        };
        self.collect(Some(status))
    }

    fn collect(&mut self, status: Option<ExitStatus>) -> Res<Output> {
        let read = |f: &mut fs::File| -> String {
            let mut buf = Vec::new();
            let _ = f.rewind();
            let _ = f.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        };
        let status = match status {
            Some(s) => s,
            None => self.child.wait().map_err(|e| e.to_string())?,
        };
        Ok(Output {
            cmdline: self.cmdline.clone(),
            status,
            stdout: read(&mut self.out),
            stderr: read(&mut self.err),
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `cmd` to completion (at most `limit`) and returns what it printed.
pub fn run_timeout(cmd: &mut Command, limit: Duration) -> Res<Output> {
    Running::start(cmd)?.finish(limit)
}

/// Runs `cmd` and requires exit status 0.
pub fn run_ok(cmd: &mut Command, limit: Duration) -> Res<Output> {
    let out = run_timeout(cmd, limit)?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!("command failed\n{}", out.report()))
    }
}

/// A child process killed and reaped when dropped (e.g. `sleep 30`).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
