//! The loader's log: ISO-8601 timestamps, one directory for the default
//! files, a file removed when its process exits cleanly, and the directory
//! trimmed of the files of processes that are gone (killed ones).

mod common;

use common::Work;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Exits at once, or with an argument prints "ready" and waits.
const PROG: &str = "#include <stdio.h>\n#include <unistd.h>\nint main(int argc, char **argv)\n{\n    if (argc > 1) {\n        puts(\"ready\");\n        fflush(stdout);\n        pause();\n    }\n    return 0;\n}\n";

/// The default log directory under `tmp` ($TMPDIR/hotpatch-<uid>).
fn log_dir(tmp: &Path) -> PathBuf {
    let uid = std::fs::metadata(tmp).unwrap().uid();
    tmp.join(format!("hotpatch-{uid}"))
}

fn command(exe: &Path, tmp: &Path) -> Command {
    let mut c = Command::new(exe);
    c.env("TMPDIR", tmp).env_remove("HOTPATCH_LOG");
    c
}

/// "[hotpatch PID 2025-06-01T12:34:56.123456Z] "
fn has_iso_stamp(line: &str, pid: u32) -> bool {
    let Some(rest) = line.strip_prefix(&format!("[hotpatch {pid} ")) else {
        return false;
    };
    let stamp: Vec<u8> = rest.bytes().take(28).collect();
    let digit = |i: usize| stamp.get(i).is_some_and(u8::is_ascii_digit);
    let at = |i: usize, c: u8| stamp.get(i) == Some(&c);
    stamp.len() == 28
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
            .iter()
            .all(|&i| digit(i))
        && (20..26).all(digit)
        && at(4, b'-')
        && at(7, b'-')
        && at(10, b'T')
        && at(13, b':')
        && at(16, b':')
        && at(19, b'.')
        && at(26, b'Z')
        && at(27, b']')
}

#[test]
fn a_clean_exit_removes_the_log_and_a_killed_process_keeps_it() {
    let work = Work::new("log");
    let exe = common::build_program(&work, "quiet.c", PROG, &[]);
    let tmp = work.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();

    let status = command(&exe, &tmp).status().unwrap();
    assert!(status.success());
    let dir = log_dir(&tmp);
    assert!(
        dir.is_dir(),
        "the default log directory {} exists",
        dir.display()
    );
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "a clean exit left {left:?}");

    let mut child = command(&exe, &tmp)
        .arg("wait")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    let log = dir.join(format!("{}.log", child.id()));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let first = text.lines().next().unwrap_or_default();
    assert!(
        has_iso_stamp(first, child.id()),
        "{}: {text}",
        log.display()
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(log.is_file(), "a killed process keeps its log");
}

#[test]
fn start_up_trims_the_logs_of_processes_that_are_gone() {
    let work = Work::new("log-trim");
    let exe = common::build_program(&work, "quiet.c", PROG, &[]);
    let tmp = work.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let dir = log_dir(&tmp);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    // Pids above any pid_max: their processes are gone.
    for i in 0..80 {
        std::fs::write(dir.join(format!("{}.log", 90_000_000 + i)), "old\n").unwrap();
    }
    std::fs::write(dir.join("notes.txt"), "not a log\n").unwrap();
    assert!(command(&exe, &tmp).status().unwrap().success());
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let logs = names.iter().filter(|n| n.ends_with(".log")).count();
    assert_eq!(logs, 64, "{names:?}");
    assert!(
        names.iter().any(|n| n == "notes.txt"),
        "only logs are removed"
    );
}
