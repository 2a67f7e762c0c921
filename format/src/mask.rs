//! Which bytes of a function's compiled code the static linker may still
//! change: the relocated field itself and, for instructions the linker
//! relaxes, the opcode bytes around it. A fingerprint taken on an object file
//! (`hpbuild`) reads these bytes as zero, so it matches the linked program
//! (the loader reads the same ranges as zero).
//!
//! This is the only place the rule lives: the differ asks it for every
//! function it ships, and the loader tests build their patches through the
//! same writer.

use object::elf;

/// Width in bytes of the field a relocation type writes (0: writes nothing).
pub fn reloc_width(r_type: u32) -> u64 {
    match r_type {
        elf::R_X86_64_64
        | elf::R_X86_64_PC64
        | elf::R_X86_64_GOTOFF64
        | elf::R_X86_64_GOTPC64
        | elf::R_X86_64_GOT64
        | elf::R_X86_64_GOTPCREL64
        | elf::R_X86_64_GOTPLT64
        | elf::R_X86_64_PLTOFF64
        | elf::R_X86_64_DTPOFF64
        | elf::R_X86_64_TPOFF64
        | elf::R_X86_64_DTPMOD64
        | elf::R_X86_64_SIZE64 => 8,
        elf::R_X86_64_16 | elf::R_X86_64_PC16 => 2,
        elf::R_X86_64_8 | elf::R_X86_64_PC8 => 1,
        elf::R_X86_64_NONE | elf::R_X86_64_TLSDESC_CALL => 0,
        _ => 4,
    }
}

/// The byte range `(start, len)` a relocation at `field` (offset of its
/// field in the function) makes unknowable until link time, or `None` for
/// relocations that write nothing.
///
/// Instructions the linker may rewrite around the field: GOT loads become
/// `lea`/`mov $imm` (REX, opcode and ModRM change), initial-exec TLS loads
/// become local-exec, and the general/local-dynamic TLS call sequences are
/// replaced whole.
pub fn reloc_mask(r_type: u32, field: u64) -> Option<(u64, u64)> {
    let width = reloc_width(r_type);
    if width == 0 {
        return None;
    }
    let (before, len) = match r_type {
        elf::R_X86_64_GOTPCRELX | elf::R_X86_64_REX_GOTPCRELX | elf::R_X86_64_GOTTPOFF => {
            (3, width + 3)
        }
        elf::R_X86_64_TLSGD => (4, 16),
        elf::R_X86_64_TLSLD => (3, 12),
        _ => (0, width),
    };
    let from = field.saturating_sub(before);
    let to = field + (len - before);
    Some((from, to - from))
}

/// The masks of one function: `relocs` are `(offset in the function,
/// r_type)` pairs; the result is sorted, merged `(offset, len)` ranges in
/// the form the format stores.
pub fn function_masks(relocs: impl IntoIterator<Item = (u64, u32)>) -> Vec<(u32, u32)> {
    let mut ranges: Vec<(u64, u64)> = relocs
        .into_iter()
        .filter_map(|(field, r_type)| reloc_mask(r_type, field))
        .collect();
    ranges.sort();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (s, l) in ranges {
        match merged.last_mut() {
            Some((ms, ml)) if s <= *ms + *ml => *ml = (*ml).max(s + l - *ms),
            _ => merged.push((s, l)),
        }
    }
    merged
        .into_iter()
        .map(|(s, l)| {
            (
                u32::try_from(s).unwrap_or(u32::MAX),
                u32::try_from(l).unwrap_or(u32::MAX),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_fields_mask_only_the_field() {
        assert_eq!(reloc_mask(elf::R_X86_64_PLT32, 10), Some((10, 4)));
        assert_eq!(reloc_mask(elf::R_X86_64_64, 10), Some((10, 8)));
        assert_eq!(reloc_mask(elf::R_X86_64_NONE, 10), None);
    }

    #[test]
    fn relaxable_loads_mask_their_opcode_bytes() {
        assert_eq!(reloc_mask(elf::R_X86_64_REX_GOTPCRELX, 3), Some((0, 7)));
        assert_eq!(reloc_mask(elf::R_X86_64_GOTTPOFF, 1), Some((0, 5)));
        assert_eq!(reloc_mask(elf::R_X86_64_TLSGD, 4), Some((0, 16)));
    }

    #[test]
    fn overlapping_ranges_merge() {
        let m = function_masks([(3, elf::R_X86_64_REX_GOTPCRELX), (7, elf::R_X86_64_PC32)]);
        assert_eq!(m, vec![(0, 11)]);
    }
}
