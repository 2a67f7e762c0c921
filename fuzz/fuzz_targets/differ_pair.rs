//! The differ on two objects: the input is a little-endian u32 length `n`,
//! then the original object (`n` bytes, fewer if the input is shorter),
//! then the patched object (the rest). Seeds are real pairs: a fixture
//! compiled before and after its fix.
//!
//! `differ::compare` must return a verdict or an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let n = (u32::from_le_bytes(*len) as usize).min(rest.len());
    let (original, patched) = rest.split_at(n);
    let _ = differ::compare(original, patched);
});
