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

/// The linker arguments that put the loader into a program, given the
/// directory `write_loader` (or `hpbuild loader --out`) filled: the archive
/// whole, so its constructor is kept although nothing refers to it, and
/// pthread. The one statement of this rule for every program the project
/// builds (tests, demo, benches, corpus).
pub fn link_args(dir: &Path) -> Vec<std::ffi::OsString> {
    vec![
        "-Wl,--whole-archive".into(),
        dir.join("libhotpatch.a").into(),
        "-Wl,--no-whole-archive".into(),
        "-lpthread".into(),
    ]
}

/// [`link_args`] as one string, for a make variable.
pub fn link_flags(dir: &Path) -> String {
    link_args(dir)
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes `libhotpatch.a` and `hotpatch.h` into `dir` (created if missing).
pub fn write_loader(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("libhotpatch.a"), LIBHOTPATCH_A)?;
    std::fs::write(dir.join("hotpatch.h"), HOTPATCH_H)?;
    Ok(())
}
