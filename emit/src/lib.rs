//! The patch writer: one patch object (format v1, defined in crate
//! `format`) out of what the differ decided to ship. It is used by hpbuild
//! and by the loader's tests, so the loader is tested on the objects hpbuild
//! really produces.
//!
//! Its one design choice: **copy, never regenerate**. Every byte of code,
//! data and unwind information comes from the patched object as the compiler
//! wrote it; what the writer changes is only where things point — the
//! sections the differ chose are copied with their symbols, each relocation
//! is re-pointed as the differ routed it (inside the patch, or to a named
//! symbol of the running program), the kept `.eh_frame` records get new CIE
//! pointers and `pc_begin` relocations (`ehframe.rs`), and `.hotpatch.meta`
//! describes each replaced function. The finished object is sealed with its
//! content hash (`format::seal`), last, so any later change to the file is
//! refused by hpctl and the loader.
//!
//! It never decides what ships or how a symbol resolves (the differ does),
//! never looks at the running program (the loader does), and never panics
//! on a malformed object: that is an [`Error`].

mod ehframe;

use differ::{Route, UnitDiff};
use ehframe::EhFrame;
use format::{FuncRecord, Meta};
use object::write::{self, SectionId, SymbolId, SymbolSection};
use object::{
    Object, ObjectSection, ObjectSymbol, RelocationTarget, SectionIndex, SectionKind, SymbolIndex,
    SymbolKind, SymbolScope,
};
use std::collections::{HashMap, HashSet};
use std::fmt;

/// Why no patch object could be written: one line naming the object,
/// section or symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    fn new(msg: impl Into<String>) -> Self {
        Error(msg.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// `bail!("...")` returns an [`Error`].
macro_rules! bail {
    ($($arg:tt)*) => { return Err(Error::new(format!($($arg)*))) };
}

/// The written patch.
#[derive(Debug, Clone)]
pub struct Patch {
    /// The ELF relocatable object (`OUT.hpo`), sealed with its content hash.
    pub object: Vec<u8>,
    /// Its content hash (`format::seal`), for the manifest.
    pub sha256: [u8; 32],
    /// Facts for the manifest: unwind information the patch lacks.
    pub notes: Vec<String>,
    /// The signing key's fingerprint (`format::key_fingerprint`) when the
    /// patch is signed.
    pub signed_by: Option<String>,
}

/// One translation unit's contribution.
pub struct Unit<'a> {
    /// The patched object the sections are copied from.
    pub patched: &'a [u8],
    pub diff: &'a UnitDiff,
    /// The unit's source path, for notes and errors.
    pub rel: &'a str,
}

/// Writes the patch object for `units` (one per compared translation unit).
pub fn emit(units: &[Unit], patch_id: &str, base_id: &str, flags: u32) -> Result<Patch> {
    emit_for(&[], units, patch_id, base_id, flags)
}

/// [`emit`] for the outputs of the build the units are linked into
/// (`format::Meta::targets`: a shared library by its path, file name or
/// soname, "" the executable; none: the executable).
pub fn emit_for(
    targets: &[String],
    units: &[Unit],
    patch_id: &str,
    base_id: &str,
    flags: u32,
) -> Result<Patch> {
    emit_signed(targets, units, patch_id, base_id, flags, None)
}

