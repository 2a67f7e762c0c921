//! Patch format v1, the one definition shared by the writer (hpbuild), hpctl
//! and — through the C header generated from `format_layout.rs` — the
//! in-process loader.
//!
//! A patch is an ELF64 x86-64 relocatable object (`ET_REL`):
//! * its allocated sections are the new code and data, laid out by the loader
//!   in a region near the running executable (code read+execute, read-only
//!   data read-only, writable data read+write; never write+execute);
//! * its relocations are ordinary `R_X86_64_*` relocations; undefined symbols
//!   name things in the running program (see [`HP_LOCAL_SEP`]);
//! * the non-allocated section [`HP_META_SECTION`] says which functions of the
//!   running program are replaced, by which symbol, and what their original
//!   code must look like (size + fingerprint), so the loader refuses a patch
//!   built for different code;
//! * the metadata header is followed by the patch's content hash: SHA-256 of
//!   the whole file with the hash's own 32 bytes read as zero
//!   ([`HP_HDR_SHA256`]). The writer stores it last ([`seal`]); every reader
//!   checks it before anything else ([`verify_content_hash`], called by
//!   [`read_patch`]; the loader's C reader does the same), so a file changed
//!   after hpbuild wrote it is refused, naming the patch, before anything is
//!   sent to a process or written into one.

use object::read::elf::{FileHeader, SectionHeader};
use object::{Object, ObjectSection, ObjectSymbol};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;

include!("layout.rs");

/// One replaced function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuncRecord {
    /// Symbol name in the running program.
    pub name: String,
    /// STT_FILE name for a static function; empty for a global.
    pub file: String,
    /// Defined symbol in the patch object that holds the new code.
    pub new_symbol: String,
    /// One of the `HP_REDIRECT_*` constants.
    pub redirect: u32,
    /// Size of the original function (its `st_size`).
    pub old_size: u64,
    /// [`fingerprint`] of the original code.
    pub fingerprint: u64,
    /// Byte ranges (offset, length) of the original code ignored by the fingerprint.
    pub masks: Vec<(u32, u32)>,
}

impl FuncRecord {
    pub fn is_local(&self) -> bool {
        !self.file.is_empty()
    }
}

/// The whole metadata section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Meta {
    pub patch_id: String,
    /// `HP_HDR_F_*` bits the builder chooses ([`HP_HDR_F_CALL_SITES`]);
    /// [`HP_HDR_F_SHA256`] is the layout's, set by `encode` and required and
    /// removed by `decode`.
    pub flags: u32,
    /// Free text describing what the patch was built against.
    pub base_id: String,
    /// What the patch is for: a shared library by path, file name or
    /// soname, "" the executable. None: the executable. One library:
    /// [`HP_HDR_TARGET`] with [`HP_HDR_F_TARGET`]. Several (a unit linked
    /// into several outputs): [`HP_HDR_TARGETS`] with [`HP_HDR_F_TARGETS`].
    /// `decode` removes both flags from `flags`.
    pub targets: Vec<String>,
    pub funcs: Vec<FuncRecord>,
}

/// Why bytes are not a valid patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError(pub String);

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FormatError {}

pub(crate) fn bad(msg: impl Into<String>) -> FormatError {
    FormatError(msg.into())
}

/// FNV-1a 64 over `code`, reading every byte inside a mask as zero.
pub fn fingerprint(code: &[u8], masks: &[(u32, u32)]) -> u64 {
    let mut hash = HP_FNV_OFFSET_BASIS;
    for (i, &byte) in code.iter().enumerate() {
        let masked = masks
            .iter()
            .any(|&(off, len)| (i as u64) >= off as u64 && (i as u64) < off as u64 + len as u64);
        hash ^= if masked { 0 } else { byte as u64 };
        hash = hash.wrapping_mul(HP_FNV_PRIME);
    }
    hash
}

/// The undefined-symbol name a patch uses for the static NAME of FILE.
pub fn local_symbol_name(file: &str, name: &str) -> String {
    format!("{file}{HP_LOCAL_SEP}{name}")
}

