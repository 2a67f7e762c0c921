//! The parts of hpbuild that other crates reach directly: the reader of the
//! unified diff (`diff`) and its one-line error type (`error`). The fuzz
//! targets in `fuzz/` call `diff::parse`; the `hpbuild` binary (main.rs)
//! uses these modules from here and keeps the rest of the pipeline to
//! itself.

pub mod diff;
pub mod error;
