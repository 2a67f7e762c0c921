//! The patch's `.eh_frame`: the unwind information (CFI) of the code it
//! ships, so the loader can walk a thread's stack *through* patch code
//! (`hpctl apply|revert --consistent`). Without it, a thread blocked in a call
//! made from patch code cannot be unwound past that code at -O2 (no frame
//! pointers) and a consistent operation can only wait and refuse.
//!
//! From each patched object's `.eh_frame` we keep only the FDEs whose
//! `pc_begin` relocation targets a shipped section, and the CIEs they use.
//! Records are copied byte for byte (their CFA programs do not depend on
//! where they live); what changes is each FDE's CIE pointer (self-relative,
//! so it is recomputed for the new layout) and the `pc_begin` relocation,
//! re-pointed at the copied section. The loader links the section like any
//! other allocated one and builds its own lookup table (there is no
//! `.eh_frame_hdr` in a relocatable object), stopping at a zero-length
//! terminator, which we append. (Why this is not gimli's
//! `write::FrameTable`: see the crate README.)

use crate::{Error, Result};
use object::write::{self, SectionId};
use object::{
    Object, ObjectSection, ObjectSymbol, RelocationFlags, RelocationTarget, SectionIndex,
};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The kept records of one or more objects, ready to be concatenated.
#[derive(Default)]
pub struct EhFrame {
    data: Vec<u8>,
    relocs: Vec<write::Relocation>,
}

