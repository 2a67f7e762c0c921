//! End-to-end harness for hpbuild.
//!
//! A *fixture* is a directory under `fixtures/` holding a small C program,
//! `fix.patch` and `fixture.json` (schema: `fixtures/README.md`). The harness
//!
//! 1. copies the fixture into a temporary directory, writes
//!    `compile_commands.json` there and compiles every translation unit with
//!    exactly the recorded commands, links `libhotpatch.a` (from
//!    `hpbuild loader --out`), and starts the program;
//! 2. runs `hpbuild --base <tempdir> --diff <fix.patch> -o <out>.hpo`
//!    (the diff lives outside the base; the base must stay unmodified);
//! 3. drives the program over stdin/stdout line by line, applying, listing
//!    and reverting the patch with `hpctl` as the fixture's steps say.
//!
//! Every wait is bounded (a line: [`LINE_TIMEOUT`]; a tool run:
//! [`HPBUILD_TIMEOUT`], [`HPCTL_TIMEOUT`]); every child process is killed
//! when dropped. A failure reports the step, the program's conversation so
//! far, its stderr, the loader log and the tool's output.
//!
//! [`check_consistency`] validates a fixture without any of the tools: the
//! original program must give the pre-patch answers and the program rebuilt
//! from the patched source must give the post-patch answers.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// How long the harness waits for one answer line from a fixture program.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one `hpbuild` run may take (it compiles every touched file twice).
pub const HPBUILD_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one `hpctl` run may take.
pub const HPCTL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one compiler or `patch` run may take.
pub const CC_TIMEOUT: Duration = Duration::from_secs(60);

/// Result type of the harness: the error is a complete, human-readable report.
pub type Res<T> = Result<T, String>;

// ---------------------------------------------------------------------------
// Locations and tools

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `fixtures/` in the workspace.
pub fn fixtures_dir() -> PathBuf {
    workspace_root().join("fixtures")
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace_root().join(d)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// Finds a tool binary: `$<env_var>` if set, else the newer of
/// `target/release/<name>` and `target/debug/<name>`.
pub fn find_tool(name: &str, env_var: &str) -> Res<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("{env_var}={} does not name a file", p.display()))
        };
    }
    let target = target_dir();
    let mut best: Option<(SystemTime, PathBuf)> = None;
    for profile in ["release", "debug"] {
        let p = target.join(profile).join(name);
        if let Ok(meta) = fs::metadata(&p) {
            if meta.is_file() {
                let t = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                if best.as_ref().is_none_or(|(bt, _)| t > *bt) {
                    best = Some((t, p));
                }
            }
        }
    }
    best.map(|(_, p)| p).ok_or_else(|| {
        format!(
            "{name} not found in {0}/release or {0}/debug (and ${env_var} is not set): \
             run `cargo build --release` first (the tests do not run cargo themselves)",
            target.display()
        )
    })
}

/// The `hpbuild` binary.
pub fn hpbuild_bin() -> Res<PathBuf> {
    find_tool("hpbuild", "HPBUILD_BIN")
}

/// The `hpctl` binary.
pub fn hpctl_bin() -> Res<PathBuf> {
    find_tool("hpctl", "HPCTL_BIN")
}

