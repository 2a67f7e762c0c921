//! hotpatch: the in-process loader as bytes, for `hpbuild loader --out`,
//! and hpctl (src/bin). The patch format and the control protocol are
//! defined in the `format` crate.
//!
//! The loader itself is C (`csrc/`), compiled by `build.rs` into
//! `libhotpatch.a`, which is embedded here as bytes and never linked into a
//! Rust artefact. C programs link it with
//! `-Wl,--whole-archive libhotpatch.a -Wl,--no-whole-archive -lpthread`.

use std::io;
use std::path::Path;

/// The in-process loader archive, built from `csrc/*.c`.
pub const LIBHOTPATCH_A: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libhotpatch.a"));

/// The user-facing C header that goes with [`LIBHOTPATCH_A`].
pub const HOTPATCH_H: &str = include_str!("../csrc/hotpatch.h");

/// Writes `libhotpatch.a` and `hotpatch.h` into `dir` (created if missing).
pub fn write_loader(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("libhotpatch.a"), LIBHOTPATCH_A)?;
    std::fs::write(dir.join("hotpatch.h"), HOTPATCH_H)?;
    Ok(())
}
