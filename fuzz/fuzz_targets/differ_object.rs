//! The differ's ELF and DWARF readers: one input, read as the original and
//! as the patched object of a unit, compared with itself.
//!
//! `differ::compare` promises never to panic on malformed input (anything
//! that is not a well-formed ELF64 x86-64 relocatable object is an error).
//! Reading the same bytes twice takes every path of `elf::parse` and
//! `dwarf::load` and then correlates, compares and plans a unit whose two
//! sides agree: nothing may ship.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(unit) = differ::compare(data, data) {
        for f in &unit.functions {
            assert!(
                f.change == differ::Change::Unchanged,
                "an object compared with itself has a changed function: {} ({:?})",
                f.name,
                f.change
            );
        }
    }
});