/// Runs `hpbuild loader --out DIR` (DIR = `target/hp-e2e/loader-<pid>`) once per test process and returns DIR,
/// which holds `libhotpatch.a` and `hotpatch.h`.
pub fn loader_dir() -> Res<PathBuf> {
    static DIR: OnceLock<Res<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let hpbuild = hpbuild_bin()?;
        // Under target/, one directory per test process; directories of
        // processes that are gone are removed, so nothing accumulates.
        let root = target_dir().join("hp-e2e");
        if let Ok(rd) = fs::read_dir(&root) {
            for e in rd.filter_map(|e| e.ok()) {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("loader-") {
                    if !Path::new("/proc").join(pid).exists() {
                        let _ = fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let dir = root.join(format!("loader-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.parent().unwrap())
            .map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let out = run_timeout(
            Command::new(&hpbuild).arg("loader").arg("--out").arg(&dir),
            HPBUILD_TIMEOUT,
        )?;
        if !out.status.success() {
            return Err(format!(
                "`hpbuild loader --out {}` failed\n{}",
                dir.display(),
                out.report()
            ));
        }
        for f in ["libhotpatch.a", "hotpatch.h"] {
            if !dir.join(f).is_file() {
                return Err(format!(
                    "`hpbuild loader --out {}` exited 0 but did not write {f}\n{}",
                    dir.display(),
                    out.report()
                ));
            }
        }
        Ok(dir)
    })
    .clone()
}

// ---------------------------------------------------------------------------
// Running commands with a time limit

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

fn with_newline(s: &str) -> String {
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

// ---------------------------------------------------------------------------
// Fixture description

/// One step of a fixture's script.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Send a line; the program must answer exactly `expect`. With
    /// `retry_secs`, resend until it does (at most that long). `version`
    /// says which code must be running for the answer to hold ("old" or
    /// "new"); by default, the version the apply/revert steps so far imply.
    Send {
        send: String,
        expect: String,
        retry_secs: Option<u64>,
        version: Option<Version>,
    },
    /// `hpctl apply PID OUT.hpo`. `expect_fail`: it must fail, and its
    /// stderr must contain every one of these strings. `background`: start
    /// it and go on; a later `wait_apply` step collects it. `settle_secs`:
    /// with `background`, wait that long (or until hpctl exits) first.
    Apply {
        expect_fail: Option<Vec<String>>,
        background: bool,
        settle_secs: u64,
    },
    /// Wait for a background apply; it must succeed.
    WaitApply,
    /// `hpctl revert PID`; it must succeed (or fail with `expect_fail`).
    Revert { expect_fail: Option<Vec<String>> },
}

/// Which build of a fixture a step's answer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Old,
    New,
}

impl Step {
    /// A one-line description for messages.
    pub fn describe(&self) -> String {
        match self {
            Step::Send {
                send,
                expect,
                retry_secs,
                version,
            } => {
                let mut s = format!("send {send:?}, expect {expect:?}");
                if let Some(r) = retry_secs {
                    s += &format!(" (retrying for up to {r} s)");
                }
                if let Some(v) = version {
                    s += &format!(" (from the {v:?} code)");
                }
                s
            }
            Step::Apply {
                expect_fail: Some(n),
                ..
            } => format!("hpctl apply, expected to fail naming {n:?}"),
            Step::Apply {
                background: true,
                settle_secs,
                ..
            } => {
                format!("hpctl apply in the background (settle {settle_secs} s)")
            }
            Step::Apply { .. } => "hpctl apply".into(),
            Step::WaitApply => "wait for the background hpctl apply".into(),
            Step::Revert {
                expect_fail: Some(n),
            } => format!("hpctl revert, expected to fail naming {n:?}"),
            Step::Revert { .. } => "hpctl revert".into(),
        }
    }
}

/// A parsed `fixture.json` (see `fixtures/README.md`).
#[derive(Debug, Clone)]
pub struct Fixture {
    pub name: String,
    pub dir: PathBuf,
    pub description: String,
    /// Translation units, compiled in this order.
    pub sources: Vec<String>,
    /// Files copied from `fixtures/common/`.
    pub common: Vec<String>,
    /// The main flag set; `also_cflags` lists further sets to run.
    pub cflags: Vec<String>,
    pub also_cflags: Vec<Vec<String>>,
    /// Extra arguments for the link (after the objects, before the loader).
    pub ldflags: Vec<String>,
    /// For the base given to hpbuild only: file name -> fixture file to use instead.
    pub hpbuild_base_sources: BTreeMap<String, String>,
    /// hpbuild must fail, and one stderr line must contain all of these.
    pub hpbuild_fails_with: Option<Vec<String>>,
    pub steps: Vec<Step>,
}

fn str_list(v: &Value, what: &str) -> Res<Vec<String>> {
    v.as_array()
        .ok_or_else(|| format!("{what} must be an array of strings"))?
        .iter()
        .map(|x| {
            x.as_str()
                .map(String::from)
                .ok_or_else(|| format!("{what} must hold strings only"))
        })
        .collect()
}

fn check_keys(obj: &serde_json::Map<String, Value>, allowed: &[&str], what: &str) -> Res<()> {
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(format!("{what}: unknown key {k:?} (allowed: {allowed:?})"));
        }
    }
    Ok(())
}

fn opt_needles(v: Option<&Value>, what: &str) -> Res<Option<Vec<String>>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(v) => Ok(Some(str_list(v, what)?)),
    }
}