/// Splits an undefined-symbol name into (file, name); file is `None` for globals.
pub fn split_symbol_name(symbol: &str) -> (Option<&str>, &str) {
    match symbol.rfind(HP_LOCAL_SEP) {
        Some(at) => (Some(&symbol[..at]), &symbol[at + HP_LOCAL_SEP.len()..]),
        None => (None, symbol),
    }
}

struct StrTab {
    bytes: Vec<u8>,
}

impl StrTab {
    fn new() -> Self {
        StrTab { bytes: vec![0] }
    }
    fn add(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let at = self.bytes.len() as u32;
        self.bytes.extend_from_slice(s.as_bytes());
        self.bytes.push(0);
        at
    }
}

fn put_u32(buf: &mut [u8], at: u32, v: u32) {
    buf[at as usize..at as usize + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(buf: &mut [u8], at: u32, v: u64) {
    buf[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
}

impl Meta {
    /// Was the patch built to be applied with call-site redirects?
    pub fn prefers_call_sites(&self) -> bool {
        self.flags & HP_HDR_F_CALL_SITES != 0
    }

    /// Serialises the metadata section, with a content hash of zeros: the
    /// writer [`seal`]s the finished file.
    pub fn encode(&self) -> Vec<u8> {
        let mut strs = StrTab::new();
        let nmasks: usize = self.funcs.iter().map(|f| f.masks.len()).sum();
        let several = self.targets.len() > 1;
        let funcs_off = match self.targets.as_slice() {
            [] => HP_HDR_SEALED_SIZE,
            [one] if one.is_empty() => HP_HDR_SEALED_SIZE,
            [_] => HP_HDR_TARGETED_SIZE,
            more => (HP_HDR_TARGETS + 4 * more.len() as u32).next_multiple_of(8),
        };
        let masks_off = funcs_off + HP_FUNC_SIZE * self.funcs.len() as u32;
        let strtab_off = masks_off + HP_MASK_SIZE * nmasks as u32;
        let mut out = vec![0u8; strtab_off as usize];

        out[..8].copy_from_slice(HP_MAGIC);
        put_u32(&mut out, HP_HDR_VERSION, HP_FORMAT_VERSION);
        let target_flag = if several {
            put_u32(&mut out, HP_HDR_NTARGETS, self.targets.len() as u32);
            for (i, t) in self.targets.iter().enumerate() {
                put_u32(&mut out, HP_HDR_TARGETS + 4 * i as u32, strs.add(t));
            }
            HP_HDR_F_TARGETS
        } else if funcs_off == HP_HDR_TARGETED_SIZE {
            put_u32(&mut out, HP_HDR_TARGET, strs.add(&self.targets[0]));
            HP_HDR_F_TARGET
        } else {
            0
        };
        put_u32(
            &mut out,
            HP_HDR_FLAGS,
            (self.flags & !(HP_HDR_F_TARGET | HP_HDR_F_TARGETS)) | HP_HDR_F_SHA256 | target_flag,
        );
        put_u32(&mut out, HP_HDR_PATCH_ID, strs.add(&self.patch_id));
        put_u32(&mut out, HP_HDR_BASE_ID, strs.add(&self.base_id));
        put_u32(&mut out, HP_HDR_NFUNCS, self.funcs.len() as u32);
        put_u32(&mut out, HP_HDR_FUNCS_OFF, funcs_off);
        put_u32(&mut out, HP_HDR_NMASKS, nmasks as u32);
        put_u32(&mut out, HP_HDR_MASKS_OFF, masks_off);

        let mut mask_index = 0u32;
        for (i, f) in self.funcs.iter().enumerate() {
            let rec = funcs_off + HP_FUNC_SIZE * i as u32;
            put_u32(&mut out, rec + HP_FUNC_NAME, strs.add(&f.name));
            put_u32(&mut out, rec + HP_FUNC_FILE, strs.add(&f.file));
            put_u32(&mut out, rec + HP_FUNC_NEW, strs.add(&f.new_symbol));
            put_u32(&mut out, rec + HP_FUNC_REDIRECT, f.redirect);
            put_u64(&mut out, rec + HP_FUNC_OLD_SIZE, f.old_size);
            put_u64(&mut out, rec + HP_FUNC_FINGERPRINT, f.fingerprint);
            put_u32(&mut out, rec + HP_FUNC_MASK_FIRST, mask_index);
            put_u32(&mut out, rec + HP_FUNC_MASK_COUNT, f.masks.len() as u32);
            let flags = if f.is_local() { HP_FUNC_F_LOCAL } else { 0 };
            put_u32(&mut out, rec + HP_FUNC_FLAGS, flags);
            for &(off, len) in &f.masks {
                let m = masks_off + HP_MASK_SIZE * mask_index;
                put_u32(&mut out, m + HP_MASK_OFFSET, off);
                put_u32(&mut out, m + HP_MASK_LEN, len);
                mask_index += 1;
            }
        }
        put_u32(&mut out, HP_HDR_STRTAB_OFF, strtab_off);
        put_u32(&mut out, HP_HDR_STRTAB_SIZE, strs.bytes.len() as u32);
        out.extend_from_slice(&strs.bytes);
        out
    }

    /// Parses and bounds-checks a metadata section. Refuses what the
    /// loader's C reader (`loader/csrc/patchobj.c`) refuses, with the same
    /// words: `loader/tests/malformed.rs` runs one table of malformed
    /// sections through both.
    pub fn decode(data: &[u8]) -> Result<Meta, FormatError> {
        let r = Reader { data };
        check_header(data)?;
        let strtab_off = r.u32(HP_HDR_STRTAB_OFF)?;
        let strtab_size = r.u32(HP_HDR_STRTAB_SIZE)?;
        // Non-empty and NUL-terminated: then every offset below its size
        // reads a terminated string.
        let strtab = r
            .slice(strtab_off as u64, strtab_size as u64)
            .ok()
            .filter(|t| t.last() == Some(&0))
            .ok_or_else(|| bad("metadata string table is out of bounds or unterminated"))?;
        let s = |at: u32| read_str(strtab, at);
        let nfuncs = r.u32(HP_HDR_NFUNCS)? as u64;
        let funcs_off = r.u32(HP_HDR_FUNCS_OFF)? as u64;
        let nmasks = r.u32(HP_HDR_NMASKS)? as u64;
        let masks_off = r.u32(HP_HDR_MASKS_OFF)? as u64;
        r.slice(funcs_off, nfuncs * HP_FUNC_SIZE as u64)?;
        r.slice(masks_off, nmasks * HP_MASK_SIZE as u64)?;
        if nfuncs == 0 {
            return Err(bad("patch replaces no functions"));
        }
        let patch_id = s(r.u32(HP_HDR_PATCH_ID)?)?;
        let base_id = s(r.u32(HP_HDR_BASE_ID)?)?;
        let flags = r.u32(HP_HDR_FLAGS)?;
        let targets = decode_targets(&r, flags, &s)?;

        let mut funcs = Vec::new();
        for i in 0..nfuncs {
            let rec = (funcs_off + i * HP_FUNC_SIZE as u64) as u32;
            let name = s(r.u32(rec + HP_FUNC_NAME)?)?;
            let file = s(r.u32(rec + HP_FUNC_FILE)?)?;
            let new_symbol = s(r.u32(rec + HP_FUNC_NEW)?)?;
            let first = r.u32(rec + HP_FUNC_MASK_FIRST)? as u64;
            let count = r.u32(rec + HP_FUNC_MASK_COUNT)? as u64;
            if first + count > nmasks {
                return Err(bad(format!(
                    "function record {i} points past the mask table"
                )));
            }
            if name.is_empty() || new_symbol.is_empty() {
                return Err(bad(format!("function record {i} has an empty name")));
            }
            let mut masks = Vec::new();
            for m in first..first + count {
                let at = (masks_off + m * HP_MASK_SIZE as u64) as u32;
                masks.push((r.u32(at + HP_MASK_OFFSET)?, r.u32(at + HP_MASK_LEN)?));
            }
            funcs.push(FuncRecord {
                name,
                file,
                new_symbol,
                redirect: r.u32(rec + HP_FUNC_REDIRECT)?,
                old_size: r.u64(rec + HP_FUNC_OLD_SIZE)?,
                fingerprint: r.u64(rec + HP_FUNC_FINGERPRINT)?,
                masks,
            });
        }
        Ok(Meta {
            patch_id,
            flags: flags & !(HP_HDR_F_SHA256 | HP_HDR_F_TARGET | HP_HDR_F_TARGETS),
            base_id,
            targets,
            funcs,
        })
    }
}

/// What comes before the tables, the same in every reader: the magic, the
/// version, and the content hash (its flag, and room for it).
fn check_header(data: &[u8]) -> Result<(), FormatError> {
    let r = Reader { data };
    if data.len() < HP_HDR_SIZE as usize || &data[..8] != HP_MAGIC {
        return Err(bad("metadata section has no HOTPATCH header"));
    }
    let version = r.u32(HP_HDR_VERSION)?;
    if version != HP_FORMAT_VERSION {
        return Err(bad(format!(
            "patch format version {version}, this tool reads version {HP_FORMAT_VERSION}"
        )));
    }
    if r.u32(HP_HDR_FLAGS)? & HP_HDR_F_SHA256 == 0 {
        return Err(bad(format!(
            "{}no content hash (the patch was written by an hpbuild that stores none, or \
             changed since)",
            named(data)
        )));
    }
    r.slice(0, HP_HDR_SEALED_SIZE as u64)?;
    Ok(())
}

/// "patch ID: " when the metadata names its patch readably (its string
/// table in bounds and terminated, the id a non-empty UTF-8 string in it),
/// else nothing: the start of an error about the whole patch. The C reader
/// names it by the same rule.
pub(crate) fn named(data: &[u8]) -> String {
    let r = Reader { data };
    let id = (|| {
        let strtab = r.slice(
            r.u32(HP_HDR_STRTAB_OFF)? as u64,
            r.u32(HP_HDR_STRTAB_SIZE)? as u64,
        )?;
        if strtab.last() != Some(&0) {
            return Err(bad(""));
        }
        read_str(strtab, r.u32(HP_HDR_PATCH_ID)?)
    })();
    match id {
        Ok(id) if !id.is_empty() => format!("patch {id}: "),
        _ => String::new(),
    }
}

/// The one metadata section of a patch file: its file offset and bytes.
/// Reads only the ELF header, the section headers
/// and their names, so the content hash can be checked before the rest.
pub(crate) fn find_meta(patch: &[u8]) -> Result<(usize, &[u8]), FormatError> {
    find_section(patch, HP_META_SECTION)?.ok_or_else(|| {
        bad(format!(
            "no {HP_META_SECTION} section: not a hotpatch object"
        ))
    })
}

/// The one section called `name` of a patch file, if there is one: its
/// file offset and bytes (in the file, not NOBITS). More than one is an
/// error. Reads only the ELF header, the section headers and their names.
pub(crate) fn find_section<'a>(
    patch: &'a [u8],
    name: &str,
) -> Result<Option<(usize, &'a [u8])>, FormatError> {
    let not_elf = |e: object::Error| bad(format!("not an ELF object: {e}"));
    let header = object::elf::FileHeader64::<object::Endianness>::parse(patch).map_err(not_elf)?;
    let endian = header.endian().map_err(not_elf)?;
    let sections = header.sections(endian, patch).map_err(not_elf)?;
    let mut found = sections
        .iter()
        .filter(|s| sections.section_name(endian, s) == Ok(name.as_bytes()));
    let Some(section) = found.next() else {
        return Ok(None);
    };
    if found.next().is_some() {
        return Err(bad(format!("patch has more than one {name} section")));
    }
    let Some((off, size)) = section.file_range(endian) else {
        return Err(bad(format!("{name} has no contents")));
    };
    let data = off
        .checked_add(size)
        .and_then(|end| patch.get(off as usize..end as usize))
        .ok_or_else(|| bad(format!("{name} lies outside the file (truncated patch?)")))?;
    Ok(Some((off as usize, data)))
}

/// SHA-256 of `patch` with the 32 bytes at `field` read as zero.
fn hash_with_field_zeroed(patch: &[u8], field: usize) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(&patch[..field]);
    h.update([0u8; HP_SHA256_SIZE as usize]);
    h.update(&patch[field + HP_SHA256_SIZE as usize..]);
    h.finalize().into()
}

/// Finds the content hash field of a patch file: its file offset, and the
/// metadata it is in (header checked).
pub(crate) fn hash_field(patch: &[u8]) -> Result<(usize, &[u8]), FormatError> {
    let (at, meta) = find_meta(patch)?;
    check_header(meta)?;
    Ok((at + HP_HDR_SHA256 as usize, meta))
}

/// Stores the content hash of a finished patch file ([`HP_HDR_SHA256`]) and
/// returns it. The writer's last step; a test that changes a patch on
/// purpose, to reach a check behind the hash, seals it again.
pub fn seal(patch: &mut [u8]) -> Result<[u8; 32], FormatError> {
    let (field, _) = hash_field(patch)?;
    let hash = hash_with_field_zeroed(patch, field);
    patch[field..field + HP_SHA256_SIZE as usize].copy_from_slice(&hash);
    Ok(hash)
}

/// Checks the content hash of a patch file and returns it: refuses a file
/// changed after it was sealed, naming the patch. [`read_patch`] calls it
/// first; the loader's C reader checks the same, in the same words.
pub fn verify_content_hash(patch: &[u8]) -> Result<[u8; 32], FormatError> {
    let (field, meta) = hash_field(patch)?;
    let stored: [u8; 32] = patch[field..field + HP_SHA256_SIZE as usize]
        .try_into()
        .unwrap();
    if hash_with_field_zeroed(patch, field) != stored {
        return Err(bad(format!(
            "{}content hash does not match (the file was changed after hpbuild wrote it)",
            named(meta)
        )));
    }
    Ok(stored)
}

/// The outputs the header names ([`Meta::targets`]), refused with the C
/// reader's words.
fn decode_targets(
    r: &Reader,
    flags: u32,
    s: &dyn Fn(u32) -> Result<String, FormatError>,
) -> Result<Vec<String>, FormatError> {
    match (flags & HP_HDR_F_TARGET != 0, flags & HP_HDR_F_TARGETS != 0) {
        (false, false) => Ok(Vec::new()),
        (true, true) => Err(bad("patch has both a target and a target list")),
        (true, false) => {
            r.slice(0, HP_HDR_TARGETED_SIZE as u64)
                .map_err(|_| bad("metadata is too short for its target field"))?;
            let t = s(r.u32(HP_HDR_TARGET)?)?;
            if t.is_empty() {
                return Err(bad("patch names an empty target library"));
            }
            Ok(vec![t])
        }
        (false, true) => {
            let too_short = |_| bad("metadata is too short for its target list");
            let n = r.u32(HP_HDR_NTARGETS).map_err(too_short)?;
            if !(2..=HP_MAX_TARGETS).contains(&n) {
                return Err(bad(format!(
                    "patch names {n} targets (a list holds 2 to {HP_MAX_TARGETS})"
                )));
            }
            r.slice(0, (HP_HDR_TARGETS + 4 * n) as u64)
                .map_err(too_short)?;
            let mut out: Vec<String> = Vec::new();
            for i in 0..n {
                let t = s(r.u32(HP_HDR_TARGETS + 4 * i)?)?;
                if out.contains(&t) {
                    return Err(bad(format!("patch names target \"{t}\" twice")));
                }
                out.push(t);
            }
            Ok(out)
        }
    }
}

/// Lower-case hex of a hash, as the manifest and messages show it.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn slice(&self, off: u64, len: u64) -> Result<&'a [u8], FormatError> {
        let end = off
            .checked_add(len)
            .ok_or_else(|| bad("metadata offset overflows"))?;
        if end > self.data.len() as u64 {
            return Err(bad(format!(
                "metadata is truncated: needs {end} bytes, section has {}",
                self.data.len()
            )));
        }
        Ok(&self.data[off as usize..end as usize])
    }
    fn u32(&self, at: u32) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(
            self.slice(at as u64, 4)?.try_into().unwrap(),
        ))
    }
    fn u64(&self, at: u32) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(
            self.slice(at as u64, 8)?.try_into().unwrap(),
        ))
    }
}