/// [`emit_for`], signed with `key` when there is one: the object gets a
/// signature section (`format::HP_SIG_SECTION`) and is signed, then sealed
/// (`format::sign`), as its last step.
pub fn emit_signed(
    targets: &[String],
    units: &[Unit],
    patch_id: &str,
    base_id: &str,
    flags: u32,
    key: Option<&format::SigningKey>,
) -> Result<Patch> {
    let mut out = write::Object::new(
        object::BinaryFormat::Elf,
        object::Architecture::X86_64,
        object::Endianness::Little,
    );
    let mut names = Names::default();
    let mut funcs = Vec::new();
    // One .eh_frame for all units: the loader uses the patch's only section
    // of that name.
    let mut eh = EhFrame::default();
    let mut notes = Vec::new();
    // Every unit's code and symbols first, so a reference from one unit to
    // a global another unit of the patch defines (a new helper, new data)
    // reaches that definition.
    let copied = units
        .iter()
        .map(|unit| copy_unit(&mut out, &mut names, unit))
        .collect::<Result<Vec<_>>>()?;
    for (unit, copy) in units.iter().zip(&copied) {
        funcs.extend(link_unit(
            &mut out, &mut names, &mut eh, &mut notes, unit, copy,
        )?);
    }
    eh.finish(&mut out)?;
    let meta = Meta {
        patch_id: patch_id.into(),
        flags,
        base_id: base_id.into(),
        targets: targets.to_vec(),
        funcs,
    };
    let section = out.add_section(
        Vec::new(),
        format::HP_META_SECTION.as_bytes().to_vec(),
        SectionKind::Metadata,
    );
    out.set_section_data(section, meta.encode(), 8);
    if key.is_some() {
        let name = format::HP_SIG_SECTION.as_bytes().to_vec();
        let sig = out.add_section(Vec::new(), name, SectionKind::Metadata);
        out.set_section_data(sig, format::unsigned_section(), 8);
    }
    let mut object = out
        .write()
        .map_err(|e| Error::new(format!("cannot write the patch object: {e}")))?;
    // The last step: nothing may change the bytes after the hash is taken
    // (signing seals, after the signature).
    let signed_by = match key {
        Some(key) => Some(
            format::sign(&mut object, key)
                .map_err(|e| Error::new(format!("cannot sign the patch object: {e}")))?,
        ),
        None => None,
    };
    let sha256 = match signed_by {
        Some(_) => format::verify_content_hash(&object),
        None => format::seal(&mut object),
    }
    .map_err(|e| Error::new(format!("cannot seal the patch object: {e}")))?;
    Ok(Patch {
        object,
        sha256,
        notes,
        signed_by,
    })
}

/// Defined-symbol names must be unique in the patch (the metadata and the
/// loader find replacement code by name), and undefined references to the
/// same base symbol are shared. `globals`: the global symbols the patch
/// defines, by name, for references between its units.
#[derive(Default)]
struct Names {
    defined: HashSet<String>,
    undefined: HashMap<String, SymbolId>,
    globals: HashMap<String, SymbolId>,
}

impl Names {
    fn unique(&mut self, name: &str) -> String {
        let mut candidate = name.to_string();
        let mut n = 1;
        while !self.defined.insert(candidate.clone()) {
            candidate = format!("{name}.hp{n}");
            n += 1;
        }
        candidate
    }

    /// The undefined symbol naming `name` in the running program. `tls`: the
    /// patched object's symbol is a thread-local, and the reference says so
    /// (STT_TLS), so the loader resolves it as one — or, when the running
    /// executable does not define it (a shared library's thread-local),
    /// refuses it for that reason; other references stay STT_NOTYPE.
    fn base_symbol(&mut self, out: &mut write::Object, name: String, tls: bool) -> SymbolId {
        let id = *self.undefined.entry(name.clone()).or_insert_with(|| {
            out.add_symbol(write::Symbol {
                name: name.into_bytes(),
                value: 0,
                size: 0,
                kind: SymbolKind::Unknown,
                scope: SymbolScope::Unknown,
                weak: false,
                section: SymbolSection::Undefined,
                flags: object::SymbolFlags::None,
            })
        });
        if tls {
            out.symbol_mut(id).kind = SymbolKind::Tls;
        }
        id
    }
}

/// One unit's shipped sections and symbols, copied into the patch.
struct Copied<'a> {
    file: object::File<'a>,
    sections: HashMap<SectionIndex, SectionId>,
    symbols: HashMap<SymbolIndex, SymbolId>,
}

fn copy_unit<'a>(
    out: &mut write::Object,
    names: &mut Names,
    unit: &Unit<'a>,
) -> Result<Copied<'a>> {
    let file = object::File::parse(unit.patched)
        .map_err(|e| Error::new(format!("cannot read patched object: {e}")))?;
    let sections = copy_sections(out, &file, unit.diff)?;
    // The unit's statics follow its STT_FILE, as in any object: a later
    // patch built on top of this one finds a static this one added by
    // (file, name), like the executable's.
    out.add_file_symbol(unit.diff.file.as_bytes().to_vec());
    let symbols = copy_symbols(out, names, &file, &sections)?;
    Ok(Copied {
        file,
        sections,
        symbols,
    })
}

