//! Recognises a function whose code differs only in `__LINE__` values.
//!
//! An edit above a function moves it down; `assert()` or a logging macro in
//! it then passes a different line number, so its bytes differ although its
//! behaviour does not. Shipping it would patch half the file for nothing.
//!
//! Code inlined into the function from above the edit (a `static inline`
//! helper) keeps its lines, so its rows do not move while the function's own
//! rows do: SQLite's `SQLITE_CORRUPT_BKPT` callers inline varint readers
//! defined hundreds of lines higher. The rule is otherwise narrow (anything
//! else counts as a change):
//! - both bodies have the same size and the same normalized relocations;
//! - the function's line-table rows pair up in address order (same number,
//!   same file), and each pair moved by 0 or by one common `shift != 0`;
//! - every differing byte lies in a 4-byte little-endian immediate whose old
//!   value `L` and new value `L + shift` are the old and new line of a pair
//!   that moved by `shift` — a line of the function's own moved code.

use crate::dwarf::Debug;
use crate::normalize::Canon;
use crate::LineEdit;

/// The line rows of a whole section `sec` of `size` bytes, in address order.
fn rows(d: &Debug, sec: usize, size: u64) -> Vec<(u64, &str)> {
    let lo = crate::dwarf::encode(sec, 0);
    d.lines_in(lo, lo + size)
}

/// The line shift when `o` and `p` (whole-section canons of the function's
/// section `osec`/`psec`) differ only in shifted line numbers.
pub fn only_line_numbers(
    o: &Canon,
    p: &Canon,
    od: &Debug,
    pd: &Debug,
    osec: usize,
    psec: usize,
) -> Option<i64> {
    if o.size != p.size || o.relocs != p.relocs {
        return None;
    }
    let (ol, pl) = (rows(od, osec, o.size), rows(pd, psec, p.size));
    shift_only(o, p, &ol, &pl)
}

/// For a function the diff edits: the line shift when the edit compiled to
/// no instruction and everything else differs only in shifted line numbers
/// (an `assert()` added under `NDEBUG` above a `__LINE__` user). No row that
/// covers a byte may come from an edited line (removed, in the original;
/// added, in the patched code); the rows of edited lines that cover nothing
/// (a statement still gets a row) are left out before the rows are paired.
pub fn edit_without_code(
    o: &Canon,
    p: &Canon,
    od: &Debug,
    pd: &Debug,
    (osec, psec): (usize, usize),
    edits: &[LineEdit],
) -> Option<i64> {
    if edits.is_empty() || o.size != p.size || o.relocs != p.relocs {
        return None;
    }
    let ol = unedited_rows(od, osec, o.size, edits, |e| &e.removed)?;
    let pl = unedited_rows(pd, psec, p.size, edits, |e| &e.added)?;
    shift_only(o, p, &ol, &pl)
}

/// The rows of a whole section that are not on an edited line (`pick`
/// chooses removed or added lines); `None` when such a row covers code.
fn unedited_rows<'a>(
    d: &'a Debug,
    sec: usize,
    size: u64,
    edits: &[LineEdit],
    pick: fn(&LineEdit) -> &Vec<u64>,
) -> Option<Vec<(u64, &'a str)>> {
    let lo = crate::dwarf::encode(sec, 0);
    let mut kept = Vec::new();
    for r in d.line_rows(lo, lo + size) {
        let edited = edits
            .iter()
            .any(|e| same_file(r.path, &e.file) && pick(e).contains(&r.line));
        match (edited, r.covers) {
            (true, true) => return None,
            (true, false) => {}
            (false, _) => kept.push((r.line, r.file)),
        }
    }
    Some(kept)
}

/// DWARF names a file as the compiler was given it (often absolute); the
/// diff relative to the tree.
fn same_file(dwarf: &str, diff: &str) -> bool {
    let diff = diff.trim_start_matches("./");
    dwarf == diff || dwarf.ends_with(&format!("/{diff}"))
}

/// The common shift of paired rows `ol`/`pl`, when every differing byte of
/// `o`/`p` is a `__LINE__` immediate of a moved row.
fn shift_only(o: &Canon, p: &Canon, ol: &[(u64, &str)], pl: &[(u64, &str)]) -> Option<i64> {
    if ol.is_empty() || ol.len() != pl.len() {
        return None;
    }
    let mut shift = 0;
    for (&(a, af), &(b, bf)) in ol.iter().zip(pl) {
        let d = b as i64 - a as i64;
        if af != bf || (d != 0 && shift != 0 && d != shift) {
            return None; // another file, or a second amount: not a plain move
        }
        if d != 0 {
            shift = d;
        }
    }
    if shift == 0 {
        return None;
    }
    // Old lines of the rows that moved by the shift.
    let moved: Vec<i64> = ol
        .iter()
        .zip(pl)
        .map(|(&(a, _), &(b, _))| (a as i64, b as i64))
        .filter(|&(a, b)| b - a == shift)
        .map(|(a, _)| a)
        .collect();
    let byte = |c: &Canon, i: usize| c.bytes.get(i).copied().unwrap_or(0);
    let word = |c: &Canon, s: usize| {
        u32::from_le_bytes([byte(c, s), byte(c, s + 1), byte(c, s + 2), byte(c, s + 3)])
    };
    let size = o.size as usize;
    let mut i = 0;
    while i < size {
        if byte(o, i) == byte(p, i) {
            i += 1;
            continue;
        }
        // The differing byte must sit in an immediate holding a moved line.
        let start = (i.saturating_sub(3)..=i).find(|&s| {
            s + 4 <= size && {
                let (a, b) = (word(o, s) as i64, word(p, s) as i64);
                b - a == shift && moved.contains(&a)
            }
        })?;
        i = start + 4;
    }
    Some(shift)
}
