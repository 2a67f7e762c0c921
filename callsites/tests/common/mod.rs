//! Shared by the integration tests: compile C or assembly with the system toolchain,
//! read symbols, and derive the expected sites from `objdump -d`.
#![allow(dead_code)]

use callsites::Kind;
use object::{Object, ObjectSection, ObjectSymbol};
use std::path::Path;
use std::process::Command;

/// gcc always (the project requires it); clang when installed.
pub fn compilers() -> Vec<&'static str> {
    let mut out = vec!["gcc"];
    let has_clang = Command::new("clang")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if has_clang {
        out.push("clang");
    } else {
        eprintln!("note: clang is not installed; callsites tests run with gcc only");
    }
    out
}

/// Runs `cc args...` in `dir`, panicking with the compiler's output on failure.
pub fn cc(dir: &Path, cc: &str, args: &[&str]) {
    let out = Command::new(cc)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cc}: {e}"));
    assert!(
        out.status.success(),
        "{cc} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Address and size of the defined symbol (function or label) `name`, from .symtab, else .dynsym.
pub fn func(elf: &[u8], name: &str) -> (u64, u64) {
    let file = object::File::parse(elf).unwrap();
    file.symbols()
        .chain(file.dynamic_symbols())
        .find(|s| s.name() == Ok(name) && s.section_index().is_some())
        .map(|s| (s.address(), s.size()))
        .unwrap_or_else(|| panic!("no symbol {name}"))
}

/// A site as objdump shows it: (addr, bytes, kind, target vaddr).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seen {
    pub addr: u64,
    pub bytes: Vec<u8>,
    pub kind: String,
    pub target: u64,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:#x}: {} {:02x?} -> {:#x}",
            self.addr, self.kind, self.bytes, self.target
        )
    }
}

pub fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Call => "call",
        Kind::Jmp => "jmp",
        Kind::Jcc => "jcc",
    }
}

/// Every direct branch `objdump -d -w` shows whose operand is exactly `ADDR <name>` with
/// ADDR one of `targets`, split into the rel32 forms (what must be found) and the rest
/// (rel8 forms: must not be found). The split is by objdump's raw bytes.
pub fn objdump_branches(path: &Path, targets: &[u64]) -> (Vec<Seen>, Vec<Seen>) {
    let out = Command::new("objdump")
        .args(["-d", "-w"])
        .arg(path)
        .output()
        .expect("objdump");
    assert!(
        out.status.success(),
        "objdump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (mut rel32, mut other) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let mut parts = line.splitn(3, '\t');
        let (Some(addr), Some(hex), Some(ins)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Some(addr) = addr.trim().strip_suffix(':') else {
            continue;
        };
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            continue;
        };
        let Ok(bytes) = hex
            .split_whitespace()
            .map(|b| u8::from_str_radix(b, 16))
            .collect::<Result<Vec<u8>, _>>()
        else {
            continue;
        };
        // "call   401126 <f>", "bnd jmp 401126 <f>", "jge    1224 <f>"
        let words: Vec<&str> = ins.split_whitespace().collect();
        if words.len() < 3
            || !words[words.len() - 1].starts_with('<')
            || words[words.len() - 1].contains('+')
        {
            continue;
        }
        let Ok(target) = u64::from_str_radix(words[words.len() - 2], 16) else {
            continue;
        };
        if !targets.contains(&target) {
            continue;
        }
        let mnemonic = words[words.len() - 3].trim_end_matches('q');
        let kind = match mnemonic {
            "call" => "call",
            "jmp" => "jmp",
            m if m.starts_with('j') => "jcc",
            _ => continue,
        };
        let n = bytes.len();
        let is_rel32 = n >= 5
            && match kind {
                "call" => bytes[n - 5] == 0xe8,
                "jmp" => bytes[n - 5] == 0xe9,
                _ => n >= 6 && bytes[n - 6] == 0x0f && (0x80..=0x8f).contains(&bytes[n - 5]),
            };
        let seen = Seen {
            addr,
            bytes,
            kind: kind.to_string(),
            target,
        };
        if is_rel32 {
            rel32.push(seen);
        } else {
            other.push(seen);
        }
    }
    rel32.sort();
    other.sort();
    (rel32, other)
}

/// The finder's sites in the same shape.
pub fn as_seen(sites: &[callsites::Site], targets: &[u64]) -> Vec<Seen> {
    let mut v: Vec<Seen> = sites
        .iter()
        .map(|s| {
            assert_eq!(s.bytes.len(), s.len as usize);
            assert_eq!(s.rel32_at as usize, s.len as usize - 4);
            Seen {
                addr: s.addr,
                bytes: s.bytes.clone(),
                kind: kind_name(s.kind).to_string(),
                target: targets[s.target],
            }
        })
        .collect();
    v.sort();
    v
}

/// `len` bytes of .text at vaddr `addr`.
pub fn code_at(elf: &[u8], addr: u64, len: usize) -> Vec<u8> {
    let file = object::File::parse(elf).unwrap();
    let text = file.section_by_name(".text").expect(".text");
    let off = (addr - text.address()) as usize;
    text.data().unwrap()[off..off + len].to_vec()
}
