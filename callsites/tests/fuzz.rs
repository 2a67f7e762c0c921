//! Truncated, garbled and hostile ELF input and random code: never a panic, and whatever
//! is returned is self-consistent (every site's rel32 really points at its target).

mod common;

use common::*;
use object::read::elf::{FileHeader, SectionHeader};
use object::{elf, Endianness};

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn consistent(sites: &[callsites::Site], targets: &[u64]) {
    for w in sites.windows(2) {
        assert!(w[0].addr < w[1].addr, "sites not sorted and unique");
    }
    for s in sites {
        assert_eq!(s.bytes.len(), s.len as usize);
        assert_eq!(s.rel32_at, s.len - 4);
        let rel = i32::from_le_bytes(s.bytes[s.rel32_at as usize..].try_into().unwrap());
        assert_eq!(
            s.next_ip().wrapping_add(rel as i64 as u64),
            targets[s.target]
        );
    }
}

/// Returns whether the search succeeded.
fn run(data: &[u8], targets: &[u64]) -> bool {
    let Ok(found) = callsites::in_elf(data, targets) else {
        return false;
    };
    consistent(&found.sites, targets);
    for w in &found.warnings {
        let _ = w.to_string();
    }
    true
}

/// (offset, size) in the file of the section headers, .symtab, .text and the ELF header.
fn regions(data: &[u8]) -> Vec<(usize, usize)> {
    let h = elf::FileHeader64::<Endianness>::parse(data).unwrap();
    let e = h.endian().unwrap();
    let shoff = h.e_shoff(e) as usize;
    let mut out = vec![(0, 64), (shoff, h.e_shnum(e) as usize * 64)];
    for sh in h.sections(e, data).unwrap().iter() {
        let t = sh.sh_type(e);
        if t == elf::SHT_SYMTAB
            || t == elf::SHT_DYNSYM
            || t == elf::SHT_STRTAB
            || sh.sh_flags(e) & u64::from(elf::SHF_EXECINSTR) != 0
        {
            out.push((sh.sh_offset(e) as usize, sh.sh_size(e) as usize));
        }
    }
    out
}

