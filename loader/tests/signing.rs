//! Signed patches (issue 10 item 4): a process configured with a public key
//! (`HOTPATCH_PUBKEY`, or `trusted.pub` in the patch directory root)
//! applies only patches signed with its private half — refused otherwise
//! by hpctl before it contacts the process, by the loader itself (a client
//! without hpctl's check, the C API, the start-up re-apply), naming the
//! reason, with the program's code and state untouched — while a process
//! without a key applies unsigned patches as before.
//!
//! Also: the loader's own Ed25519 verifier (`csrc/ed25519.c`) against RFC
//! 8032's test vectors and ed25519-dalek's signatures, negative cases
//! included, and its SHA-512 against the sha2 crate.

mod common;

use common::{hpctl, make_signed_patch, Proc, Work};
use ed25519_dalek::pkcs8::EncodePublicKey;
use ed25519_dalek::{Signer, Verifier};
use format::protocol::{self, Request};
use format::SigningKey;
use object::{Object, ObjectSection};
use sha2::{Digest, Sha512};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const PROG: &str = include_str!("programs/integrity.c");
const FILE: &str = "integrity.c";
const VERIFIER: &str = include_str!("programs/ed25519.c");
const HEADERS: &[(&str, &str)] = &[
    ("sha256.h", include_str!("../csrc/sha256.h")),
    ("sha512.h", include_str!("../csrc/sha512.h")),
    ("ed25519.h", include_str!("../csrc/ed25519.h")),
];

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn short_fingerprint(k: &SigningKey) -> String {
    format::key_fingerprint(k.verifying_key().as_bytes())[..16].to_string()
}

fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "-".into();
    }
    format::hex(bytes)
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn new_work(tag: &str) -> Work {
    let work = Work::new(tag);
    for (name, text) in HEADERS {
        std::fs::write(work.path(&format!("loader/{name}")), text).unwrap();
    }
    work
}

/// Runs the C verifier program on `lines`, one answer each.
fn c_answers(exe: &Path, lines: &[String]) -> Vec<String> {
    let mut child = Command::new(exe)
        .env("HOTPATCH_DISABLE", "1")
        .env("HOTPATCH_LOG", "stderr")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = lines.join("\n") + "\n";
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    let answers: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(answers.len(), lines.len());
    answers
}

fn verify_line(public: &[u8], sig: &[u8], msg: &[u8]) -> String {
    format!("verify {} {} {}", hex(public), hex(sig), hex(msg))
}

/// RFC 8032 section 7.1, TEST 1 to 3: secret key, public key, message,
/// signature.
const RFC8032: &[(&str, &str, &str, &str)] = &[
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
];

/// S + L, as 32 little-endian bytes: the same signature in a malleable,
/// non-canonical form (S < L < 2^253, so the sum fits).
fn plus_l(s: &[u8]) -> Vec<u8> {
    let l = unhex("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010");
    let mut out = vec![0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let v = s[i] as u16 + l[i] as u16 + carry;
        out[i] = v as u8;
        carry = v >> 8;
    }
    out
}

/// One case for the C verifier and what it must answer.
struct Case {
    what: String,
    line: String,
    want: &'static str,
}

fn case(what: String, public: &[u8], sig: &[u8], msg: &[u8], want: &'static str) -> Case {
    Case {
        what,
        line: verify_line(public, sig, msg),
        want,
    }
}

