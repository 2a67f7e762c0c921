//! Test-only helpers: build C programs linked with libhotpatch.a, make
//! patch objects exactly as hpbuild does (crates `differ` and `emit`), and
//! drive the programs line by line.
#![allow(dead_code)]

use object::elf;
use object::{Object, ObjectSection, RelocationFlags};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Flags the test programs and their patches are compiled with.
pub const CFLAGS: &[&str] = &[
    "-O2",
    "-g0",
    "-ffunction-sections",
    "-fdata-sections",
    "-fno-common",
];

/// A fresh scratch directory (removed on drop unless HOTPATCH_KEEP is set).
pub struct Work {
    pub dir: PathBuf,
}

impl Work {
    pub fn new(tag: &str) -> Work {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "hotpatch-test-{}-{}-{}",
            tag,
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        loader::write_loader(&dir.join("loader")).unwrap();
        Work { dir }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        if std::env::var_os("HOTPATCH_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

thread_local! {
    /// The C compiler of this test (each test runs on its own thread).
    static CC: std::cell::Cell<&'static str> = const { std::cell::Cell::new("gcc") };
}

/// Compiles programs and patches of the calling test with `cc` (gcc, clang).
pub fn set_cc(cc: &'static str) {
    CC.with(|c| c.set(cc));
}

fn gcc(args: &[&str], cwd: &Path) {
    let cc = CC.with(|c| c.get());
    let out = Command::new(cc)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run gcc");
    assert!(
        out.status.success(),
        "{cc} {:?} failed:\n{}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Compiles `src` as `<sub>/<file>` into `<sub>/<file>.o`, returns the object path.
pub fn compile(work: &Work, sub: &str, file: &str, src: &str, extra: &[&str]) -> PathBuf {
    let dir = work.path(sub);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(file), src).unwrap();
    let obj = format!("{file}.o");
    let inc = format!("-I{}", work.path("loader").display());
    let mut args: Vec<&str> = vec!["-c"];
    args.extend_from_slice(CFLAGS);
    args.extend_from_slice(extra);
    args.extend_from_slice(&[inc.as_str(), file, "-o", obj.as_str()]);
    gcc(&args, &dir);
    dir.join(obj)
}

/// Builds a program from `src` (saved as `file`) linked with libhotpatch.a.
pub fn build_program(work: &Work, file: &str, src: &str, extra: &[&str]) -> PathBuf {
    let obj = compile(work, "prog", file, src, extra);
    let exe = work.path("prog/prog");
    let lib = work.path("loader/libhotpatch.a");
    let (o, e, l) = (
        obj.to_str().unwrap(),
        exe.to_str().unwrap(),
        lib.to_str().unwrap(),
    );
    // The compile flags go to the link too: -no-pie must reach the linker.
    let loader_args = loader::link_args(Path::new(l).parent().unwrap());
    let mut args = vec![o, "-o", e];
    args.extend_from_slice(extra);
    args.extend(loader_args.iter().map(|a| a.to_str().unwrap()));
    gcc(&args, &work.dir);
    exe
}

/// Makes the patch hpbuild makes for `orig_src` → `new_src` (both compiled
/// as `file` with [`CFLAGS`] and `extra`): the differ compares the two
/// objects and the `emit` crate writes what it ships, unwind information
/// included. `funcs` are the functions the test means to replace; the differ
/// must replace exactly those (a test never gets a patch hpbuild would not
/// make, or would refuse). Also written to `<work>/<id>.hpo`.
pub fn make_patch(
    work: &Work,
    id: &str,
    file: &str,
    orig_src: &str,
    new_src: &str,
    funcs: &[&str],
    extra: &[&str],
) -> Vec<u8> {
    make_signed_patch(work, id, file, orig_src, new_src, funcs, extra, None)
}

/// [`make_patch`], signed with `key` when there is one (`hpbuild --sign`).
#[allow(clippy::too_many_arguments)]
pub fn make_signed_patch(
    work: &Work,
    id: &str,
    file: &str,
    orig_src: &str,
    new_src: &str,
    funcs: &[&str],
    extra: &[&str],
    key: Option<&format::SigningKey>,
) -> Vec<u8> {
    let sub_o = format!("patch-{id}/orig");
    let sub_n = format!("patch-{id}/new");
    let orig = std::fs::read(compile(work, &sub_o, file, orig_src, extra)).unwrap();
    let new = std::fs::read(compile(work, &sub_n, file, new_src, extra)).unwrap();
    let diff = differ::compare(&orig, &new).unwrap_or_else(|e| panic!("{id}: {e}"));
    let refusals: Vec<&str> = diff.refusals.iter().map(|r| r.message.as_str()).collect();
    assert!(refusals.is_empty(), "{id}: hpbuild refuses: {refusals:?}");
    let mut replaced: Vec<&str> = diff.replacements.iter().map(|r| r.name.as_str()).collect();
    let mut wanted = funcs.to_vec();
    replaced.sort_unstable();
    wanted.sort_unstable();
    assert_eq!(replaced, wanted, "{id}: the functions the differ replaces");
    let unit = emit::Unit {
        patched: &new,
        diff: &diff,
        rel: file,
    };
    let patch =
        emit::emit_signed(&[], &[unit], id, "test", 0, key).unwrap_or_else(|e| panic!("{id}: {e}"));
    for note in &patch.notes {
        eprintln!("{id}: note: {note}");
    }
    format::read_patch(&patch.object).expect("made an invalid patch");
    std::fs::write(work.path(&format!("{id}.hpo")), &patch.object).unwrap();
    patch.object
}

/// A running test program, driven by lines on stdin/stdout.
pub struct Proc {
    pub child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pub log: PathBuf,
}

impl Proc {
    pub fn start(exe: &Path, work: &Work) -> Proc {
        Proc::start_with(exe, work, &[])
    }

    /// [`Proc::start`] with more environment variables.
    pub fn start_with(exe: &Path, work: &Work, env: &[(&str, &std::ffi::OsStr)]) -> Proc {
        let log = work.path("hotpatch.log");
        let mut child = Command::new(exe)
            .env("HOTPATCH_LOG", &log)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut p = Proc {
            child,
            stdin,
            stdout,
            log,
        };
        let ready = p.read_line();
        assert!(ready.starts_with("ready"), "program said {ready:?}");
        // The listener thread starts from a constructor; wait for its socket.
        for _ in 0..200 {
            let bound = std::fs::read_to_string("/proc/net/unix")
                .unwrap()
                .contains(&format!("@{}", format::protocol::socket_name(p.pid())));
            if bound {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        p
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn read_line(&mut self) -> String {
        let mut s = String::new();
        self.stdout.read_line(&mut s).unwrap();
        assert!(!s.is_empty(), "program exited; log:\n{}", self.log_text());
        s.trim_end().to_string()
    }

    /// Sends a command line and returns the reply line.
    pub fn ask(&mut self, cmd: &str) -> String {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        self.read_line()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs hpctl; returns (success, stdout, stderr).
pub fn hpctl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hpctl"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

fn reloc_type(flags: RelocationFlags) -> u32 {
    match flags {
        RelocationFlags::Elf { r_type } => r_type,
        other => panic!("not an ELF relocation: {other:?}"),
    }
}

/// The names of the relocation types in a patch object (x86-64 TLS and the
/// common ones; others as numbers), for asserting what a test exercises.
pub fn reloc_types(obj: &[u8]) -> Vec<String> {
    let f = object::File::parse(obj).unwrap();
    let mut out = Vec::new();
    for s in f.sections() {
        for (_, r) in s.relocations() {
            let t = reloc_type(r.flags());
            let name = match t {
                elf::R_X86_64_PC32 => "R_X86_64_PC32".to_string(),
                elf::R_X86_64_PLT32 => "R_X86_64_PLT32".to_string(),
                elf::R_X86_64_32 => "R_X86_64_32".to_string(),
                elf::R_X86_64_32S => "R_X86_64_32S".to_string(),
                elf::R_X86_64_GOTTPOFF => "R_X86_64_GOTTPOFF".to_string(),
                elf::R_X86_64_TPOFF32 => "R_X86_64_TPOFF32".to_string(),
                elf::R_X86_64_TLSGD => "R_X86_64_TLSGD".to_string(),
                elf::R_X86_64_TLSLD => "R_X86_64_TLSLD".to_string(),
                elf::R_X86_64_DTPOFF32 => "R_X86_64_DTPOFF32".to_string(),
                other => format!("type {other}"),
            };
            if !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

/// Sends SIGSTOP to `pid` (a child of the test) and waits, up to 5 s, until
/// the kernel shows it stopped (state T in /proc): the signal is delivered
/// asynchronously, and a check made before that sees a running process.
pub fn stop_process(pid: u32) {
    // SAFETY: signals a child of this test.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < end {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state follows the command's closing parenthesis.
        let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
        if state == Some('T') {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!("process {pid} did not stop within 5 s");
}