fn parse_step(v: &Value, i: usize) -> Res<Step> {
    let what = format!("steps[{i}]");
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{what} must be an object"))?;
    let flag = |k: &str| {
        obj.get(k).map_or(Ok(false), |x| {
            x.as_bool()
                .ok_or_else(|| format!("{what}.{k} must be a boolean"))
        })
    };
    if let Some(send) = obj.get("send") {
        check_keys(obj, &["send", "expect", "retry_secs", "version"], &what)?;
        let send = send
            .as_str()
            .ok_or_else(|| format!("{what}.send must be a string"))?
            .to_string();
        let expect = obj
            .get("expect")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{what}: a send step needs \"expect\" (a string)"))?
            .to_string();
        if send.contains('\n') || expect.contains('\n') {
            return Err(format!("{what}: send/expect are single lines"));
        }
        let retry_secs = match obj.get("retry_secs") {
            None => None,
            Some(x) => Some(
                x.as_u64()
                    .ok_or_else(|| format!("{what}.retry_secs must be a whole number"))?,
            ),
        };
        let version = match obj.get("version").map(|x| x.as_str()) {
            None => None,
            Some(Some("old")) => Some(Version::Old),
            Some(Some("new")) => Some(Version::New),
            Some(_) => return Err(format!("{what}.version must be \"old\" or \"new\"")),
        };
        return Ok(Step::Send {
            send,
            expect,
            retry_secs,
            version,
        });
    }
    if obj.contains_key("apply") {
        check_keys(
            obj,
            &["apply", "expect_fail", "background", "settle_secs"],
            &what,
        )?;
        if !flag("apply")? {
            return Err(format!("{what}.apply must be true"));
        }
        let expect_fail = opt_needles(obj.get("expect_fail"), &format!("{what}.expect_fail"))?;
        let background = flag("background")?;
        let settle_secs = match obj.get("settle_secs") {
            None => 0,
            Some(x) => x
                .as_u64()
                .ok_or_else(|| format!("{what}.settle_secs must be a whole number"))?,
        };
        if background && expect_fail.is_some() {
            return Err(format!("{what}: a background apply cannot expect_fail"));
        }
        return Ok(Step::Apply {
            expect_fail,
            background,
            settle_secs,
        });
    }
    if obj.contains_key("wait_apply") {
        check_keys(obj, &["wait_apply"], &what)?;
        if !flag("wait_apply")? {
            return Err(format!("{what}.wait_apply must be true"));
        }
        return Ok(Step::WaitApply);
    }
    if obj.contains_key("revert") {
        check_keys(obj, &["revert", "expect_fail"], &what)?;
        if !flag("revert")? {
            return Err(format!("{what}.revert must be true"));
        }
        let expect_fail = opt_needles(obj.get("expect_fail"), &format!("{what}.expect_fail"))?;
        return Ok(Step::Revert { expect_fail });
    }
    Err(format!(
        "{what}: expected one of \"send\", \"apply\", \"wait_apply\", \"revert\""
    ))
}

impl Fixture {
    /// Loads `fixtures/<name>/fixture.json`.
    pub fn load(name: &str) -> Res<Fixture> {
        let dir = fixtures_dir().join(name);
        let path = dir.join("fixture.json");
        let text =
            fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(name, &dir, &v).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn parse(name: &str, dir: &Path, v: &Value) -> Res<Fixture> {
        let obj = v.as_object().ok_or("the top level must be an object")?;
        check_keys(
            obj,
            &[
                "description",
                "sources",
                "common",
                "cflags",
                "also_cflags",
                "ldflags",
                "hpbuild_base_sources",
                "hpbuild_fails_with",
                "steps",
            ],
            "fixture",
        )?;
        let description = obj
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let sources = str_list(
            obj.get("sources").ok_or("\"sources\" is required")?,
            "sources",
        )?;
        if sources.is_empty() {
            return Err("\"sources\" is empty".into());
        }
        let common = match obj.get("common") {
            Some(c) => str_list(c, "common")?,
            None => vec![],
        };
        let cflags = match obj.get("cflags") {
            Some(c) => str_list(c, "cflags")?,
            None => vec!["-O2".into(), "-g".into()],
        };
        let also_cflags = match obj.get("also_cflags") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| str_list(x, "also_cflags[]"))
                .collect::<Res<_>>()?,
            Some(_) => return Err("\"also_cflags\" must be an array of arrays of strings".into()),
            None => vec![],
        };
        let ldflags = match obj.get("ldflags") {
            Some(c) => str_list(c, "ldflags")?,
            None => vec![],
        };
        let mut hpbuild_base_sources = BTreeMap::new();
        if let Some(m) = obj.get("hpbuild_base_sources") {
            if !m.is_null() {
                let m = m
                    .as_object()
                    .ok_or("\"hpbuild_base_sources\" must be an object")?;
                for (k, v) in m {
                    let v = v
                        .as_str()
                        .ok_or("\"hpbuild_base_sources\" values must be strings")?;
                    hpbuild_base_sources.insert(k.clone(), v.to_string());
                }
            }
        }
        let hpbuild_fails_with = opt_needles(obj.get("hpbuild_fails_with"), "hpbuild_fails_with")?;
        let steps = obj
            .get("steps")
            .and_then(Value::as_array)
            .ok_or("\"steps\" (an array) is required")?
            .iter()
            .enumerate()
            .map(|(i, s)| parse_step(s, i))
            .collect::<Res<Vec<_>>>()?;
        let f = Fixture {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            description,
            sources,
            common,
            cflags,
            also_cflags,
            ldflags,
            hpbuild_base_sources,
            hpbuild_fails_with,
            steps,
        };
        f.validate()?;
        Ok(f)
    }

    fn validate(&self) -> Res<()> {
        if !self.dir.join("fix.patch").is_file() {
            return Err("fix.patch is missing".into());
        }
        for s in &self.sources {
            if !self.dir.join(s).is_file() && !self.common.contains(s) {
                return Err(format!(
                    "source {s} is neither in the fixture nor in \"common\""
                ));
            }
        }
        for c in &self.common {
            if !fixtures_dir().join("common").join(c).is_file() {
                return Err(format!("common file {c} is not in fixtures/common/"));
            }
        }
        for (k, v) in &self.hpbuild_base_sources {
            if !self.dir.join(v).is_file() {
                return Err(format!(
                    "hpbuild_base_sources: {k} -> {v}, but {v} is not in the fixture"
                ));
            }
        }
        let applies = self.steps.iter().any(|s| matches!(s, Step::Apply { .. }));
        if self.hpbuild_fails_with.is_some() && applies {
            return Err("a fixture whose hpbuild must fail cannot have apply steps".into());
        }
        let mut pending_bg = false;
        for s in &self.steps {
            match s {
                Step::Apply {
                    background: true, ..
                } if pending_bg => {
                    return Err("two background applies without wait_apply in between".into())
                }
                Step::Apply {
                    background: true, ..
                } => pending_bg = true,
                Step::Apply { .. } | Step::Revert { .. } if pending_bg => {
                    return Err("apply/revert while a background apply is pending".into())
                }
                Step::WaitApply if !pending_bg => {
                    return Err("wait_apply without a background apply".into())
                }
                Step::WaitApply => pending_bg = false,
                _ => {}
            }
        }
        if pending_bg {
            return Err("a background apply is never waited for".into());
        }
        Ok(())
    }

    /// Every flag set to run: `cflags` first, then `also_cflags`.
    pub fn flag_sets(&self) -> Vec<Vec<String>> {
        let mut v = vec![self.cflags.clone()];
        v.extend(self.also_cflags.iter().cloned());
        v
    }

    /// The version of the code each step's answer comes from (None: not
    /// determined, e.g. while a background apply is in flight). Used by the
    /// consistency check.
    pub fn step_versions(&self) -> Vec<Option<Version>> {
        let mut cur = Some(Version::Old);
        let mut out = Vec::new();
        for s in &self.steps {
            match s {
                Step::Send { version, .. } => out.push(version.or(cur)),
                Step::Apply {
                    expect_fail: Some(_),
                    ..
                }
                | Step::Revert {
                    expect_fail: Some(_),
                } => out.push(None),
                Step::Apply {
                    background: true, ..
                } => {
                    cur = None;
                    out.push(None)
                }
                Step::Apply { .. } | Step::WaitApply => {
                    cur = Some(Version::New);
                    out.push(None)
                }
                Step::Revert { .. } => {
                    cur = Some(Version::Old);
                    out.push(None)
                }
            }
        }
        out
    }
}