fn read_str(strtab: &[u8], at: u32) -> Result<String, FormatError> {
    let tail = strtab
        .get(at as usize..)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad(format!("metadata string offset {at} out of range")))?;
    let end = tail
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| bad("metadata string is not terminated"))?;
    String::from_utf8(tail[..end].to_vec()).map_err(|_| bad("metadata string is not UTF-8"))
}

/// Checks that `bytes` is a patch as its writer sealed it (the content
/// hash, first), with a well-formed signature section if it has one (not
/// verified: that needs the process's key, [`crate::TrustedKey::check`]),
/// an x86-64 ELF relocatable object with a valid metadata section whose
/// replacement symbols are defined in executable sections, and returns
/// the metadata. Used by hpctl before anything is sent to a
/// process.
pub fn read_patch(bytes: &[u8]) -> Result<Meta, FormatError> {
    verify_content_hash(bytes)?;
    crate::signature::read_signature(bytes)?;
    let (_, data) = find_meta(bytes)?;
    let file = object::File::parse(bytes).map_err(|e| bad(format!("not an ELF object: {e}")))?;
    if file.format() != object::BinaryFormat::Elf
        || file.architecture() != object::Architecture::X86_64
        || file.kind() != object::ObjectKind::Relocatable
    {
        return Err(bad("not an x86-64 ELF relocatable object"));
    }
    let meta = Meta::decode(data)?;
    // The first defined symbol of each name, as the loader finds it.
    let mut defined = HashMap::new();
    for s in file.symbols() {
        if s.section_index().is_some() && s.kind() != object::SymbolKind::Section {
            if let Ok(name) = s.name_bytes() {
                defined.entry(name).or_insert(s.index());
            }
        }
    }
    for f in &meta.funcs {
        let sym = defined
            .get(f.new_symbol.as_bytes())
            .and_then(|&i| file.symbol_by_index(i).ok());
        let Some(sym) = sym else {
            return Err(bad(format!(
                "function {} names replacement symbol {} that the object does not define",
                f.name, f.new_symbol
            )));
        };
        let section = sym
            .section_index()
            .and_then(|i| file.section_by_index(i).ok());
        let code = section.as_ref().is_some_and(|sec| match sec.flags() {
            object::SectionFlags::Elf { sh_flags } => {
                let want = (object::elf::SHF_ALLOC | object::elf::SHF_EXECINSTR) as u64;
                sh_flags & want == want
            }
            _ => false,
        });
        if !code {
            return Err(bad(format!(
                "replacement symbol {} is not in an executable section",
                f.new_symbol
            )));
        }
        // The redirect jumps to its first byte: it must be in the section.
        if section.is_some_and(|sec| sym.address() >= sec.size()) {
            return Err(bad(format!(
                "replacement symbol {} lies outside its section",
                f.new_symbol
            )));
        }
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Meta {
        Meta {
            flags: HP_HDR_F_CALL_SITES,
            patch_id: "fix-1".into(),
            base_id: "v1".into(),
            targets: Vec::new(),
            funcs: vec![
                FuncRecord {
                    name: "helper".into(),
                    file: "main.c".into(),
                    new_symbol: "helper".into(),
                    redirect: HP_REDIRECT_ENTRY_JUMP,
                    old_size: 22,
                    fingerprint: 0x1234,
                    masks: vec![(2, 4), (11, 4)],
                },
                FuncRecord {
                    name: "main".into(),
                    file: String::new(),
                    new_symbol: "main".into(),
                    redirect: HP_REDIRECT_ENTRY_JUMP,
                    old_size: 76,
                    fingerprint: 7,
                    masks: vec![],
                },
            ],
        }
    }

    #[test]
    fn meta_round_trips() {
        let meta = sample();
        assert_eq!(Meta::decode(&meta.encode()).unwrap(), meta);
        let for_lib = Meta {
            targets: vec!["liblua5.4.so.0".into()],
            ..sample()
        };
        let bytes = for_lib.encode();
        assert_eq!(Meta::decode(&bytes).unwrap(), for_lib);
        let flags = u32::from_le_bytes(bytes[12..16].try_into().unwrap());
        assert_eq!(flags & HP_HDR_F_TARGET, HP_HDR_F_TARGET);
        let for_both = Meta {
            targets: vec!["liblua5.4.so.0".into(), String::new()],
            ..sample()
        };
        let bytes = for_both.encode();
        assert_eq!(Meta::decode(&bytes).unwrap(), for_both);
        let flags = u32::from_le_bytes(bytes[12..16].try_into().unwrap());
        assert_eq!(
            flags & (HP_HDR_F_TARGET | HP_HDR_F_TARGETS),
            HP_HDR_F_TARGETS
        );
    }

    #[test]
    fn truncated_meta_is_an_error_at_every_length() {
        let bytes = sample().encode();
        for len in 0..bytes.len() - 1 {
            assert!(
                Meta::decode(&bytes[..len]).is_err(),
                "length {len} accepted"
            );
        }
    }

    #[test]
    fn no_functions_and_empty_names_are_refused() {
        let refused = |edit: fn(&mut Meta)| {
            let mut m = sample();
            edit(&mut m);
            Meta::decode(&m.encode()).unwrap_err().0
        };
        assert_eq!(refused(|m| m.funcs.clear()), "patch replaces no functions");
        let empty = "function record 1 has an empty name";
        assert_eq!(refused(|m| m.funcs[1].name.clear()), empty);
        assert_eq!(refused(|m| m.funcs[1].new_symbol.clear()), empty);
    }

    #[test]
    fn fingerprint_ignores_masked_bytes_only() {
        let a = [1u8, 2, 3, 4, 5, 6];
        let mut b = a;
        b[2] = 99;
        assert_eq!(fingerprint(&a, &[(2, 2)]), fingerprint(&b, &[(2, 2)]));
        assert_ne!(fingerprint(&a, &[(3, 2)]), fingerprint(&b, &[(3, 2)]));
    }

    /// A small sealed patch object: `.text` holding the replacement code of
    /// both functions of [`sample`], and the metadata.
    fn sealed_patch() -> (Vec<u8>, std::ops::Range<usize>) {
        use object::write;
        let mut out = write::Object::new(
            object::BinaryFormat::Elf,
            object::Architecture::X86_64,
            object::Endianness::Little,
        );
        let text = out.add_section(Vec::new(), b".text".to_vec(), object::SectionKind::Text);
        // lea (%rdi,%rdi,2),%eax; ret -- twice.
        out.set_section_data(
            text,
            vec![0x8d, 0x04, 0x7f, 0xc3, 0x8d, 0x04, 0x7f, 0xc3],
            16,
        );
        for (name, value) in [("helper", 0), ("main", 4)] {
            out.add_symbol(write::Symbol {
                name: name.as_bytes().to_vec(),
                value,
                size: 4,
                kind: object::SymbolKind::Text,
                scope: object::SymbolScope::Linkage,
                weak: false,
                section: write::SymbolSection::Section(text),
                flags: object::SymbolFlags::None,
            });
        }
        let meta = out.add_section(
            Vec::new(),
            HP_META_SECTION.as_bytes().to_vec(),
            object::SectionKind::Metadata,
        );
        out.set_section_data(meta, sample().encode(), 8);
        let mut bytes = out.write().unwrap();
        seal(&mut bytes).unwrap();
        let file = object::File::parse(&*bytes).unwrap();
        let (off, size) = file.section_by_name(".text").unwrap().file_range().unwrap();
        (bytes, off as usize..(off + size) as usize)
    }

    #[test]
    fn the_content_hash_is_sha256_of_the_file_with_its_field_zeroed() {
        let (bytes, _) = sealed_patch();
        let file = object::File::parse(&*bytes).unwrap();
        let (meta_off, _) = file
            .section_by_name(HP_META_SECTION)
            .unwrap()
            .file_range()
            .unwrap();
        let field = meta_off as usize + HP_HDR_SHA256 as usize;
        let mut zeroed = bytes.clone();
        zeroed[field..field + 32].fill(0);
        let want: [u8; 32] = Sha256::digest(&zeroed).into();
        assert_eq!(bytes[field..field + 32], want);
        assert_eq!(verify_content_hash(&bytes), Ok(want));
        assert_eq!(read_patch(&bytes).unwrap(), sample());
        assert_eq!(hex(&want[..2]), format!("{:02x}{:02x}", want[0], want[1]));
    }

    #[test]
    fn a_patch_changed_after_sealing_is_refused_naming_it() {
        let (bytes, text) = sealed_patch();
        let mut changed = bytes.clone();
        changed[text.start] ^= 0xff;
        changed[text.start + 1] ^= 0xff;
        let refusal = "patch fix-1: content hash does not match (the file was changed after \
                       hpbuild wrote it)";
        assert_eq!(read_patch(&changed).unwrap_err().0, refusal);
        assert_eq!(verify_content_hash(&changed).unwrap_err().0, refusal);
        // The hash is what refuses it: sealed again, the same bytes read.
        seal(&mut changed).unwrap();
        assert_eq!(read_patch(&changed).unwrap(), sample());
        // Any single changed byte is refused (or, where the change breaks
        // what locates the hash, refused for that).
        for at in 0..bytes.len() {
            let mut b = bytes.clone();
            b[at] ^= 0x01;
            assert!(read_patch(&b).is_err(), "byte {at} changed and accepted");
        }
    }

    #[test]
    fn a_patch_without_a_content_hash_is_refused() {
        let (bytes, _) = sealed_patch();
        let file = object::File::parse(&*bytes).unwrap();
        let (meta_off, _) = file
            .section_by_name(HP_META_SECTION)
            .unwrap()
            .file_range()
            .unwrap();
        let flags = meta_off as usize + HP_HDR_FLAGS as usize;
        let mut old = bytes.clone();
        old[flags] &= !(HP_HDR_F_SHA256 as u8);
        let refusal = "patch fix-1: no content hash (the patch was written by an hpbuild that \
                       stores none, or changed since)";
        assert_eq!(read_patch(&old).unwrap_err().0, refusal);
        assert_eq!(seal(&mut old).unwrap_err().0, refusal);
    }

    #[test]
    fn the_hash_flag_is_the_layouts_not_the_builders() {
        let bytes = sample().encode();
        let flags = u32::from_le_bytes(bytes[HP_HDR_FLAGS as usize..][..4].try_into().unwrap());
        assert_eq!(flags, HP_HDR_F_CALL_SITES | HP_HDR_F_SHA256);
        assert_eq!(Meta::decode(&bytes).unwrap().flags, HP_HDR_F_CALL_SITES);
        assert!(bytes[HP_HDR_SHA256 as usize..HP_HDR_SEALED_SIZE as usize]
            .iter()
            .all(|&b| b == 0));
    }

    #[test]
    fn local_names_split_at_the_last_separator() {
        let n = local_symbol_name("dir::x.c", "calls.0");
        assert_eq!(split_symbol_name(&n), (Some("dir::x.c"), "calls.0"));
        assert_eq!(split_symbol_name("printf"), (None, "printf"));
    }
}
