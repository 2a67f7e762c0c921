//! The GNU build-id of an executable: what `--exe` matches processes by
//! (a rebuilt binary at the same path has another one) and what the patch
//! directory is keyed by (`persist.rs`; the loader reads the same note from
//! its own program headers, `csrc/persist.c`).
//!
//! Only the ELF header, the program headers and the `PT_NOTE` segments are
//! read (a few pages, with `pread`), so checking a hundred processes of a
//! large binary does not read it a hundred times.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

const NT_GNU_BUILD_ID: u32 = 3;
const PT_NOTE: u32 = 4;
/// Notes larger than this are not a build-id section (it is 20–64 bytes).
const MAX_NOTE_SEGMENT: u64 = 1 << 16;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn read_at(f: &File, off: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0; len];
    f.read_exact_at(&mut buf, off)?;
    Ok(buf)
}

/// The build-id in one `PT_NOTE` segment's notes, if there is one.
fn in_notes(notes: &[u8]) -> Option<Vec<u8>> {
    let mut at = 0usize;
    while at + 12 <= notes.len() {
        let namesz = u32_at(notes, at) as usize;
        let descsz = u32_at(notes, at + 4) as usize;
        let kind = u32_at(notes, at + 8);
        let name_at = at + 12;
        let desc_at = name_at.checked_add(namesz.checked_add(3)? & !3)?;
        let end = desc_at.checked_add(descsz.checked_add(3)? & !3)?;
        if desc_at.checked_add(descsz)? > notes.len() {
            return None;
        }
        if kind == NT_GNU_BUILD_ID && notes.get(name_at..name_at + namesz)? == b"GNU\0" {
            return Some(notes[desc_at..desc_at + descsz].to_vec());
        }
        at = end;
    }
    None
}

/// The build-id of the x86-64 ELF file at `path`, as lower-case hex; an
/// error names the file and what is missing.
pub fn of_file(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let f = File::open(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let eh = read_at(&f, 0, 64).map_err(|_| format!("{shown} is not an ELF executable"))?;
    if &eh[..4] != b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
        return Err(format!(
            "{shown} is not a 64-bit little-endian ELF executable"
        ));
    }
    let (phoff, phentsize, phnum) = (u64_at(&eh, 32), u16_at(&eh, 54), u16_at(&eh, 56));
    if phentsize < 56 {
        return Err(format!("{shown}: malformed program headers"));
    }
    let table = read_at(&f, phoff, phentsize as usize * phnum as usize)
        .map_err(|_| format!("{shown}: truncated program headers"))?;
    for ph in table.chunks(phentsize as usize) {
        let (kind, off, size) = (u32_at(ph, 0), u64_at(ph, 8), u64_at(ph, 32));
        if kind != PT_NOTE || size > MAX_NOTE_SEGMENT {
            continue;
        }
        let notes = read_at(&f, off, size as usize)
            .map_err(|_| format!("{shown}: truncated note segment"))?;
        if let Some(id) = in_notes(&notes) {
            return Ok(format::hex(&id));
        }
    }
    Err(format!(
        "{shown} has no GNU build-id note; link it with -Wl,--build-id (hpctl tells builds apart by it)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(kind: u32, name: &[u8], desc: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend((name.len() as u32).to_le_bytes());
        v.extend((desc.len() as u32).to_le_bytes());
        v.extend(kind.to_le_bytes());
        v.extend(name);
        v.resize(v.len().next_multiple_of(4), 0);
        v.extend(desc);
        v.resize(v.len().next_multiple_of(4), 0);
        v
    }

    #[test]
    fn finds_the_build_id_after_other_notes() {
        let mut notes = note(1, b"GNU\0", &[0; 16]); // NT_GNU_ABI_TAG
        notes.extend(note(NT_GNU_BUILD_ID, b"GNU\0", &[0xab, 0xcd, 0x01]));
        assert_eq!(in_notes(&notes), Some(vec![0xab, 0xcd, 0x01]));
    }

    #[test]
    fn a_truncated_or_foreign_note_is_no_build_id() {
        let full = note(NT_GNU_BUILD_ID, b"GNU\0", &[1; 20]);
        assert_eq!(in_notes(&full[..full.len() - 4]), None);
        assert_eq!(in_notes(&note(NT_GNU_BUILD_ID, b"XYZ\0", &[1; 20])), None);
        let mut huge = full.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(in_notes(&huge), None);
    }

    #[test]
    fn reads_the_build_id_of_this_test_binary() {
        let exe = std::env::current_exe().unwrap();
        let id = of_file(&exe).expect("rustc links with a build-id");
        assert!(id.len() >= 16 && id.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