/// Names of all fixtures: the directories under `fixtures/` holding a
/// `fixture.json` (other directories, such as `common/`, are not fixtures).
pub fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(fixtures_dir())
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().join("fixture.json").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

// ---------------------------------------------------------------------------
// Building a fixture tree

/// Copies the fixture's files (all but `fixture.json` and `fix.patch`) and
/// its `common` files into `dir`; with `for_hpbuild_base`, replaces files as
/// `hpbuild_base_sources` says.
pub fn copy_fixture(f: &Fixture, dir: &Path, for_hpbuild_base: bool) -> Res<()> {
    fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let rd = fs::read_dir(&f.dir).map_err(|e| format!("reading {}: {e}", f.dir.display()))?;
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "fixture.json" || name == "fix.patch" || !e.path().is_file() {
            continue;
        }
        fs::copy(e.path(), dir.join(&name)).map_err(|e| format!("copying {name}: {e}"))?;
    }
    for c in &f.common {
        fs::copy(fixtures_dir().join("common").join(c), dir.join(c))
            .map_err(|e| format!("copying common/{c}: {e}"))?;
    }
    if for_hpbuild_base {
        for (k, v) in &f.hpbuild_base_sources {
            fs::copy(f.dir.join(v), dir.join(k)).map_err(|e| format!("copying {v} as {k}: {e}"))?;
        }
    }
    Ok(())
}

fn object_name(src: &str) -> String {
    match src.rfind('.') {
        Some(i) => format!("{}.o", &src[..i]),
        None => format!("{src}.o"),
    }
}

/// The compile command of one translation unit, as recorded in
/// `compile_commands.json` and run by the harness.
pub fn compile_args(cflags: &[String], src: &str) -> Vec<String> {
    let mut a = vec!["cc".to_string()];
    a.extend(cflags.iter().cloned());
    a.extend(["-c".into(), src.into(), "-o".into(), object_name(src)]);
    a
}