/// The unit's relocations and unwind information, and its records.
fn link_unit(
    out: &mut write::Object,
    names: &mut Names,
    eh: &mut EhFrame,
    notes: &mut Vec<String>,
    unit: &Unit,
    copy: &Copied,
) -> Result<Vec<FuncRecord>> {
    let (file, sections, symbols) = (&copy.file, &copy.sections, &copy.symbols);
    copy_relocations(out, names, file, unit.diff, sections, symbols)?;
    eh.add_object(out, file, unit.rel, sections, notes)?;
    unit.diff
        .replacements
        .iter()
        .map(|r| {
            let new = symbols.get(&SymbolIndex(r.patched_symbol)).ok_or_else(|| {
                Error::new(format!(
                    "internal: replacement code for {} is not in a shipped section",
                    r.name
                ))
            })?;
            Ok(FuncRecord {
                name: r.name.clone(),
                file: if r.local {
                    unit.diff.file.clone()
                } else {
                    String::new()
                },
                new_symbol: String::from_utf8_lossy(&out.symbol(*new).name).into_owned(),
                redirect: format::HP_REDIRECT_ENTRY_JUMP,
                old_size: r.old_size,
                fingerprint: r.fingerprint,
                masks: r.masks.clone(),
            })
        })
        .collect()
}

/// Loader-facing kind of a copied section: code, read-only or writable data.
/// Merge flags are dropped: the loader places sections as they are.
fn shipped_kind(kind: SectionKind) -> SectionKind {
    match kind {
        SectionKind::Text => SectionKind::Text,
        SectionKind::Data | SectionKind::ReadOnlyDataWithRel => SectionKind::Data,
        SectionKind::UninitializedData => SectionKind::UninitializedData,
        _ => SectionKind::ReadOnlyData,
    }
}

fn copy_sections(
    out: &mut write::Object,
    file: &object::File,
    diff: &UnitDiff,
) -> Result<HashMap<SectionIndex, SectionId>> {
    let mut map = HashMap::new();
    for &index in &diff.ship_sections {
        let sec = file
            .section_by_index(SectionIndex(index))
            .map_err(|e| Error::new(format!("internal: shipped section {index}: {e}")))?;
        let name = sec.name().unwrap_or("").as_bytes().to_vec();
        let kind = sec.kind();
        if matches!(kind, SectionKind::Tls | SectionKind::UninitializedTls) {
            bail!(
                "{}: thread-local data cannot be added by a patch yet",
                sec.name().unwrap_or("?")
            );
        }
        let id = out.add_section(Vec::new(), name, shipped_kind(kind));
        let align = sec.align().max(1);
        if kind == SectionKind::UninitializedData {
            out.append_section_bss(id, sec.size(), align);
        } else {
            let data = sec
                .data()
                .map_err(|e| Error::new(format!("cannot read section {index}: {e}")))?;
            out.set_section_data(id, data.to_vec(), align);
        }
        map.insert(SectionIndex(index), id);
    }
    Ok(map)
}

