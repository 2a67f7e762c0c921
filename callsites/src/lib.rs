//! Exact finder of direct branch sites (`call rel32`, `jmp rel32`, `jcc rel32`)
//! that target given functions, for call-site redirects.
//!
//! Code is decoded with a real x86-64 decoder (iced-x86), linearly from each
//! function's start to its end as given by the symbol table; nothing is ever
//! guessed from byte patterns. See README.md for what this must never do.

use std::collections::HashMap;
use std::fmt;

use iced_x86::{Code, Decoder, DecoderOptions, Instruction};
use object::elf;
use object::read::elf::{FileHeader, SectionHeader, Sym};
use object::{Endianness, SymbolIndex};

/// Which kind of direct branch a site is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `E8 rel32`
    Call,
    /// `E9 rel32` (a tail call, or a jump to the target)
    Jmp,
    /// `0F 80..8F rel32` (a conditional tail call, as compilers emit at -O2)
    Jcc,
}

/// A direct branch whose rel32 operand points at one of the targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// Address of the instruction: link-time vaddr for ELF input, `ip` + offset for raw code.
    pub addr: u64,
    /// Instruction length in bytes (5 or 6, more with branch prefixes such as `bnd`).
    pub len: u8,
    /// Offset of the little-endian rel32 field inside the instruction (always `len - 4`).
    pub rel32_at: u8,
    /// The instruction's bytes as found.
    pub bytes: Vec<u8>,
    pub kind: Kind,
    /// Index into the `targets` slice (the first one, if a target is listed twice).
    pub target: usize,
}

impl Site {
    /// Address just after the instruction: the base the rel32 is relative to.
    pub fn next_ip(&self) -> u64 {
        self.addr.wrapping_add(u64::from(self.len))
    }
}

/// Something that was not decoded, or a site that was dropped; sites found elsewhere are unaffected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Symbol name (empty for [`in_code`]).
    pub function: String,
    /// Start address of the function.
    pub start: u64,
    pub kind: WarningKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarningKind {
    /// Decoding stopped at `at`: the bytes there are not a valid instruction, or one that
    /// runs past the function's end (data in code, or wrong bounds). Sites before `at` are reported.
    Undecodable { at: u64 },
    /// The symbol has size 0: nothing to decode.
    Empty,
    /// The symbol's bounds are not inside an executable section with bytes in the file.
    OutOfSection { size: u64 },
    /// A site found in this function is not an instruction boundary in an overlapping
    /// function's decode: the two symbol tables' views disagree, so it is not reported.
    Ambiguous { site: u64 },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if self.function.is_empty() {
            "<code>"
        } else {
            &self.function
        };
        match self.kind {
            WarningKind::Undecodable { at } => write!(
                f,
                "{name} at {:#x}: no valid instruction at {at:#x} (+{:#x}); decoded up to there",
                self.start,
                at.wrapping_sub(self.start)
            ),
            WarningKind::Empty => write!(f, "{name} at {:#x}: size 0, not decoded", self.start),
            WarningKind::OutOfSection { size } => write!(
                f,
                "{name} at {:#x} size {size:#x}: not inside an executable section, not decoded",
                self.start
            ),
            WarningKind::Ambiguous { site } => write!(
                f,
                "{name} at {:#x}: site {site:#x} is not an instruction boundary in an overlapping symbol, not reported",
                self.start
            ),
        }
    }
}

/// What a search found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// Sorted by address, one per address.
    pub sites: Vec<Site>,
    pub warnings: Vec<Warning>,
    /// Number of function ranges decoded (after removing exact duplicates).
    pub functions: usize,
    /// Number of code bytes decoded.
    pub bytes_decoded: u64,
}

