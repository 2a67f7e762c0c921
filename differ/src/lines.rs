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
    let range = |sec: usize, size: u64| {
        let lo = crate::dwarf::encode(sec, 0);
        (lo, lo + size)
    };
    let (olo, ohi) = range(osec, o.size);
    let (plo, phi) = range(psec, p.size);
    let (ol, pl) = (od.lines_in(olo, ohi), pd.lines_in(plo, phi));
    if ol.is_empty() || ol.len() != pl.len() {
        return None;
    }
    let mut shift = 0;
    for (&(a, af), &(b, bf)) in ol.iter().zip(&pl) {
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
        .zip(&pl)
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