/// Signatures made by ed25519-dalek over many message lengths, each with
/// its negative twins: a flipped signature bit, a flipped message bit, the
/// wrong key, S + L.
fn dalek_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for len in (0..200).chain([1000, 4099]) {
        let signer = key(1 + (len % 4) as u8);
        let public = signer.verifying_key().to_bytes();
        let msg: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
        let sig = signer.sign(&msg).to_bytes();
        cases.push(case(
            format!("dalek, {len} bytes"),
            &public,
            &sig,
            &msg,
            "ok",
        ));
        if len % 7 != 0 {
            continue;
        }
        let bit = (len * 37) % 512;
        let mut flipped = sig;
        flipped[bit / 8] ^= 1 << (bit % 8);
        // A flipped bit of S may leave S >= L: refused either way.
        let want = if bit < 256 { "mismatch" } else { "not ok" };
        let what = format!("dalek, {len} bytes, signature bit {bit} flipped");
        cases.push(case(what, &public, &flipped, &msg, want));
        if len > 0 {
            let mut changed = msg.clone();
            changed[len / 2] ^= 0x08;
            let what = format!("dalek, {len} bytes, a message bit flipped");
            cases.push(case(what, &public, &sig, &changed, "mismatch"));
        }
        let other = key(99).verifying_key().to_bytes();
        cases.push(case(
            format!("dalek, {len} bytes, wrong key"),
            &other,
            &sig,
            &msg,
            "mismatch",
        ));
        let mut malleable = sig;
        malleable[32..].copy_from_slice(&plus_l(&sig[32..]));
        let what = format!("dalek, {len} bytes, S + L");
        cases.push(case(what, &public, &malleable, &msg, "bad-s"));
    }
    cases
}

/// Public keys that are no curve point: y >= p, and encodings whose x
/// would be the root of a non-square (found with dalek's decoder).
fn bad_key_cases() -> Vec<Case> {
    let sig = key(1).sign(b"x").to_bytes();
    // y = p + 1 (not canonical: dalek would read it as y = 1).
    let mut y_past_p = vec![0xffu8; 32];
    y_past_p[0] = 0xee;
    y_past_p[31] = 0x7f;
    let mut cases = vec![case("y = p + 1".into(), &y_past_p, &sig, b"x", "bad-key")];
    let off_curve: Vec<[u8; 32]> = (2u8..40)
        .map(|i| [i; 32])
        .filter(|k| ed25519_dalek::VerifyingKey::from_bytes(k).is_err())
        .collect();
    assert!(
        off_curve.len() >= 3,
        "no off-curve keys among the candidates"
    );
    for k in off_curve {
        let what = format!("{:02x}.. is not on the curve", k[0]);
        cases.push(case(what, &k, &sig, b"x", "bad-key"));
    }
    cases
}