/// Why an ELF file could not be searched at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Not a well-formed ELF file (the message says where).
    Malformed(String),
    /// A well-formed ELF, but not a 64-bit little-endian x86-64 executable or shared object.
    Unsupported(String),
    /// Neither `.symtab` nor `.dynsym`: no function bounds to decode over.
    NoSymbols,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Malformed(m) => write!(f, "malformed ELF: {m}"),
            Error::Unsupported(m) => write!(f, "unsupported ELF: {m}"),
            Error::NoSymbols => write!(f, "ELF has neither .symtab nor .dynsym"),
        }
    }
}

impl std::error::Error for Error {}

/// Target address -> index of its first occurrence in the caller's slice.
struct Targets(HashMap<u64, usize>);

impl Targets {
    fn new(targets: &[u64]) -> Targets {
        let mut m = HashMap::with_capacity(targets.len());
        for (i, &t) in targets.iter().enumerate() {
            m.entry(t).or_insert(i);
        }
        Targets(m)
    }
}

/// The rel32 branch forms that are sites; `None` for every other instruction.
fn branch_kind(code: Code) -> Option<Kind> {
    match code {
        Code::Call_rel32_64 => Some(Kind::Call),
        Code::Jmp_rel32_64 => Some(Kind::Jmp),
        Code::Jo_rel32_64
        | Code::Jno_rel32_64
        | Code::Jb_rel32_64
        | Code::Jae_rel32_64
        | Code::Je_rel32_64
        | Code::Jne_rel32_64
        | Code::Jbe_rel32_64
        | Code::Ja_rel32_64
        | Code::Js_rel32_64
        | Code::Jns_rel32_64
        | Code::Jp_rel32_64
        | Code::Jnp_rel32_64
        | Code::Jl_rel32_64
        | Code::Jge_rel32_64
        | Code::Jle_rel32_64
        | Code::Jg_rel32_64 => Some(Kind::Jcc),
        _ => None,
    }
}

/// Checks the encoding the decoder reported byte by byte: opcode immediately before the
/// final four bytes, only prefixes that leave the rel32 meaning alone before it
/// (`bnd`/F2, branch hints or `notrack` 2E/3E, REX), and the rel32 pointing at `target`.
/// Anything else (an operand-size prefix, whose meaning differs between Intel and AMD)
/// is not a site: the entry jump still covers it.
fn encoding_ok(bytes: &[u8], kind: Kind, addr: u64, target: u64) -> bool {
    let len = bytes.len();
    let opcode_len = if kind == Kind::Jcc { 2 } else { 1 };
    if len < 4 + opcode_len {
        return false;
    }
    let op_at = len - 4 - opcode_len;
    let opcode_ok = match kind {
        Kind::Call => bytes[op_at] == 0xE8,
        Kind::Jmp => bytes[op_at] == 0xE9,
        Kind::Jcc => bytes[op_at] == 0x0F && (0x80..=0x8F).contains(&bytes[op_at + 1]),
    };
    let prefixes_ok = bytes[..op_at]
        .iter()
        .all(|&b| matches!(b, 0xF2 | 0x2E | 0x3E | 0x40..=0x4F));
    let rel = i32::from_le_bytes([
        bytes[len - 4],
        bytes[len - 3],
        bytes[len - 2],
        bytes[len - 1],
    ]);
    let computed = addr
        .wrapping_add(len as u64)
        .wrapping_add(rel as i64 as u64);
    opcode_ok && prefixes_ok && computed == target
}

/// Decodes `code` (loaded at `ip`) linearly to its end or the first invalid instruction.
/// Pushes sites; records every instruction start into `boundaries` when given.
/// Returns the address of the first undecodable byte, if any.
fn decode_range(
    code: &[u8],
    ip: u64,
    targets: &Targets,
    sites: &mut Vec<Site>,
    mut boundaries: Option<&mut Vec<u64>>,
) -> Option<u64> {
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut ins = Instruction::default();
    while decoder.can_decode() {
        let at = decoder.position();
        let addr = decoder.ip();
        decoder.decode_out(&mut ins);
        if ins.is_invalid() {
            return Some(addr);
        }
        if let Some(b) = boundaries.as_deref_mut() {
            b.push(addr);
        }
        let Some(kind) = branch_kind(ins.code()) else {
            continue;
        };
        let target = ins.near_branch_target();
        let Some(&index) = targets.0.get(&target) else {
            continue;
        };
        let bytes = &code[at..decoder.position()];
        if !encoding_ok(bytes, kind, addr, target) {
            continue;
        }
        sites.push(Site {
            addr,
            len: bytes.len() as u8,
            rel32_at: (bytes.len() - 4) as u8,
            bytes: bytes.to_vec(),
            kind,
            target: index,
        });
    }
    None
}