/// One record (CIE or FDE) of an input `.eh_frame`, as offsets into it.
#[derive(Debug)]
struct Record {
    start: usize,
    end: usize,
    /// Where the CIE id (0) or, in an FDE, the CIE pointer is.
    id_at: usize,
    /// An FDE's CIE (its `start`); None for a CIE.
    cie: Option<usize>,
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    let b = data.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

/// Splits an `.eh_frame` into records, checking every length and CIE
/// pointer against the section (input from a compiler, but a malformed one
/// must give an error, not a panic).
fn records(data: &[u8]) -> std::result::Result<Vec<Record>, String> {
    let mut out: Vec<Record> = Vec::new();
    let mut cies = HashSet::new();
    let mut at = 0usize;
    while at < data.len() {
        let len = u32_at(data, at).ok_or(format!("truncated length at {at:#x}"))?;
        if len == 0 {
            break; // terminator: nothing after it is read (the loader stops too)
        }
        // 0xffffffff: a 64-bit length follows (DWARF64). The CIE id/pointer
        // stays 4 bytes in .eh_frame either way.
        let (id_at, body_len) = if len == 0xffff_ffff {
            let l = u64_at(data, at + 4).ok_or(format!("truncated extended length at {at:#x}"))?;
            (at + 12, usize::try_from(l).unwrap_or(usize::MAX))
        } else {
            (at + 4, len as usize)
        };
        let end = id_at
            .checked_add(body_len)
            .filter(|&e| e <= data.len() && body_len >= 4)
            .ok_or(format!(
                "record at {at:#x} (length {body_len:#x}) does not fit the section"
            ))?;
        let id = u32_at(data, id_at).expect("body_len >= 4 checked");
        let cie = if id == 0 {
            None
        } else {
            // Self-relative: the CIE starts `id` bytes before this field.
            let c = id_at
                .checked_sub(id as usize)
                .filter(|c| cies.contains(c))
                .ok_or(format!("FDE at {at:#x} points to no CIE (pointer {id:#x})"))?;
            Some(c)
        };
        if cie.is_none() {
            cies.insert(at);
        } else if body_len < 8 {
            // The CIE pointer and at least a 4-byte pc_begin.
            return Err(format!("FDE at {at:#x} is too short"));
        }
        out.push(Record {
            start: at,
            end,
            id_at,
            cie,
        });
        at = end;
    }
    Ok(out)
}

/// The function a code section holds at `value` (for notes), else the
/// section's name.
fn code_name(file: &object::File, section: SectionIndex, value: u64) -> String {
    file.symbols()
        .find(|s| {
            s.section_index() == Some(section)
                && s.address() == value
                && s.kind() == object::SymbolKind::Text
        })
        .and_then(|s| s.name().ok().map(str::to_string))
        .or_else(|| {
            let sec = file.section_by_index(section).ok()?;
            sec.name().ok().map(str::to_string)
        })
        .unwrap_or_else(|| format!("section {}", section.0))
}

impl EhFrame {
    /// Adds the FDEs of `file` (one patched object) that describe code in
    /// `shipped` (its sections copied into `out`), with their CIEs. `file_name`
    /// names the object in errors; notes say what unwind information the
    /// patch lacks.
    pub fn add_object(
        &mut self,
        out: &mut write::Object,
        file: &object::File,
        file_name: &str,
        shipped: &HashMap<SectionIndex, SectionId>,
        notes: &mut Vec<String>,
    ) -> Result<()> {
        let ships_code = shipped.keys().any(|&i| {
            file.section_by_index(i)
                .is_ok_and(|s| s.kind() == object::SectionKind::Text && s.size() > 0)
        });
        let mut any = false;
        for sec in file.sections().filter(|s| s.name() == Ok(".eh_frame")) {
            any = true;
            let bad = |why: String| Error::new(format!("{file_name}: malformed .eh_frame: {why}"));
            let data = sec.data().map_err(|e| bad(e.to_string()))?;
            let recs = records(data).map_err(bad)?;
            // Input relocations by offset: (target section, value of target
            // within it + addend, flags).
            let mut relocs: BTreeMap<usize, (Option<SectionIndex>, i64, RelocationFlags)> =
                BTreeMap::new();
            for (off, r) in sec.relocations() {
                let RelocationTarget::Symbol(si) = r.target() else {
                    return Err(bad(format!("relocation at {off:#x} has no symbol")));
                };
                let sym = file
                    .symbol_by_index(si)
                    .map_err(|e| bad(format!("relocation at {off:#x}: {e}")))?;
                let addend = r.addend().wrapping_add(sym.address() as i64);
                relocs.insert(off as usize, (sym.section_index(), addend, r.flags()));
            }
            let in_range = |r: &Record| {
                relocs
                    .range(r.start..r.end)
                    .map(|(&o, _)| o)
                    .collect::<Vec<_>>()
            };
            let by_start: HashMap<usize, &Record> = recs.iter().map(|r| (r.start, r)).collect();
            let mut cie_new: HashMap<usize, usize> = HashMap::new();
            for fde in recs.iter().filter(|r| r.cie.is_some()) {
                let pc_at = fde.id_at + 4;
                // Keep only FDEs of shipped code; others (unchanged functions)
                // describe code the patch does not carry.
                let Some(&(Some(target), addend, flags)) = relocs.get(&pc_at) else {
                    continue;
                };
                let Some(&out_sec) = shipped.get(&target) else {
                    continue;
                };
                // records() checked that the CIE pointer leads to a CIE.
                let cie = by_start[&fde.cie.expect("an FDE")];

                // A relocation anywhere else is an LSDA (in the FDE) or a
                // personality routine (in the CIE): exception handling, which
                // C code does not use (-fexceptions). Carrying it would mean
                // routing those symbols too; the walk only needs the CFA
                // rules, so we leave that function out, with a note.
                if in_range(fde) != [pc_at] || !in_range(cie).is_empty() {
                    let func = code_name(file, target, addend.max(0) as u64);
                    notes.push(format!(
                        "{file_name}: {func} ships without unwind information (its .eh_frame \
                         entry has exception-handling data); `--consistent` cannot walk a \
                         stack through it"
                    ));
                    continue;
                }
                let new_cie = match cie_new.get(&cie.start) {
                    Some(&c) => c,
                    None => {
                        let c = self.data.len();
                        self.data.extend_from_slice(&data[cie.start..cie.end]);
                        cie_new.insert(cie.start, c);
                        c
                    }
                };
                let new_fde = self.data.len();
                self.data.extend_from_slice(&data[fde.start..fde.end]);
                // The CIE pointer: distance from the pointer field back to
                // the CIE, in the new layout (the CIE always precedes it).
                let field = new_fde + (fde.id_at - fde.start);
                let ptr = u32::try_from(field - new_cie)
                    .map_err(|_| Error::new(format!("{file_name}: .eh_frame too large")))?;
                self.data[field..field + 4].copy_from_slice(&ptr.to_le_bytes());
                self.relocs.push(write::Relocation {
                    offset: (new_fde + (pc_at - fde.start)) as u64,
                    symbol: out.section_symbol(out_sec),
                    addend,
                    flags,
                });
            }
        }
        if !any && ships_code {
            notes.push(format!(
                "{file_name}: the object has no .eh_frame (built with \
                 -fno-asynchronous-unwind-tables?): the patch ships no unwind information; \
                 `--consistent` cannot walk a stack through its code unless it keeps frame \
                 pointers"
            ));
        }
        Ok(())
    }