/// Named symbols defined in shipped sections keep their offsets; names are
/// made unique across units.
fn copy_symbols(
    out: &mut write::Object,
    names: &mut Names,
    file: &object::File,
    sections: &HashMap<SectionIndex, SectionId>,
) -> Result<HashMap<SymbolIndex, SymbolId>> {
    let mut map = HashMap::new();
    for sym in file.symbols() {
        let Some(section) = sym.section_index().and_then(|i| sections.get(&i)) else {
            continue;
        };
        if sym.kind() == SymbolKind::Section {
            map.insert(sym.index(), out.section_symbol(*section));
            continue;
        }
        let name = sym.name().unwrap_or("");
        if name.is_empty() {
            continue;
        }
        let scope = if sym.is_global() {
            SymbolScope::Linkage
        } else {
            SymbolScope::Compilation
        };
        let unique = names.unique(name);
        let id = out.add_symbol(write::Symbol {
            name: unique.clone().into_bytes(),
            value: sym.address(),
            size: sym.size(),
            // A defined STT_NOTYPE symbol (GCC's `.LC0` string labels) reads
            // as Unknown; the writer spells STT_NOTYPE as Label.
            kind: match sym.kind() {
                SymbolKind::Unknown => SymbolKind::Label,
                kind => kind,
            },
            scope,
            weak: sym.is_weak(),
            section: SymbolSection::Section(*section),
            flags: object::SymbolFlags::None,
        });
        if sym.is_global() && unique == name {
            names.globals.insert(unique, id);
        }
        map.insert(sym.index(), id);
    }
    Ok(map)
}

fn copy_relocations(
    out: &mut write::Object,
    names: &mut Names,
    file: &object::File,
    diff: &UnitDiff,
    sections: &HashMap<SectionIndex, SectionId>,
    symbols: &HashMap<SymbolIndex, SymbolId>,
) -> Result<()> {
    // In the differ's order, so the same inputs give the same bytes.
    for &index in &diff.ship_sections {
        let (index, id) = (SectionIndex(index), sections[&SectionIndex(index)]);
        let sec = file.section_by_index(index).expect("copied above");
        for (offset, reloc) in sec.relocations() {
            let RelocationTarget::Symbol(target) = reloc.target() else {
                bail!(
                    "internal: relocation at {:#x} in {} has no symbol",
                    offset,
                    sec.name().unwrap_or("?")
                );
            };
            let symbol = match symbols.get(&target) {
                Some(s) => *s,
                None => route_to_base(out, names, file, diff, target)?,
            };
            let r = write::Relocation {
                offset,
                symbol,
                addend: reloc.addend(),
                flags: reloc.flags(),
            };
            out.add_relocation(id, r)
                .map_err(|e| Error::new(format!("cannot copy relocation at {offset:#x}: {e}")))?;
        }
    }
    Ok(())
}