#[test]
fn the_loaders_ed25519_agrees_with_rfc8032_and_ed25519_dalek() {
    let work = new_work("sign-verifier");
    let exe = common::build_program(&work, "ed25519.c", VERIFIER, &[]);

    let mut cases = Vec::new();
    for (i, (secret, public, msg, sig)) in RFC8032.iter().enumerate() {
        // dalek reproduces the vector: the test's transcription is right.
        let k = SigningKey::from_bytes(&unhex(secret).try_into().unwrap());
        assert_eq!(hex(k.verifying_key().as_bytes()), *public);
        assert_eq!(hex(&k.sign(&unhex(msg)).to_bytes()), *sig);
        let (public, sig, msg) = (unhex(public), unhex(sig), unhex(msg));
        cases.push(case(
            format!("RFC 8032 TEST {}", i + 1),
            &public,
            &sig,
            &msg,
            "ok",
        ));
        let mut flipped = sig.clone();
        flipped[0] ^= 1;
        let what = format!("RFC 8032 TEST {}, R bit flipped", i + 1);
        cases.push(case(what, &public, &flipped, &msg, "mismatch"));
    }
    cases.extend(dalek_cases());
    cases.extend(bad_key_cases());

    let lines: Vec<String> = cases.iter().map(|c| c.line.clone()).collect();
    let answers = c_answers(&exe, &lines);
    let mut wrong = Vec::new();
    for (c, got) in cases.iter().zip(&answers) {
        let fits = match c.want {
            "not ok" => got != "ok",
            want => got == want,
        };
        if !fits {
            wrong.push(format!("{}: wanted {}, C said {got}", c.what, c.want));
        }
        // dalek agrees wherever it is asked the same (it reads a
        // non-canonical y itself, so not for those keys).
        let parts: Vec<&str> = c.line.split(' ').collect();
        let public: [u8; 32] = unhex(parts[1]).try_into().unwrap();
        let sig = ed25519_dalek::Signature::from_bytes(&unhex(parts[2]).try_into().unwrap());
        let msg = if parts[3] == "-" {
            vec![]
        } else {
            unhex(parts[3])
        };
        if let Ok(k) = ed25519_dalek::VerifyingKey::from_bytes(&public) {
            if c.want != "bad-key" && k.verify(&msg, &sig).is_ok() != (got == "ok") {
                wrong.push(format!("{}: dalek and C disagree (C: {got})", c.what));
            }
        }
    }
    eprintln!("{} cases", cases.len());
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_loaders_sha512_agrees_with_sha2() {
    let work = new_work("sign-sha512");
    let exe = common::build_program(&work, "ed25519.c", VERIFIER, &[]);
    let abc = "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
               2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f";
    assert_eq!(format::hex(&Sha512::digest(b"abc")), abc);
    let data: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    let lengths: Vec<usize> = (0..=400).chain([1000, 4096, 19_999]).collect();
    let mut lines = vec![format!("sha512 {}", hex(b"abc"))];
    lines.extend(
        lengths
            .iter()
            .map(|&n| format!("sha512 {}", hex(&data[..n]))),
    );
    let answers = c_answers(&exe, &lines);
    assert_eq!(answers[0], abc);
    for (n, got) in lengths.iter().zip(&answers[1..]) {
        assert_eq!(*got, format::hex(&Sha512::digest(&data[..*n])), "{n} bytes");
    }
}

/// A program, a fix of it three ways (unsigned, signed by the trusted key,
/// signed by another), and the trusted key's PEM file.
struct Setup {
    work: Work,
    exe: PathBuf,
    unsigned: PathBuf,
    signed: PathBuf,
    other: PathBuf,
    /// The trusted public key, `keys/trusted.pub`.
    public: PathBuf,
}

/// Keys used: [`trusted`] and another one.
fn trusted() -> SigningKey {
    key(11)
}

fn write_public_key(path: &Path, k: &SigningKey) {
    let pem = k
        .verifying_key()
        .to_public_key_pem(Default::default())
        .unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::set_permissions(path.parent().unwrap(), PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(path, pem).unwrap();
    std::fs::set_permissions(path, PermissionsExt::from_mode(0o644)).unwrap();
}

fn setup(tag: &str) -> Setup {
    let work = new_work(tag);
    let exe = common::build_program(&work, FILE, PROG, &[]);
    let new = format!("#define FACTOR 3\n{PROG}");
    let make = |name: &str, k: Option<&SigningKey>| {
        let bytes = make_signed_patch(&work, "scale-3", FILE, PROG, &new, &["scale"], &[], k);
        let path = work.path(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let unsigned = make("unsigned.hpo", None);
    let signed = make("signed.hpo", Some(&trusted()));
    let other = make("other.hpo", Some(&key(12)));
    let public = work.path("keys/trusted.pub");
    write_public_key(&public, &trusted());
    Setup {
        work,
        exe,
        unsigned,
        signed,
        other,
        public,
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The loader's answer to a client that skips hpctl's checks.
fn send_raw(pid: u32, patch: &Path) -> protocol::Reply {
    let request = Request::Apply {
        patch: std::fs::read(patch).unwrap(),
        opts: protocol::Options {
            mode: protocol::Mode::Lazy,
            ..protocol::Options::default()
        },
    };
    protocol::send(pid, &request, Duration::from_secs(10)).unwrap()
}

/// The old code runs and the counter carries on from `calls`.
fn assert_old_code(p: &mut Proc, calls: u32) {
    assert_eq!(p.ask("call 5"), format!("result 10 calls {calls}"));
}

/// A fresh, empty patch directory root, so the test's HOME plays no part.
fn empty_root(work: &Work) -> PathBuf {
    let root = work.path("no-root");
    std::fs::create_dir_all(&root).unwrap();
    root
}

#[test]
fn a_process_with_a_key_applies_only_patches_signed_with_it() {
    let t = setup("sign-key");
    let root = empty_root(&t.work);
    let env = [
        ("HOTPATCH_PUBKEY", t.public.as_os_str()),
        ("HOTPATCH_DIR", root.as_os_str()),
    ];
    let mut p = Proc::start_with(&t.exe, &t.work, &env);
    let pid = p.pid();
    assert_old_code(&mut p, 1);
    let fp = short_fingerprint(&trusted());
    let source = format!("HOTPATCH_PUBKEY={}", s(&t.public));
    let unsigned = format!(
        "patch scale-3 is not signed, and this process requires signed patches (key {fp}, \
         {source})"
    );
    let other = format!(
        "patch scale-3: signature does not verify with the configured key {fp} ({source}): it \
         was signed with key {}",
        short_fingerprint(&key(12))
    );

    // hpctl refuses both before it contacts the process.
    for (patch, says) in [(&t.unsigned, &unsigned), (&t.other, &other)] {
        let (ok, out, err) = hpctl(&["apply", &pid.to_string(), s(patch)]);
        assert!(!ok, "hpctl applied {}: {out}", s(patch));
        assert_eq!(
            err,
            format!("hpctl: {says}; nothing was sent to process {pid}")
        );
    }
    let log = p.log_text();
    assert!(!log.contains("request from"), "log:\n{log}");
    assert!(
        log.contains(&format!(
            "signing: every patch must be signed with key {fp} ({source})"
        )),
        "log:\n{log}"
    );

    // The loader refuses them itself: a client without the check, the C API.
    for (patch, says) in [(&t.unsigned, &unsigned), (&t.other, &other)] {
        let reply = send_raw(pid, patch);
        assert!(!reply.ok, "the loader applied {}", s(patch));
        assert_eq!(&reply.message, says);
    }
    assert_eq!(
        p.ask(&format!("apply {}", s(&t.unsigned))),
        format!("err {unsigned}")
    );
    assert_old_code(&mut p, 2);

    // Signed with the key, then changed and sealed again by someone who
    // can write the file but has no key.
    let mut changed = std::fs::read(&t.signed).unwrap();
    let code = object::File::parse(&*changed)
        .unwrap()
        .section_by_name(".text.scale")
        .unwrap()
        .file_range()
        .unwrap()
        .0 as usize;
    changed[code] ^= 0x01;
    format::seal(&mut changed).unwrap();
    let changed_path = t.work.path("changed.hpo");
    std::fs::write(&changed_path, changed).unwrap();
    let reply = send_raw(pid, &changed_path);
    assert_eq!(
        reply.message,
        format!(
            "patch scale-3: signature does not verify with the configured key {fp} ({source}): \
             the patch or its signature was changed after it was signed"
        )
    );
    assert!(p.alive());
    assert_old_code(&mut p, 3);

    // The patch its key signed applies; the counter carries on.
    let (ok, out, err) = hpctl(&["apply", &pid.to_string(), s(&t.signed)]);
    assert!(ok, "{err}");
    assert!(out.contains("applied scale-3"), "{out}");
    assert_eq!(p.ask("call 5"), "result 15 calls 4");
}

#[test]
fn a_process_without_a_key_applies_unsigned_and_signed_patches() {
    let t = setup("sign-none");
    let root = empty_root(&t.work);
    let mut p = Proc::start_with(&t.exe, &t.work, &[("HOTPATCH_DIR", root.as_os_str())]);
    let pid = p.pid().to_string();
    assert_old_code(&mut p, 1);
    for (patch, calls) in [(&t.unsigned, 2), (&t.other, 3)] {
        let (ok, out, err) = hpctl(&["apply", &pid, s(patch)]);
        assert!(ok, "{}: {err}", s(patch));
        assert!(out.contains("applied scale-3"), "{out}");
        assert_eq!(p.ask("call 5"), format!("result 15 calls {calls}"));
        let (ok, _, err) = hpctl(&["revert", &pid]);
        assert!(ok, "{err}");
    }
    assert!(!p.log_text().contains("signing:"), "{}", p.log_text());
}

/// Puts `patch` as the one patch of the series of `exe`'s build under
/// `root`, as `hpctl apply --persist` would have.
fn persist_by_hand(root: &Path, exe: &Path, patch: &Path) {
    let bytes = std::fs::read(exe).unwrap();
    let id = object::File::parse(&*bytes)
        .unwrap()
        .build_id()
        .unwrap()
        .expect("the test program has a build-id");
    let dir = root.join(format::hex(id));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, PermissionsExt::from_mode(0o755)).unwrap();
    let patch_bytes = std::fs::read(patch).unwrap();
    let sha = format::hex(&format::verify_content_hash(&patch_bytes).unwrap());
    std::fs::write(dir.join("scale-3.hpo"), &patch_bytes).unwrap();
    std::fs::write(dir.join("series"), format!("scale-3.hpo {sha} scale-3\n")).unwrap();
    for f in ["scale-3.hpo", "series"] {
        std::fs::set_permissions(dir.join(f), PermissionsExt::from_mode(0o644)).unwrap();
    }
}

#[test]
fn trusted_pub_in_the_patch_directory_root_guards_the_start_up_reapply() {
    let t = setup("sign-startup");
    let root = t.work.path("root");
    let key_file = root.join("trusted.pub");
    write_public_key(&key_file, &trusted());
    let env = [("HOTPATCH_DIR", root.as_os_str())];

    // An unsigned patch in the directory is not applied before main.
    persist_by_hand(&root, &t.exe, &t.unsigned);
    let mut p = Proc::start_with(&t.exe, &t.work, &env);
    assert_old_code(&mut p, 1);
    let log = p.log_text();
    let why = format!(
        "patch scale-3 is not signed, and this process requires signed patches (key {}, {})",
        short_fingerprint(&trusted()),
        s(&key_file)
    );
    assert!(
        log.contains("start-up: patch scale-3 from")
            && log.contains(&format!("NOT applied: {why}")),
        "log:\n{log}"
    );
    // hpctl finds the same key through the process's HOTPATCH_DIR.
    let (ok, _, err) = hpctl(&["apply", &p.pid().to_string(), s(&t.unsigned)]);
    assert!(!ok);
    assert!(err.contains(&why), "{err}");
    drop(p);

    // The signed one is, from the first call.
    std::fs::remove_file(t.work.path("hotpatch.log")).unwrap();
    persist_by_hand(&root, &t.exe, &t.signed);
    let mut p = Proc::start_with(&t.exe, &t.work, &env);
    assert_eq!(p.ask("call 5"), "result 15 calls 1");
    let log = p.log_text();
    assert!(log.contains("start-up: re-applied scale-3"), "log:\n{log}");
}

#[test]
fn an_unusable_key_is_ignored_and_every_patch_refused() {
    let t = setup("sign-unusable");
    let root = empty_root(&t.work);
    // Writable by others: whoever can write it could sign patches.
    std::fs::set_permissions(&t.public, PermissionsExt::from_mode(0o666)).unwrap();
    // A private key where the public one belongs.
    let private = t.work.path("keys/private.pem");
    let pem = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_pem(&trusted(), Default::default())
        .unwrap();
    std::fs::write(&private, pem.as_bytes()).unwrap();
    std::fs::set_permissions(&private, PermissionsExt::from_mode(0o600)).unwrap();
    let uid = std::fs::metadata(&t.public).unwrap().uid();
    let cases: [(&Path, String); 3] = [
        (
            &t.public,
            format!(
                "the file is owned by uid {uid} with mode 666 (must be ours or root's and \
                 writable by nobody else)"
            ),
        ),
        (
            &private,
            "it holds a private key; give the process the public key only (make one with: \
             openssl pkey -in key.pem -pubout -out key.pub)"
                .into(),
        ),
        (
            Path::new("keys/trusted.pub"),
            "it is not an absolute path".into(),
        ),
    ];
    for (key_path, why) in cases {
        let env = [
            ("HOTPATCH_PUBKEY", key_path.as_os_str()),
            ("HOTPATCH_DIR", root.as_os_str()),
        ];
        let mut p = Proc::start_with(&t.exe, &t.work, &env);
        let source = format!("HOTPATCH_PUBKEY={}", s(key_path));
        let log = p.log_text();
        assert!(
            log.contains(&format!("signing: the key {source} is ignored: {why}.")),
            "log:\n{log}"
        );
        // Even the patch the key signed: the process cannot check it.
        let (ok, _, err) = hpctl(&["apply", &p.pid().to_string(), s(&t.signed)]);
        assert!(!ok);
        assert_eq!(
            err,
            format!(
                "hpctl: patch scale-3 refused: this process requires signed patches, but its \
                 key {source} is unusable ({why}); fix the key and restart the process"
            )
        );
        assert_old_code(&mut p, 1);
    }
}