    /// Adds the `.eh_frame` section to `out`, if any FDE was kept.
    pub fn finish(mut self, out: &mut write::Object) -> Result<()> {
        if self.relocs.is_empty() {
            return Ok(());
        }
        self.data.extend_from_slice(&[0; 4]); // zero-length terminator
        let id = out.add_section(
            Vec::new(),
            b".eh_frame".to_vec(),
            object::SectionKind::ReadOnlyData,
        );
        out.set_section_data(id, self.data, 8);
        for r in self.relocs {
            let offset = r.offset;
            out.add_relocation(id, r).map_err(|e| {
                Error::new(format!(
                    "cannot write .eh_frame relocation at {offset:#x}: {e}"
                ))
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::{ObjectSection, ObjectSymbol, SectionKind, SymbolKind};

    /// `src` compiled like hpbuild compiles a unit (gcc -O2, one section
    /// per function).
    fn compile(src: &str, extra: &[&str]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.c"), src).unwrap();
        let st = std::process::Command::new("gcc")
            .args(["-O2", "-ffunction-sections", "-fdata-sections", "-c", "t.c"])
            .args(extra)
            .current_dir(dir.path())
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::read(dir.path().join("t.o")).unwrap()
    }

    /// A patch-like object shipping the code sections of `funcs`, with the
    /// .eh_frame built from `obj`; returns it and the notes.
    fn ship(obj: &[u8], funcs: &[&str]) -> (Vec<u8>, Vec<String>) {
        let file = object::File::parse(obj).unwrap();
        let mut out = write::Object::new(
            object::BinaryFormat::Elf,
            object::Architecture::X86_64,
            object::Endianness::Little,
        );
        let mut shipped = HashMap::new();
        for f in funcs {
            let sec = file.section_by_name(&format!(".text.{f}")).unwrap();
            let id = out.add_section(Vec::new(), sec.name().unwrap().into(), SectionKind::Text);
            out.set_section_data(id, sec.data().unwrap().to_vec(), 16);
            shipped.insert(sec.index(), id);
        }
        let (mut eh, mut notes) = (EhFrame::default(), Vec::new());
        eh.add_object(&mut out, &file, "t.c", &shipped, &mut notes)
            .unwrap();
        eh.finish(&mut out).unwrap();
        (out.write().unwrap(), notes)
    }

    #[test]
    fn keeps_only_the_shipped_functions_fde() {
        // Two functions, each with an FDE after the shared CIE; only the
        // second ships, so its CIE pointer must change (0x30 → 0x1c).
        let obj = compile(
            "int one(int x) { return x * 3 + 1; }\nint two(int x) { return x * 5 - 2; }\n",
            &[],
        );
        let (patch, notes) = ship(&obj, &["two"]);
        assert!(notes.is_empty(), "{notes:?}");
        let file = object::File::parse(&*patch).unwrap();
        let eh = file.section_by_name(".eh_frame").unwrap();
        let data = eh.data().unwrap();
        let recs = records(data).unwrap();
        assert_eq!(recs.len(), 2, "one CIE and one FDE");
        let (cie, fde) = (&recs[0], &recs[1]);
        assert_eq!((cie.cie, fde.cie), (None, Some(cie.start)));
        assert_eq!(
            u32_at(data, fde.id_at).unwrap() as usize,
            fde.id_at - cie.start,
            "CIE pointer"
        );
        assert_eq!(&data[fde.end..], &[0; 4], "zero terminator at the end");
        // pc_begin: R_X86_64_PC32 against the shipped section.
        let relocs: Vec<_> = eh.relocations().collect();
        assert_eq!(relocs.len(), 1);
        let (off, r) = &relocs[0];
        assert_eq!(*off as usize, fde.id_at + 4);
        assert_eq!(
            r.flags(),
            RelocationFlags::Elf {
                r_type: object::elf::R_X86_64_PC32
            }
        );
        let RelocationTarget::Symbol(si) = r.target() else {
            panic!()
        };
        let sym = file.symbol_by_index(si).unwrap();
        assert_eq!(sym.kind(), SymbolKind::Section);
        let target = file.section_by_index(sym.section_index().unwrap()).unwrap();
        assert_eq!(target.name().unwrap(), ".text.two");
        assert_eq!(r.addend(), 0);

        // binutils reads it the same way (skipped where there is no readelf).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fix.hpo");
        std::fs::write(&path, &patch).unwrap();
        if let Ok(out) = std::process::Command::new("readelf")
            .arg("--debug-dump=frames")
            .arg(&path)
            .output()
        {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{text}");
            assert_eq!(text.matches(" CIE").count(), 1, "{text}");
            assert_eq!(text.matches(" FDE cie=00000000").count(), 1, "{text}");
            assert!(text.contains("ZERO terminator"), "{text}");
        }
    }

    #[test]
    fn nothing_shipped_no_section() {
        let obj = compile("int one(int x) { return x + 1; }\n", &[]);
        let (patch, _) = ship(&obj, &[]);
        assert!(object::File::parse(&*patch)
            .unwrap()
            .section_by_name(".eh_frame")
            .is_none());
    }

    #[test]
    fn exception_data_is_left_out_with_a_note() {
        // -fexceptions + cleanup: a personality in the CIE, an LSDA in b's FDE.
        let obj = compile(
            "void done(int *p); void ext(void);\n\
             int a(int x) { return x + 1; }\n\
             int b(int x) { int v __attribute__((cleanup(done))) = x; ext(); return v * 2; }\n",
            &["-fexceptions"],
        );
        let (patch, notes) = ship(&obj, &["a", "b"]);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains("t.c: b ships without unwind information"),
            "{notes:?}"
        );
        let file = object::File::parse(&*patch).unwrap();
        let eh = file.section_by_name(".eh_frame").unwrap();
        assert_eq!(
            records(eh.data().unwrap()).unwrap().len(),
            2,
            "a's CIE and FDE"
        );
    }

    /// Each FDE of `obj`'s .eh_frame as gimli reads it, keyed by the name
    /// of the section its `pc_begin` relocation targets: the CIE's factors,
    /// return register and initial program, the FDE's length and program.
    fn programs(obj: &[u8]) -> BTreeMap<String, String> {
        use gimli::UnwindSection;
        let file = object::File::parse(obj).unwrap();
        let sec = file.section_by_name(".eh_frame").unwrap();
        let target: HashMap<u64, String> = sec
            .relocations()
            .map(|(off, r)| {
                let RelocationTarget::Symbol(si) = r.target() else {
                    panic!()
                };
                let s = file.symbol_by_index(si).unwrap().section_index().unwrap();
                (
                    off,
                    file.section_by_index(s).unwrap().name().unwrap().into(),
                )
            })
            .collect();
        let data = sec.data().unwrap();
        let mut eh = gimli::EhFrame::new(data, gimli::LittleEndian);
        eh.set_address_size(8);
        // pc_begin is pc-relative and 0 before relocation: with the section
        // at 0 it reads as the offset of its own field.
        let bases = gimli::BaseAddresses::default().set_eh_frame(0);
        let mut out = BTreeMap::new();
        let mut entries = eh.entries(&bases);
        while let Some(entry) = entries.next().unwrap() {
            let gimli::CieOrFde::Fde(partial) = entry else {
                continue;
            };
            let fde = partial.parse(gimli::EhFrame::cie_from_offset).unwrap();
            let cie = fde.cie();
            let mut text = format!(
                "caf {} daf {} ra {:?} len {}:",
                cie.code_alignment_factor(),
                cie.data_alignment_factor(),
                cie.return_address_register(),
                fde.len()
            );
            let mut ins = cie.instructions(&eh, &bases);
            while let Some(i) = ins.next().unwrap() {
                text += &format!(" {i:?}");
            }
            text += " |";
            let mut ins = fde.instructions(&eh, &bases);
            while let Some(i) = ins.next().unwrap() {
                text += &format!(" {i:?}");
            }
            out.insert(target[&fde.initial_address()].clone(), text);
        }
        out
    }

    #[test]
    fn kept_records_read_back_the_same_through_gimli() {
        // Different CFA programs: calls, a big frame, a leaf.
        let obj = compile(
            "long g(long);\n\
             long one(long x) { return g(x) + g(x + 1); }\n\
             long two(long x) { return x * 7; }\n\
             long three(long x) { volatile long a[300]; for (int i = 0; i < 300; i++) \
             a[i] = g(i + x); return a[x & 255]; }\n",
            &[],
        );
        let (patch, notes) = ship(&obj, &["one", "three"]);
        assert!(notes.is_empty(), "{notes:?}");
        let mut want = programs(&obj);
        want.remove(".text.two");
        assert_eq!(want.len(), 2, "{want:?}");
        assert!(
            want.values().all(|p| p.contains("DefCfaOffset")),
            "{want:?}"
        );
        assert_eq!(programs(&patch), want);
    }

    #[test]
    fn no_eh_frame_is_a_note() {
        let obj = compile(
            "int one(int x) { return x + 1; }\n",
            &["-fno-asynchronous-unwind-tables"],
        );
        let (patch, notes) = ship(&obj, &["one"]);
        assert!(notes[0].contains("no .eh_frame"), "{notes:?}");
        assert!(object::File::parse(&*patch)
            .unwrap()
            .section_by_name(".eh_frame")
            .is_none());
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        let cie = |len: u32| {
            let mut v = len.to_le_bytes().to_vec();
            v.extend_from_slice(&[0; 4]); // CIE id
            v.extend_from_slice(&[1, b'z', b'R', 0, 1, 0x78, 16, 1, 0x1b, 0, 0, 0]);
            v
        };
        assert_eq!(records(&cie(16)).unwrap().len(), 1);
        assert!(records(&cie(17)).unwrap_err().contains("does not fit"));
        assert!(records(&cie(2)).unwrap_err().contains("does not fit"));
        assert!(records(&[1, 0]).unwrap_err().contains("truncated length"));
        let mut ext = vec![0xff; 4];
        ext.extend_from_slice(&16u64.to_le_bytes());
        ext.extend_from_slice(&cie(16)[4..]);
        assert_eq!(records(&ext).unwrap().len(), 1, "extended length");
        assert!(records(&[0xff; 8]).unwrap_err().contains("extended length"));
        let mut huge = vec![0xff; 4];
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(records(&huge).is_err());
        // An FDE whose CIE pointer leads nowhere (or before the section).
        let mut fde = cie(16);
        fde.extend_from_slice(&12u32.to_le_bytes());
        fde.extend_from_slice(&7u32.to_le_bytes());
        fde.extend_from_slice(&[0; 8]);
        assert!(records(&fde).unwrap_err().contains("points to no CIE"));
        assert!(
            records(&[&cie(16)[..], &4u32.to_le_bytes(), &24u32.to_le_bytes()].concat())
                .unwrap_err()
                .contains("too short")
        );
        fde[24..28].copy_from_slice(&0x1000u32.to_le_bytes());
        assert!(records(&fde).unwrap_err().contains("points to no CIE"));
        fde[24..28].copy_from_slice(&24u32.to_le_bytes());
        assert_eq!(records(&fde).unwrap().len(), 2);
        // A terminator ends the section early.
        let mut t = cie(16);
        t.extend_from_slice(&[0; 4]);
        t.extend_from_slice(&[0xde, 0xad]);
        assert_eq!(records(&t).unwrap().len(), 1);
    }
}