/// Writes `dir/compile_commands.json`, compiles every TU with exactly the
/// recorded command, and links `dir/prog` (with the loader if given).
pub fn build_tree(
    f: &Fixture,
    dir: &Path,
    cflags: &[String],
    loader: Option<&Path>,
) -> Res<PathBuf> {
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let entries: Vec<Value> = f
        .sources
        .iter()
        .map(|s| {
            serde_json::json!({
                "directory": dir.to_string_lossy(),
                "file": s,
                "arguments": compile_args(cflags, s),
                "output": object_name(s),
            })
        })
        .collect();
    let ccj = serde_json::to_string_pretty(&Value::Array(entries)).unwrap();
    fs::write(dir.join("compile_commands.json"), ccj)
        .map_err(|e| format!("writing compile_commands.json: {e}"))?;
    for s in &f.sources {
        let args = compile_args(cflags, s);
        run_ok(
            Command::new(&args[0]).args(&args[1..]).current_dir(&dir),
            CC_TIMEOUT,
        )
        .map_err(|e| format!("compiling {s} of fixture {}:\n{e}", f.name))?;
    }
    let mut link = Command::new("cc");
    link.current_dir(&dir).args(cflags);
    for s in &f.sources {
        link.arg(object_name(s));
    }
    link.args(&f.ldflags);
    if let Some(l) = loader {
        link.arg("-Wl,--whole-archive")
            .arg(l.join("libhotpatch.a"))
            .arg("-Wl,--no-whole-archive");
    }
    link.args(["-lpthread", "-o", "prog"]);
    run_ok(&mut link, CC_TIMEOUT).map_err(|e| format!("linking fixture {}:\n{e}", f.name))?;
    Ok(dir.join("prog"))
}

/// Applies `patch_file` to `dir` with `patch -p1` (dry run first).
pub fn apply_patch(dir: &Path, patch_file: &Path) -> Res<()> {
    for dry in [true, false] {
        let mut cmd = Command::new("patch");
        cmd.current_dir(dir)
            .args(["-p1", "--batch", "--forward", "-i"])
            .arg(patch_file);
        if dry {
            cmd.arg("--dry-run");
        }
        run_ok(&mut cmd, CC_TIMEOUT).map_err(|e| {
            format!(
                "{} does not apply with patch -p1:\n{e}",
                patch_file.display()
            )
        })?;
    }
    Ok(())
}

/// All files under `dir` with their contents (to prove a base unmodified).
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.filter_map(|e| e.ok()) {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap_or(&p).to_path_buf();
                out.insert(rel, fs::read(&p).unwrap_or_default());
            }
        }
    }
    out
}

fn snapshot_diff(
    before: &BTreeMap<PathBuf, Vec<u8>>,
    after: &BTreeMap<PathBuf, Vec<u8>>,
) -> Vec<String> {
    let mut d = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => d.push(format!("{} was deleted", k.display())),
            Some(w) if w != v => d.push(format!("{} was modified", k.display())),
            _ => {}
        }
    }
    for k in after.keys() {
        if !before.contains_key(k) {
            d.push(format!("{} was created", k.display()));
        }
    }
    d
}

// ---------------------------------------------------------------------------
// A running fixture program

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
        let stderr_path = workdir.join("prog.stderr");
        let log_path = workdir.join("hotpatch.log");
        let err = fs::File::create(&stderr_path)
            .map_err(|e| format!("{}: {e}", stderr_path.display()))?;
        let mut child = Command::new(exe)
            .current_dir(workdir)
            .env("HOTPATCH_LOG", &log_path)
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

// ---------------------------------------------------------------------------
// hpctl / hpbuild checks

/// Checks that a failing tool gave a proper reason: some stderr line holds
/// every needle, and it did not panic.
pub fn check_refusal(out: &Output, needles: &[String], what: &str) -> Res<()> {
    if out.status.success() {
        return Err(format!(
            "{what} succeeded but should have failed\n{}",
            out.report()
        ));
    }
    if out.stderr.trim().is_empty() {
        return Err(format!(
            "{what} failed without a reason on stderr\n{}",
            out.report()
        ));
    }
    if out.stderr.contains("panicked at") {
        return Err(format!(
            "{what} panicked instead of giving a one-line reason\n{}",
            out.report()
        ));
    }
    if out.status.code().is_none() {
        return Err(format!("{what} was killed by a signal\n{}", out.report()));
    }
    if !needles.is_empty()
        && !out
            .stderr
            .lines()
            .any(|l| needles.iter().all(|n| l.contains(n.as_str())))
    {
        return Err(format!(
            "{what} failed, but no line of its stderr names {needles:?}\n{}",
            out.report()
        ));
    }
    Ok(())
}

/// The patch id recorded in the manifest next to `hpo` (`OUT.json`).
pub fn patch_id(hpo: &Path) -> Option<String> {
    let m: Value =
        serde_json::from_str(&fs::read_to_string(hpo.with_extension("json")).ok()?).ok()?;
    m.get("patch_id").and_then(Value::as_str).map(String::from)
}

