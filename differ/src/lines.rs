//! Recognises a function whose code differs only in `__LINE__` values.
//!
//! An edit above a function moves it down; `assert()` or a logging macro in
//! it then passes a different line number, so its bytes differ although its
//! behaviour does not. Shipping it would patch half the file for nothing.
//!
//! The rule is deliberately narrow (anything else counts as a change):
//! - both bodies have the same size and the same normalized relocations;
//! - the function's line-table rows moved rigidly: same number of rows, and
//!   every new line is the old one plus one common `delta != 0`;
//! - every differing byte lies in a 4-byte little-endian immediate whose old
//!   value is a line `L` of one of the function's own rows and whose new
//!   value is `L + delta`.

use crate::dwarf::Debug;
use crate::normalize::Canon;

/// The line delta when `o` and `p` (whole-section canons of the function's
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
    let delta = pl[0] as i64 - ol[0] as i64;
    if delta == 0
        || ol
            .iter()
            .zip(&pl)
            .any(|(&a, &b)| b as i64 - a as i64 != delta)
    {
        return None;
    }
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
        // The differing byte must sit in an immediate holding a line number.
        let start = (i.saturating_sub(3)..=i).find(|&s| {
            s + 4 <= size && {
                let (a, b) = (word(o, s) as i64, word(p, s) as i64);
                b - a == delta && ol.contains(&(a as u64))
            }
        })?;
        i = start + 4;
    }
    Some(delta)
}
