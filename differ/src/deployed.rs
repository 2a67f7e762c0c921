//! The base check against the code the deployed build really has.
//!
//! The differ compares objects compiled with `-ffunction-sections`, but the
//! running program was most likely compiled without it: all of a unit's
//! functions then share one `.text`, and the assembler resolves what it can
//! inside that section itself. A tail call to a static function defined a
//! few bytes before becomes `jmp rel8` (2 bytes, no relocation) instead of
//! `jmp rel32` plus a relocation (5 bytes); any other relaxation, and the
//! alignment padding after it, moves the function's size and bytes too. The
//! loader compares the running function with the size and masked
//! fingerprint of each replacement, so these must be taken from a compile
//! of the original unit with exactly the project's flags (the *deployed
//! shape*): the function's symbol there gives its size, its bytes, and the
//! relocations inside it give the masks.
//!
//! A function that cannot be found unambiguously in that object keeps the
//! values of the sectioned compile, and a note says so (`--explain`).

use crate::elf::{self, Object, SymKind};
use crate::{DiffError, Replacement, UnitDiff};

/// Where a replacement's base check came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// Taken from the deployed shape, the same code as the sectioned compile
    /// but for fields one of them leaves to the linker (a call the assembler
    /// resolved within one `.text`).
    Same,
    /// Taken from the deployed shape, which differs from the sectioned
    /// values (old size in the sectioned compile).
    Differs(u64),
    /// Not found unambiguously: the sectioned values stay.
    Kept,
}

/// Replaces the size, masks and fingerprint of every replacement in `diff`
/// (made from `original`, the sectioned compile) with those of the same
/// function in `deployed` (the original unit compiled with the project's
/// own flags, no added sections), and adds a note for each function whose
/// deployed code differs from the sectioned compile or that the deployed
/// object does not hold unambiguously.
pub fn use_deployed_shape(
    diff: &mut UnitDiff,
    original: &[u8],
    deployed: &[u8],
) -> Result<(), DiffError> {
    let sectioned = elf::parse(original, "original")?;
    let obj = elf::parse(deployed, "deployed-shape")?;
    for r in &mut diff.replacements {
        let before = code_of(&sectioned, &r.name, r.local);
        let note = match rebase(r, &obj, before) {
            Found::Same => continue,
            Found::Differs(sectioned) if sectioned != r.old_size => format!(
                "{}: the deployed build has it in {} bytes, the -ffunction-sections compile in \
                 {sectioned} (the assembler relaxes jumps and padding within one .text); the \
                 patch checks the deployed bytes",
                r.name, r.old_size
            ),
            Found::Differs(_) => format!(
                "{}: the deployed build encodes it differently from the -ffunction-sections \
                 compile (same size, other bytes); the patch checks the deployed bytes",
                r.name
            ),
            Found::Kept => format!(
                "{}: not found unambiguously in the compile without -ffunction-sections; the \
                 patch checks the -ffunction-sections bytes, which the deployed build may not \
                 have (the loader then refuses it)",
                r.name
            ),
        };
        diff.notes.push(note);
    }
    Ok(())
}

/// The one function named `name` with that binding in `obj`, defined in
/// executable code: (section, start, end).
fn function(obj: &Object, name: &str, local: bool) -> Option<(usize, u64, u64)> {
    let mut candidates = obj
        .symbols
        .iter()
        .filter(|s| s.kind == SymKind::Func && s.name == name && s.global != local && !s.external);
    let (Some(sym), None) = (candidates.next(), candidates.next()) else {
        return None;
    };
    let sec = sym.section.filter(|&s| obj.sections[s].is_exec())?;
    let end = sym.value.checked_add(sym.size)?;
    (sym.size != 0 && end <= obj.sections[sec].size).then_some((sec, sym.value, end))
}

/// A function's bytes and its masks.
type Code = (Vec<u8>, Vec<(u32, u32)>);

fn code_of(obj: &Object, name: &str, local: bool) -> Option<Code> {
    let (sec, start, end) = function(obj, name, local)?;
    Some((
        obj.sections[sec].bytes(start, end),
        crate::plan::masks(obj, sec, start, end),
    ))
}

/// Sets `r`'s base check from the function of the same name and binding in
/// `obj`, if there is exactly one, defined in executable code. `sectioned`:
/// the same function's code in the sectioned compile, to tell whether the
/// deployed code really differs.
fn rebase(r: &mut Replacement, obj: &Object, sectioned: Option<Code>) -> Found {
    let Some((code, masks)) = code_of(obj, &r.name, r.local) else {
        return Found::Kept;
    };
    let old_size = r.old_size;
    let same = sectioned.is_some_and(|(old, old_masks)| {
        let both: Vec<(u32, u32)> = masks.iter().chain(&old_masks).copied().collect();
        old.len() == code.len()
            && format::fingerprint(&old, &both) == format::fingerprint(&code, &both)
    });
    r.old_size = code.len() as u64;
    r.fingerprint = format::fingerprint(&code, &masks);
    r.masks = masks;
    if same {
        Found::Same
    } else {
        Found::Differs(old_size)
    }
}