/// `hpctl list PID` must succeed and mention the patch (its id from the
/// manifest, or its file name) — or, with `present == false`, not mention
/// its id.
pub fn check_list(hpctl: &Path, pid: u32, hpo: &Path, present: bool) -> Res<Output> {
    let out = run_timeout(
        Command::new(hpctl).arg("list").arg(pid.to_string()),
        HPCTL_TIMEOUT,
    )?;
    if !out.status.success() {
        return Err(format!("hpctl list failed\n{}", out.report()));
    }
    let id = patch_id(hpo);
    let stem = hpo.file_stem().unwrap().to_string_lossy().into_owned();
    let shown = match &id {
        Some(id) => out.stdout.contains(id.as_str()),
        None => out.stdout.contains(&stem),
    };
    if present && !shown {
        return Err(format!(
            "hpctl list does not show the applied patch (looked for {})\n{}",
            id.map(|i| format!("its id {i:?} from the manifest"))
                .unwrap_or_else(|| format!("{stem:?}")),
            out.report()
        ));
    }
    if !present {
        if let Some(id) = &id {
            if out
                .stdout
                .lines()
                .any(|l| l.split_whitespace().any(|w| w == id))
            {
                return Err(format!(
                    "hpctl list still shows patch {id:?} after revert\n{}",
                    out.report()
                ));
            }
        }
    }
    Ok(out)
}

/// Runs `hpbuild --base BASE --diff DIFF -o OUT`.
pub fn run_hpbuild(base: &Path, diff: &Path, out: &Path) -> Res<Output> {
    let hpbuild = hpbuild_bin()?;
    run_timeout(
        Command::new(hpbuild)
            .arg("--base")
            .arg(base)
            .arg("--diff")
            .arg(diff)
            .arg("-o")
            .arg(out),
        HPBUILD_TIMEOUT,
    )
}

/// A fixture program built with the loader and started, in its own
/// temporary directory (kept until dropped).
pub struct Started {
    pub tmp: tempfile::TempDir,
    /// Where the running program was built (its base for hpbuild, unless
    /// the fixture has `hpbuild_base_sources`).
    pub run_dir: PathBuf,
    /// The base handed to hpbuild.
    pub base_dir: PathBuf,
    pub prog: Program,
}

/// Copies, builds (with the loader) and starts a fixture.
pub fn start_fixture(f: &Fixture, cflags: &[String]) -> Res<Started> {
    let loader = loader_dir()?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!("hp-e2e-{}-", f.name))
        .tempdir()
        .map_err(|e| format!("tempdir: {e}"))?;
    let run_dir = tmp.path().join("base");
    copy_fixture(f, &run_dir, false)?;
    let exe = build_tree(f, &run_dir, cflags, Some(&loader))?;
    let base_dir = if f.hpbuild_base_sources.is_empty() {
        run_dir.clone()
    } else {
        let b = tmp.path().join("other-base");
        copy_fixture(f, &b, true)?;
        build_tree(f, &b, cflags, Some(&loader))?;
        b
    };
    let prog = Program::start(&exe, tmp.path())?;
    Ok(Started {
        run_dir: run_dir.canonicalize().unwrap_or(run_dir),
        base_dir,
        tmp,
        prog,
    })
}

/// Runs hpbuild for a started fixture; returns the path of OUT.hpo. Checks
/// the base stays unmodified and the three outputs exist.
pub fn build_patch(f: &Fixture, s: &Started) -> Res<(PathBuf, Output)> {
    let diff = s.tmp.path().join("fix.patch");
    fs::copy(f.dir.join("fix.patch"), &diff).map_err(|e| format!("copying fix.patch: {e}"))?;
    let out_dir = s.tmp.path().join("out");
    fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    let hpo = out_dir.join(format!("{}-fix.hpo", f.name));
    let before = snapshot(&s.base_dir);
    let out = run_hpbuild(&s.base_dir, &diff, &hpo)?;
    let changed = snapshot_diff(&before, &snapshot(&s.base_dir));
    if !changed.is_empty() {
        return Err(format!(
            "hpbuild modified its base {}: {}\n{}",
            s.base_dir.display(),
            changed.join(", "),
            out.report()
        ));
    }
    Ok((hpo, out))
}

