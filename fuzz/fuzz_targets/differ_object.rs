//! The differ's ELF and DWARF readers: one input, read as the original and
//! as the patched object of a unit, compared with itself.
//!
//! `differ::compare` promises never to panic on malformed input (anything
//! that is not a well-formed ELF64 x86-64 relocatable object is an error).
//! Reading the same bytes twice takes every path of `elf::parse` and
//! `dwarf::load` and then correlates, compares and plans a unit whose two
//! sides agree: no patch may come of it. Either nothing ships, or the
//! differ refuses (hpbuild then writes no patch) — the answer for a
//! malformed object whose odd symbols it cannot pair, e.g. a symbol in a
//! reserved section index (corpus/differ_object/crashes/).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(unit) = differ::compare(data, data) {
        assert!(
            unit.ship_sections.is_empty() || !unit.refusals.is_empty(),
            "an object compared with itself ships sections {:?} without a refusal: {:?}",
            unit.ship_sections,
            unit.functions
        );
    }
});