fn route_to_base(
    out: &mut write::Object,
    names: &mut Names,
    file: &object::File,
    diff: &UnitDiff,
    target: SymbolIndex,
) -> Result<SymbolId> {
    // The kind the patched object gives the symbol (a thread-local is
    // STT_TLS, defined or not); the loader needs it for thread-locals only.
    let tls = file
        .symbol_by_index(target)
        .is_ok_and(|s| s.kind() == SymbolKind::Tls);
    let name = match diff.routes.get(&target.0) {
        // Defined by another unit of this patch (a helper the fix adds).
        Some(Route::BaseGlobal(name)) if names.globals.contains_key(name) => {
            return Ok(names.globals[name]);
        }
        Some(Route::BaseGlobal(name)) => name.clone(),
        Some(Route::BaseLocal(name)) => format::local_symbol_name(&diff.file, name),
        other => {
            let sym = file.symbol_by_index(target).ok();
            let shown = sym
                .and_then(|s| s.name().ok().map(str::to_string))
                .unwrap_or_default();
            bail!("internal: symbol {shown} (#{}) has route {other:?} but is not in a shipped section", target.0);
        }
    };
    Ok(names.base_symbol(out, name, tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(dir: &std::path::Path, name: &str, src: &str) -> Vec<u8> {
        std::fs::write(dir.join(format!("{name}.c")), src).unwrap();
        let st = std::process::Command::new("gcc")
            .args(["-O2", "-ffunction-sections", "-fdata-sections", "-c"])
            .arg(format!("{name}.c"))
            .current_dir(dir)
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::read(dir.join(format!("{name}.o"))).unwrap()
    }

    /// The written object is sealed: its content hash is stored, matches,
    /// and is what `Patch::sha256` reports; a changed code byte is refused.
    #[test]
    fn the_patch_is_sealed_last() {
        let dir = tempfile::tempdir().unwrap();
        let src = |k: u32| format!("int scale(int x) {{ return x * {k}; }}\n");
        let original = compile(dir.path(), "a", &src(2));
        let patched = compile(dir.path(), "b", &src(3));
        let diff = differ::compare(&original, &patched).unwrap();
        let unit = Unit {
            patched: &patched,
            diff: &diff,
            rel: "t.c",
        };
        let patch = emit(&[unit], "sealed", "base", 0).unwrap();
        assert_eq!(format::verify_content_hash(&patch.object), Ok(patch.sha256));
        format::read_patch(&patch.object).unwrap();
        let file = object::File::parse(&*patch.object).unwrap();
        let text = file.section_by_name(".text.scale").unwrap();
        let (at, _) = text.file_range().unwrap();
        let mut changed = patch.object.clone();
        changed[at as usize] ^= 0xff;
        let err = format::read_patch(&changed).unwrap_err().0;
        assert!(
            err.starts_with("patch sealed: content hash does not match"),
            "{err}"
        );
    }

    /// Asked to sign, the writer adds the signature section and signs
    /// before it seals: the patch verifies with the key, its content hash
    /// still matches, and without a key there is no section at all.
    #[test]
    fn a_signed_patch_carries_its_signature_and_is_sealed_last() {
        let dir = tempfile::tempdir().unwrap();
        let src = |k: u32| format!("int scale(int x) {{ return x * {k}; }}\n");
        let original = compile(dir.path(), "a", &src(2));
        let patched = compile(dir.path(), "b", &src(3));
        let diff = differ::compare(&original, &patched).unwrap();
        let unit = || Unit {
            patched: &patched,
            diff: &diff,
            rel: "t.c",
        };
        let key = format::SigningKey::from_bytes(&[5; 32]);
        let patch = emit_signed(&[], &[unit()], "signed", "base", 0, Some(&key)).unwrap();
        let fp = format::key_fingerprint(key.verifying_key().as_bytes());
        assert_eq!(patch.signed_by.as_deref(), Some(fp.as_str()));
        assert_eq!(format::verify_content_hash(&patch.object), Ok(patch.sha256));
        format::read_patch(&patch.object).unwrap();
        format::TrustedKey::new(key.verifying_key(), "test")
            .check(&patch.object, "signed")
            .unwrap();

        let plain = emit(&[unit()], "plain", "base", 0).unwrap();
        assert_eq!(plain.signed_by, None);
        assert_eq!(format::read_signature(&plain.object), Ok(None));
    }

    /// References to the running program's thread-locals are STT_TLS, as in
    /// the patched object (the loader refuses a shared library's thread-local
    /// by that kind); other references stay STT_NOTYPE.
    #[test]
    fn undefined_thread_locals_keep_their_kind() {
        let dir = tempfile::tempdir().unwrap();
        let src = |step: u32| {
            format!(
                "extern __thread int counter;\nstatic __thread int calls;\nextern int plain;\n\
                 int bump(void) {{ calls++; counter += {step}; return counter + plain + calls; }}\n"
            )
        };
        let original = compile(dir.path(), "a", &src(1));
        let patched = compile(dir.path(), "b", &src(2));
        let diff = differ::compare(&original, &patched).unwrap();
        let unit = Unit {
            patched: &patched,
            diff: &diff,
            rel: "t.c",
        };
        let patch = emit(&[unit], "tls", "base", 0).unwrap();
        let file = object::File::parse(&*patch.object).unwrap();
        let kinds: HashMap<String, SymbolKind> = file
            .symbols()
            .filter(|s| s.is_undefined())
            .map(|s| (s.name().unwrap().to_string(), s.kind()))
            .collect();
        let calls = kinds
            .keys()
            .find(|k| k.ends_with("calls"))
            .unwrap_or_else(|| panic!("no reference to calls: {kinds:?}"));
        assert_eq!(kinds.get("counter"), Some(&SymbolKind::Tls), "{kinds:?}");
        assert_eq!(kinds[calls], SymbolKind::Tls, "{kinds:?}");
        assert_eq!(kinds.get("plain"), Some(&SymbolKind::Unknown), "{kinds:?}");
    }
}