/// The whole end-to-end run of one fixture with one flag set.
pub fn run_fixture_with(f: &Fixture, cflags: &[String]) -> Res<()> {
    let hpctl = hpctl_bin()?;
    hpbuild_bin()?;
    let mut s = start_fixture(f, cflags)?;
    let (hpo, build) = build_patch(f, &s).map_err(|e| format!("{e}\n{}", s.prog.report()))?;
    let ctx = |s: &Started, step: &str, e: String| -> String {
        format!("step: {step}\nerror: {e}\n{}", s.prog.report())
    };

    if let Some(needles) = &f.hpbuild_fails_with {
        check_refusal(&build, needles, "hpbuild")
            .map_err(|e| ctx(&s, "hpbuild (expected to refuse)", e))?;
    } else {
        if !build.status.success() {
            return Err(ctx(
                &s,
                "hpbuild",
                format!("hpbuild failed\n{}", build.report()),
            ));
        }
        for p in [
            hpo.clone(),
            hpo.with_extension("json"),
            hpo.with_extension("c"),
        ] {
            if !p.is_file() {
                return Err(ctx(
                    &s,
                    "hpbuild",
                    format!(
                        "hpbuild exited 0 but did not write {}\n{}",
                        p.display(),
                        build.report()
                    ),
                ));
            }
        }
        let manifest = fs::read_to_string(hpo.with_extension("json")).unwrap_or_default();
        if let Err(e) = serde_json::from_str::<Value>(&manifest) {
            return Err(ctx(&s, "hpbuild", format!("OUT.json is not JSON: {e}")));
        }
    }

    let pid = s.prog.pid();
    let mut background: Option<Running> = None;
    for (i, step) in f.steps.iter().enumerate() {
        let label = format!("#{i} {}", step.describe());
        match step {
            Step::Send {
                send,
                expect,
                retry_secs,
                ..
            } => {
                let retry = retry_secs.map(Duration::from_secs);
                s.prog
                    .expect(send, expect, retry)
                    .map_err(|e| ctx(&s, &label, e))?;
            }
            Step::Apply {
                expect_fail,
                background: bg,
                settle_secs,
            } => {
                let mut cmd = Command::new(&hpctl);
                cmd.arg("apply").arg(pid.to_string()).arg(&hpo);
                if *bg {
                    let mut r = Running::start(&mut cmd).map_err(|e| ctx(&s, &label, e))?;
                    let until = Instant::now() + Duration::from_secs(*settle_secs);
                    while Instant::now() < until && r.poll().is_none() {
                        thread::sleep(Duration::from_millis(20));
                    }
                    s.prog
                        .transcript
                        .push(format!("# hpctl apply {pid} started in the background"));
                    background = Some(r);
                    continue;
                }
                let out = run_timeout(&mut cmd, HPCTL_TIMEOUT).map_err(|e| ctx(&s, &label, e))?;
                s.prog.note(&out);
                match expect_fail {
                    Some(needles) => check_refusal(&out, needles, "hpctl apply")
                        .map_err(|e| ctx(&s, &label, e))?,
                    None => {
                        if !out.status.success() {
                            return Err(ctx(
                                &s,
                                &label,
                                format!(
                                    "hpctl apply failed\n{}\n--- hpbuild ---\n{}",
                                    out.report(),
                                    build.report()
                                ),
                            ));
                        }
                        let l =
                            check_list(&hpctl, pid, &hpo, true).map_err(|e| ctx(&s, &label, e))?;
                        s.prog.note(&l);
                    }
                }
            }
            Step::WaitApply => {
                let r = background
                    .take()
                    .expect("validated: a background apply is pending");
                let out = r.finish(HPCTL_TIMEOUT).map_err(|e| ctx(&s, &label, e))?;
                s.prog.note(&out);
                if !out.status.success() {
                    return Err(ctx(
                        &s,
                        &label,
                        format!(
                            "background hpctl apply failed\n{}\n--- hpbuild ---\n{}",
                            out.report(),
                            build.report()
                        ),
                    ));
                }
                let l = check_list(&hpctl, pid, &hpo, true).map_err(|e| ctx(&s, &label, e))?;
                s.prog.note(&l);
            }
            Step::Revert { expect_fail } => {
                let out = run_timeout(
                    Command::new(&hpctl).arg("revert").arg(pid.to_string()),
                    HPCTL_TIMEOUT,
                )
                .map_err(|e| ctx(&s, &label, e))?;
                s.prog.note(&out);
                match expect_fail {
                    Some(needles) => check_refusal(&out, needles, "hpctl revert")
                        .map_err(|e| ctx(&s, &label, e))?,
                    None => {
                        if !out.status.success() {
                            return Err(ctx(
                                &s,
                                &label,
                                format!("hpctl revert failed\n{}", out.report()),
                            ));
                        }
                        let l =
                            check_list(&hpctl, pid, &hpo, false).map_err(|e| ctx(&s, &label, e))?;
                        s.prog.note(&l);
                    }
                }
            }
        }
    }
    // Still alive and answering at the end.
    s.prog
        .expect("ping", "pong", None)
        .map_err(|e| ctx(&s, "final ping", e))?;
    let stderr = s.prog.stderr();
    if stderr.contains("EINTR") {
        eprintln!(
            "note [{} {:?}]: the program saw EINTR during the run:\n{stderr}",
            f.name, cflags
        );
    }
    Ok(())
}