#[test]
fn truncated_and_garbled_elf_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("p.c"),
        "int f(int x) { return x + 1; }\nint g(int x) { return f(x) * 2; }\nint main(int c, char **v) { (void)v; return g(c) + f(c); }\n",
    )
    .unwrap();
    cc(d, "gcc", &["-O0", "p.c", "-o", "p"]);
    let base = std::fs::read(d.join("p")).unwrap();
    let targets = [func(&base, "f").0, func(&base, "g").0, 0, u64::MAX];
    let clean = callsites::in_elf(&base, &targets).unwrap();
    assert_eq!(
        clean.sites.len(),
        3,
        "two calls to f and one to g: {:?}",
        clean.sites
    );

    // Every truncation of the headers, then a stride through the rest.
    let mut cut = 0;
    while cut < base.len() {
        run(&base[..cut], &targets);
        cut += if cut < 8192 { 1 } else { 97 };
    }

    // Random bytes changed, mostly in the structures the parser trusts.
    let regions = regions(&base);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut searched = 0;
    for _ in 0..4000 {
        let mut data = base.clone();
        for _ in 0..1 + rng.below(8) {
            let pos = if rng.below(4) == 0 {
                rng.below(data.len())
            } else {
                let (off, size) = regions[rng.below(regions.len())];
                (off + rng.below(size)).min(data.len() - 1)
            };
            data[pos] = match rng.below(4) {
                0 => 0,
                1 => 0xff,
                _ => rng.next() as u8,
            };
        }
        searched += usize::from(run(&data, &targets));
    }
    assert!(
        searched > 1000,
        "only {searched} garbled files got past the parser: the decoder was barely exercised"
    );

    // Every symbol's value, size and section index set to hostile values.
    let h = elf::FileHeader64::<Endianness>::parse(&*base).unwrap();
    let e = h.endian().unwrap();
    let sections = h.sections(e, &*base).unwrap();
    let symtab = sections
        .iter()
        .find(|s| s.sh_type(e) == elf::SHT_SYMTAB)
        .unwrap();
    let (off, size) = (symtab.sh_offset(e) as usize, symtab.sh_size(e) as usize);
    for field in [(4, 2), (8, 8), (16, 8)] {
        for value in [0u64, 1, 0x7fff_ffff, u64::MAX, u64::MAX - 1, 0xfff1, 0xffff] {
            let mut data = base.clone();
            for sym in (off..off + size).step_by(24) {
                let bytes = value.to_le_bytes();
                data[sym + field.0..sym + field.0 + field.1].copy_from_slice(&bytes[..field.1]);
            }
            run(&data, &targets);
        }
    }
    // Section headers: offsets and sizes out of the file, huge counts.
    let shoff = h.e_shoff(e) as usize;
    for sh in 0..h.e_shnum(e) as usize {
        for (field, len) in [(4, 4), (8, 8), (16, 8), (24, 8), (32, 8), (40, 4), (56, 8)] {
            for value in [0u64, u64::MAX, 0x8000_0000] {
                let mut data = base.clone();
                let at = shoff + sh * 64 + field;
                data[at..at + len].copy_from_slice(&value.to_le_bytes()[..len]);
                run(&data, &targets);
            }
        }
    }
    // Code at the very top of the address space: bounds that wrap around.
    let text = sections
        .iter()
        .position(|s| s.sh_flags(e) & u64::from(elf::SHF_EXECINSTR) != 0 && s.sh_size(e) > 0x40)
        .unwrap();
    for (addr, value, len) in [
        (u64::MAX - 0x20, u64::MAX - 0x10, 0x40u64),
        (u64::MAX - 0x40, u64::MAX - 0x30, 0x30),
    ] {
        let mut data = base.clone();
        let at = shoff + text * 64 + 16;
        data[at..at + 8].copy_from_slice(&addr.to_le_bytes());
        for sym in (off..off + size).step_by(24) {
            if data[sym + 4] & 0xf == elf::STT_FUNC {
                data[sym + 8..sym + 16].copy_from_slice(&value.to_le_bytes());
                data[sym + 16..sym + 24].copy_from_slice(&len.to_le_bytes());
            }
        }
        assert!(run(&data, &[u64::MAX, value, 0]));
    }

    // Not ELF at all, and not x86-64.
    assert!(callsites::in_elf(b"", &targets).is_err());
    assert!(callsites::in_elf(b"\x7fELF", &targets).is_err());
    let mut other = base.clone();
    other[18] = 183; // EM_AARCH64
    assert!(matches!(
        callsites::in_elf(&other, &targets),
        Err(callsites::Error::Unsupported(_))
    ));
}

#[test]
fn random_code_never_panics() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let mut sites = 0;
    for i in 0..3000 {
        let len = rng.below(256);
        let code: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let ip = match i % 3 {
            0 => rng.next(),
            1 => u64::MAX - rng.below(64) as u64,
            _ => 0x40_1000,
        };
        // Targets: whatever the first few rel32 candidates in the bytes would reach.
        let mut targets: Vec<u64> = (0..len.saturating_sub(4))
            .map(|k| {
                let rel = i32::from_le_bytes(code[k..k + 4].try_into().unwrap());
                ip.wrapping_add(k as u64 + 4)
                    .wrapping_add(rel as i64 as u64)
            })
            .collect();
        targets.truncate(64);
        let found = callsites::in_code(&code, ip, &targets);
        consistent(&found.sites, &targets);
        assert!(found.warnings.len() <= 1);
        sites += found.sites.len();
    }
    assert!(
        sites > 0,
        "random code produced no site at all: the consistency checks never ran"
    );
}
