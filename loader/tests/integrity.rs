//! Integrity (issue 8 item 6): a patch whose bytes changed after hpbuild
//! wrote it is refused — by hpctl before it contacts the process, and by the
//! loader itself (for a client that skips hpctl's check, and through the C
//! API) — naming the patch, and the running program keeps its code and its
//! state. The change here is the one from the issue: two bytes inverted
//! inside the patch's code. Before patches carried a content hash, both
//! applied it and the program died on its next call.
//!
//! Also: the loader's own SHA-256 (`csrc/sha256.c`) against the `sha2`
//! crate that hpbuild seals with, on every length around the block and
//! padding boundaries, with the x86 SHA extensions (where the CPU has them)
//! and with the portable code.

mod common;

use common::{hpctl, make_patch, Proc, Work};
use format::protocol::{self, Request};
use object::{Object, ObjectSection};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::Duration;

const PROG: &str = include_str!("programs/integrity.c");
const FILE: &str = "integrity.c";
const SHA256_H: &str = include_str!("../csrc/sha256.h");

/// What both readers say about the changed patch.
const CHANGED: &str =
    "patch scale-3: content hash does not match (the file was changed after hpbuild wrote it)";

struct Setup {
    work: Work,
    exe: PathBuf,
    /// The patch as written: scale() multiplies by 3 instead of 2.
    good: PathBuf,
    /// The same file with two bytes of scale()'s new code inverted.
    changed: PathBuf,
}

fn setup(tag: &str) -> Setup {
    let work = Work::new(tag);
    std::fs::write(work.path("loader/sha256.h"), SHA256_H).unwrap();
    let exe = common::build_program(&work, FILE, PROG, &[]);
    let new = format!("#define FACTOR 3\n{PROG}");
    let good = make_patch(&work, "scale-3", FILE, PROG, &new, &["scale"], &[]);
    let changed = invert_two_code_bytes(&good);
    assert_ne!(changed, good);
    let changed_path = work.path("changed.hpo");
    std::fs::write(&changed_path, changed).unwrap();
    Setup {
        good: work.path("scale-3.hpo"),
        changed: changed_path,
        exe,
        work,
    }
}

/// `patch` with the first two bytes of scale()'s new code inverted.
fn invert_two_code_bytes(patch: &[u8]) -> Vec<u8> {
    let file = object::File::parse(patch).unwrap();
    let text = file.section_by_name(".text.scale").expect("scale's code");
    let (at, size) = text.file_range().unwrap();
    assert!(size >= 2);
    let mut out = patch.to_vec();
    out[at as usize] ^= 0xff;
    out[at as usize + 1] ^= 0xff;
    out
}

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// The old code runs and the call counter carries on from `calls`.
fn assert_old_code(p: &mut Proc, calls: u32) {
    assert_eq!(p.ask("call 5"), format!("result 10 calls {calls}"));
}

#[test]
fn loader_refuses_a_patch_changed_after_hpbuild_wrote_it() {
    let t = setup("integrity-loader");
    let mut p = Proc::start(&t.exe, &t.work);
    let pid = p.pid();
    assert_old_code(&mut p, 1);

    // A client that sends the file without hpctl's check.
    let reply = protocol::send(
        pid,
        &Request::Apply {
            patch: std::fs::read(&t.changed).unwrap(),
            opts: protocol::Options {
                mode: protocol::Mode::Lazy,
                ..protocol::Options::default()
            },
        },
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(!reply.ok, "the loader applied a changed patch");
    assert_eq!(reply.message, format!("{CHANGED}; rebuild it"));
    assert!(p.alive());
    assert_old_code(&mut p, 2);

    // The program's own call of the C API.
    let answer = p.ask(&format!("apply {}", s(&t.changed)));
    assert_eq!(answer, format!("err {CHANGED}; rebuild it"));
    assert_old_code(&mut p, 3);

    let log = p.log_text();
    assert!(
        log.contains(&format!("apply failed: {CHANGED}")),
        "log:\n{log}"
    );
    let (ok, out, err) = hpctl(&["list", &pid.to_string()]);
    assert!(ok, "{err}");
    assert!(!out.contains("scale-3"), "{out}");

    // The file as hpbuild wrote it applies, and the state carries on.
    let (ok, out, err) = hpctl(&["apply", &pid.to_string(), s(&t.good)]);
    assert!(ok, "{err}");
    assert!(out.contains("applied scale-3"), "{out}");
    assert_eq!(p.ask("call 5"), "result 15 calls 4");
}

#[test]
fn hpctl_refuses_a_changed_patch_before_it_contacts_the_process() {
    let t = setup("integrity-hpctl");
    let mut p = Proc::start(&t.exe, &t.work);
    let pid = p.pid().to_string();
    assert_old_code(&mut p, 1);

    let (ok, out, err) = hpctl(&["apply", &pid, s(&t.changed)]);
    assert!(!ok, "hpctl applied a changed patch: {out}");
    assert_eq!(
        err,
        format!(
            "hpctl: {} is not a usable patch: {CHANGED}; rebuild it with hpbuild",
            s(&t.changed)
        )
    );
    // Nothing reached the loader: it logged no request.
    let log = p.log_text();
    assert!(!log.contains("request from"), "log:\n{log}");
    assert!(p.alive());
    assert_old_code(&mut p, 2);
}

/// The loader's SHA-256 of a file, fed `step` bytes at a time.
fn c_sha256(p: &mut Proc, path: &std::path::Path, step: usize) -> String {
    p.ask(&format!("hash {} {step}", s(path)))
}

#[test]
fn the_loaders_sha256_agrees_with_the_writers() {
    let work = Work::new("integrity-sha256");
    std::fs::write(work.path("loader/sha256.h"), SHA256_H).unwrap();
    let exe = common::build_program(&work, FILE, PROG, &[]);
    let mut p = Proc::start(&exe, &work);
    let rust = |data: &[u8]| format::hex(&Sha256::digest(data));

    // FIPS 180-4's examples pin both.
    let known = [
        (
            &b""[..],
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ),
        (
            b"abc",
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ),
        (
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        ),
    ];
    let path = work.path("data");
    for (data, want) in known {
        std::fs::write(&path, data).unwrap();
        assert_eq!(rust(data), want);
        assert_eq!(c_sha256(&mut p, &path, 64), want);
    }

    // Every length through four blocks (the padding's one- and two-block
    // tails), fed in pieces that straddle blocks differently, and a larger
    // file in each piece size; the CPU's way, then the portable one.
    let bytes: Vec<u8> = (0..100_003u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let steps = [1, 3, 55, 64, 65, 4096];
    let mut differ = Vec::new();
    let mut ways = Vec::new();
    for _ in 0..2 {
        for len in 0..=260 {
            let step = steps[len % steps.len()];
            std::fs::write(&path, &bytes[..len]).unwrap();
            let (c, r) = (c_sha256(&mut p, &path, step), rust(&bytes[..len]));
            if c != r {
                differ.push(format!("{len} bytes in steps of {step}: C {c}, sha2 {r}"));
            }
        }
        std::fs::write(&path, &bytes).unwrap();
        for step in steps {
            let (c, r) = (c_sha256(&mut p, &path, step), rust(&bytes));
            if c != r {
                differ.push(format!(
                    "{} bytes in steps of {step}: C {c}, sha2 {r}",
                    bytes.len()
                ));
            }
        }
        ways.push(p.ask("portable"));
    }
    assert_eq!(ways[1], "portable");
    eprintln!("compressed with: {ways:?}");
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}