/// Runs a fixture end to end with every flag set; panics with a full report.
pub fn run_fixture(name: &str) {
    let f = Fixture::load(name).unwrap_or_else(|e| panic!("{e}"));
    let mut failures = String::new();
    for flags in f.flag_sets() {
        if let Err(e) = run_fixture_with(&f, &flags) {
            let _ = writeln!(
                failures,
                "\n===== fixture {name} with {flags:?} FAILED =====\n{e}"
            );
        }
    }
    if !failures.is_empty() {
        panic!("{failures}");
    }
}

// ---------------------------------------------------------------------------
// Consistency of a fixture without the tools

/// Builds one version of a fixture without the loader and plays every step
/// against it, checking the answers that belong to `version`. Returns how
/// many answers were checked.
fn play_version(f: &Fixture, cflags: &[String], version: Version) -> Res<usize> {
    let tmp = tempfile::Builder::new()
        .prefix(&format!("hp-e2e-consistency-{}-", f.name))
        .tempdir()
        .map_err(|e| format!("tempdir: {e}"))?;
    let dir = tmp.path().join("src");
    match version {
        Version::Old => copy_fixture(f, &dir, false)?,
        Version::New => {
            copy_fixture(f, &dir, true)?;
            apply_patch(&dir, &f.dir.join("fix.patch"))?;
        }
    }
    let exe = build_tree(f, &dir, cflags, None)?;
    if version == Version::New && f.hpbuild_base_sources.values().count() > 0 {
        // The patched *base* is not what runs (wrong-base): it only has to build.
        return Ok(0);
    }
    let mut prog = Program::start(&exe, tmp.path())?;
    let mut checked = 0;
    for ((i, step), v) in f.steps.iter().enumerate().zip(f.step_versions()) {
        if let Step::Send {
            send,
            expect,
            retry_secs,
            ..
        } = step
        {
            let res = if v == Some(version) {
                checked += 1;
                prog.expect(send, expect, retry_secs.map(Duration::from_secs))
            } else {
                prog.ask(send).map(|_| ())
            };
            res.map_err(|e| format!("step #{i} {}: {e}\n{}", step.describe(), prog.report()))?;
        }
    }
    prog.expect("ping", "pong", None)
        .map_err(|e| format!("final ping: {e}\n{}", prog.report()))?;
    Ok(checked)
}

/// Checks a fixture without hpbuild/hpctl: `fix.patch` uses a/ b/ prefixes
/// and applies with `patch -p1`; the original program gives the answers of
/// the steps before the patch, the program rebuilt from the patched source
/// gives the answers after it; both build with every flag set.
pub fn check_consistency(f: &Fixture) -> Res<()> {
    let patch =
        fs::read_to_string(f.dir.join("fix.patch")).map_err(|e| format!("fix.patch: {e}"))?;
    let minus: Vec<&str> = patch.lines().filter(|l| l.starts_with("--- ")).collect();
    let plus: Vec<&str> = patch.lines().filter(|l| l.starts_with("+++ ")).collect();
    if minus.is_empty() || minus.len() != plus.len() {
        return Err("fix.patch has no (or unbalanced) ---/+++ file headers".into());
    }
    if !minus.iter().all(|l| l.starts_with("--- a/"))
        || !plus.iter().all(|l| l.starts_with("+++ b/"))
    {
        return Err("fix.patch must use a/ and b/ prefixes".into());
    }
    for k in f.hpbuild_base_sources.keys() {
        let (a, b) = (
            fs::read(f.dir.join(k)).unwrap_or_default(),
            fs::read(f.dir.join(&f.hpbuild_base_sources[k])).unwrap_or_default(),
        );
        if a == b {
            return Err(format!(
                "hpbuild_base_sources: {k} and its replacement are identical"
            ));
        }
    }
    let versions = f.step_versions();
    let applies_ok = f.steps.iter().any(|s| {
        matches!(
            s,
            Step::Apply {
                expect_fail: None,
                ..
            }
        )
    });
    let n_old = versions
        .iter()
        .filter(|v| **v == Some(Version::Old))
        .count();
    let n_new = versions
        .iter()
        .filter(|v| **v == Some(Version::New))
        .count();
    if n_old == 0 {
        return Err("no step checks the original behaviour".into());
    }
    if applies_ok && n_new == 0 {
        return Err("the patch is applied but no step checks the new behaviour".into());
    }
    for flags in f.flag_sets() {
        let old = play_version(f, &flags, Version::Old)
            .map_err(|e| format!("original program, {flags:?}: {e}"))?;
        let new = play_version(f, &flags, Version::New)
            .map_err(|e| format!("patched program, {flags:?}: {e}"))?;
        assert_eq!(old, n_old);
        if f.hpbuild_base_sources.is_empty() {
            assert_eq!(new, n_new);
        }
    }
    Ok(())
}