/// The same search over one function's raw code loaded at `ip` (for example a patch's
/// code read from the running process). Decoding is linear from `code[0]` to the end.
pub fn in_code(code: &[u8], ip: u64, targets: &[u64]) -> Found {
    let targets = Targets::new(targets);
    let mut found = Found {
        functions: 1,
        ..Found::default()
    };
    if code.is_empty() {
        found.warnings.push(Warning {
            function: String::new(),
            start: ip,
            kind: WarningKind::Empty,
        });
        return found;
    }
    if let Some(at) = decode_range(code, ip, &targets, &mut found.sites, None) {
        found.warnings.push(Warning {
            function: String::new(),
            start: ip,
            kind: WarningKind::Undecodable { at },
        });
        found.bytes_decoded = at.wrapping_sub(ip);
    } else {
        found.bytes_decoded = code.len() as u64;
    }
    found.sites.sort_by_key(|s| s.addr);
    found.sites.dedup_by_key(|s| s.addr);
    found
}

/// One function range to decode.
struct Range<'d> {
    start: u64,
    end: u64,
    code: &'d [u8],
    name: String,
    /// Overlaps another range with different bounds: record boundaries and cross-check.
    overlaps: bool,
}

fn malformed<E: fmt::Display>(what: &str) -> impl FnOnce(E) -> Error + '_ {
    move |e| Error::Malformed(format!("{what}: {e}"))
}

/// Every direct `call`/`jmp`/`jcc` with a 32-bit displacement in the executable sections
/// of an x86-64 ELF executable or shared object (`elf` is the whole file), decoded
/// function by function over the `STT_FUNC` (and `STT_GNU_IFUNC`) bounds of `.symtab`
/// (`.dynsym` if there is no `.symtab`), whose target is one of `targets` (link-time vaddrs).
///
/// Code not covered by a function symbol (PLT, padding, `.init` stubs) is not decoded.
pub fn in_elf(elf: &[u8], targets: &[u64]) -> Result<Found, Error> {
    let header = elf::FileHeader64::<Endianness>::parse(elf).map_err(malformed("file header"))?;
    let endian = header.endian().map_err(malformed("file header"))?;
    if endian != Endianness::Little || header.e_machine(endian) != elf::EM_X86_64 {
        return Err(Error::Unsupported("not little-endian x86-64".into()));
    }
    let e_type = header.e_type(endian);
    if e_type != elf::ET_EXEC && e_type != elf::ET_DYN {
        return Err(Error::Unsupported(format!(
            "e_type {e_type} is not an executable or shared object (relocatable code has no final branch targets)"
        )));
    }
    let sections = header
        .sections(endian, elf)
        .map_err(malformed("section headers"))?;
    let mut symbols = sections
        .symbols(endian, elf, elf::SHT_SYMTAB)
        .map_err(malformed(".symtab"))?;
    if symbols.is_empty() {
        symbols = sections
            .symbols(endian, elf, elf::SHT_DYNSYM)
            .map_err(malformed(".dynsym"))?;
    }
    if symbols.is_empty() {
        return Err(Error::NoSymbols);
    }

    let mut found = Found::default();
    // Section index -> Some((sh_addr, bytes)) for executable sections with file bytes.
    let mut code_sections: HashMap<usize, Option<(u64, &[u8])>> = HashMap::new();
    let mut ranges: Vec<Range> = Vec::new();
    for (i, sym) in symbols.iter().enumerate() {
        let st_type = sym.st_type();
        if st_type != elf::STT_FUNC && st_type != elf::STT_GNU_IFUNC {
            continue;
        }
        let shndx = match symbols.symbol_section(endian, sym, SymbolIndex(i)) {
            Ok(Some(s)) => s,
            // Undefined (an import), absolute, common, or a broken SHN_XINDEX entry.
            Ok(None) | Err(_) => continue,
        };
        let start = sym.st_value(endian);
        let size = sym.st_size(endian);
        let name = || {
            String::from_utf8_lossy(symbols.symbol_name(endian, sym).unwrap_or(b"?")).into_owned()
        };
        if size == 0 {
            found.warnings.push(Warning {
                function: name(),
                start,
                kind: WarningKind::Empty,
            });
            continue;
        }
        let section = *code_sections.entry(shndx.0).or_insert_with(|| {
            let sh = sections.section(shndx).ok()?;
            let flags = sh.sh_flags(endian);
            let exec = u64::from(elf::SHF_ALLOC | elf::SHF_EXECINSTR);
            if flags & exec != exec || sh.sh_type(endian) == elf::SHT_NOBITS {
                return None;
            }
            let data = sh.data(endian, elf).ok()?;
            if data.len() as u64 != sh.sh_size(endian) {
                return None;
            }
            Some((sh.sh_addr(endian), data))
        });
        let code = section.and_then(|(addr, data)| {
            let off = start.checked_sub(addr)?;
            let end = off.checked_add(size)?;
            start.checked_add(size)?;
            data.get(usize::try_from(off).ok()?..usize::try_from(end).ok()?)
        });
        match code {
            Some(code) => ranges.push(Range {
                start,
                end: start + size,
                code,
                name: name(),
                overlaps: false,
            }),
            None => found.warnings.push(Warning {
                function: name(),
                start,
                kind: WarningKind::OutOfSection { size },
            }),
        }
    }

    // Aliases with identical bounds decode to the same instructions: keep one.
    ranges.sort_by(|a, b| (a.start, a.end, &a.name).cmp(&(b.start, b.end, &b.name)));
    ranges.dedup_by(|b, a| a.start == b.start && a.end == b.end);
    // Mark ranges that overlap another (nested functions, aliases with a different size):
    // their decodes must agree on where instructions start. Sorted by start, range i overlaps
    // another iff an earlier one reaches past its start or the next one starts before its end.
    let mut reach = 0u64;
    for i in 0..ranges.len() {
        let earlier = i > 0 && reach > ranges[i].start;
        let later = ranges.get(i + 1).is_some_and(|n| n.start < ranges[i].end);
        ranges[i].overlaps = earlier || later;
        reach = reach.max(ranges[i].end);
    }

    let targets = Targets::new(targets);
    found.functions = ranges.len();
    let mut sites: Vec<(Site, usize)> = Vec::new();
    // For overlapping ranges: index -> (instruction starts, decoded end).
    let mut views: HashMap<usize, (Vec<u64>, u64)> = HashMap::new();
    let mut buf = Vec::new();
    for (i, r) in ranges.iter().enumerate() {
        buf.clear();
        let mut bounds = if r.overlaps { Some(Vec::new()) } else { None };
        let stop = decode_range(r.code, r.start, &targets, &mut buf, bounds.as_mut());
        let decoded_end = stop.unwrap_or(r.end);
        found.bytes_decoded += decoded_end - r.start;
        if let Some(at) = stop {
            found.warnings.push(Warning {
                function: r.name.clone(),
                start: r.start,
                kind: WarningKind::Undecodable { at },
            });
        }
        if let Some(b) = bounds {
            views.insert(i, (b, decoded_end));
        }
        sites.extend(buf.drain(..).map(|s| (s, i)));
    }

    // A site from an overlapping range must start an instruction in every range covering it.
    if !views.is_empty() {
        let mut kept = Vec::with_capacity(sites.len());
        for (site, i) in sites {
            if !ranges[i].overlaps {
                kept.push((site, i));
                continue;
            }
            let agrees = views.iter().all(|(&j, (bounds, decoded_end))| {
                let r = &ranges[j];
                j == i
                    || site.addr >= r.end
                    || site.next_ip() <= r.start
                    || (site.addr < *decoded_end && bounds.binary_search(&site.addr).is_ok())
            });
            if agrees {
                kept.push((site, i));
            } else {
                found.warnings.push(Warning {
                    function: ranges[i].name.clone(),
                    start: ranges[i].start,
                    kind: WarningKind::Ambiguous { site: site.addr },
                });
            }
        }
        sites = kept;
    }

    found.sites = sites.into_iter().map(|(s, _)| s).collect();
    found.sites.sort_by_key(|s| s.addr);
    found.sites.dedup_by_key(|s| s.addr);
    found.warnings.dedup();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: u64 = 0x40_1000;

    fn rel(from_end: u64, to: u64) -> [u8; 4] {
        (to.wrapping_sub(from_end) as i64 as i32).to_le_bytes()
    }

    #[test]
    fn raw_forms() {
        let t = 0x40_0000u64;
        let mut code = Vec::new();
        let mut want = Vec::new();
        // (prefix+opcode, kind or None when it must not be a site)
        let forms: &[(&[u8], Option<Kind>)] = &[
            (&[0xe8], Some(Kind::Call)),
            (&[0xe9], Some(Kind::Jmp)),
            (&[0x0f, 0x85], Some(Kind::Jcc)),
            (&[0x0f, 0x8f], Some(Kind::Jcc)),
            (&[0xf2, 0xe8], Some(Kind::Call)),
            (&[0x66, 0xe8], None),
        ];
        for (op, kind) in forms {
            let addr = IP + code.len() as u64;
            code.extend_from_slice(op);
            let end = IP + code.len() as u64 + 4;
            code.extend_from_slice(&rel(end, t));
            if let Some(k) = kind {
                want.push((addr, *k, (op.len() + 4) as u8));
            }
        }
        // The same call to a non-target, and an indirect call through memory.
        let end = IP + code.len() as u64 + 5;
        code.push(0xe8);
        code.extend_from_slice(&rel(end, t + 1));
        code.extend_from_slice(&[0xff, 0x15, 0, 0, 0, 0, 0xc3]);
        let found = in_code(&code, IP, &[7, t]);
        assert!(found.warnings.is_empty(), "{:?}", found.warnings);
        let got: Vec<_> = found
            .sites
            .iter()
            .map(|s| (s.addr, s.kind, s.len))
            .collect();
        assert_eq!(got, want);
        assert!(found
            .sites
            .iter()
            .all(|s| s.target == 1 && s.bytes.len() == s.len as usize));
        assert_eq!(found.bytes_decoded, code.len() as u64);
    }

    #[test]
    fn truncated_invalid_and_empty() {
        let t = 0x40_0000u64;
        // A call cut short by the end of the code.
        let found = in_code(&[0x90, 0xe8, 0, 0], IP, &[t]);
        assert!(found.sites.is_empty());
        assert_eq!(
            found.warnings[0].kind,
            WarningKind::Undecodable { at: IP + 1 }
        );
        assert_eq!(found.bytes_decoded, 1);
        // A real call, then an invalid byte, then something that looks like a call.
        let mut code = vec![0xe8];
        code.extend_from_slice(&rel(IP + 5, t));
        code.push(0x06);
        code.push(0xe8);
        code.extend_from_slice(&rel(IP + 11, t));
        let found = in_code(&code, IP, &[t]);
        assert_eq!(found.sites.len(), 1);
        assert_eq!(found.sites[0].addr, IP);
        assert_eq!(
            found.warnings[0].kind,
            WarningKind::Undecodable { at: IP + 5 }
        );
        let found = in_code(&[], IP, &[t]);
        assert!(found.sites.is_empty());
        assert_eq!(found.warnings[0].kind, WarningKind::Empty);
    }
}
