//! hpbuild's unified diff reader (`diff::parse`, builder/src/diff.rs) on
//! arbitrary text.
//!
//! hpbuild reads the diff file as bytes and decodes it lossily
//! (pipeline.rs), so any input is a string here too. The base tree the
//! strip level is measured against is a small fixed one: a file at the top,
//! one in a directory, one header.
//!
//! The reader must answer with a diff or a one-line error. It catches the
//! `patch` crate's own panics (silencing the hook meanwhile), so a panic
//! that reaches libFuzzer is a panic outside that guard.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

// hpbuild's diff reader and the error type it returns, compiled here from
// their files: depending on the builder crate would build all of hpbuild's
// dependencies (tree-sitter, iced-x86, the loader's C, clap, regex) into
// the fuzz build, for these two files that need none of them.
#[allow(dead_code)]
#[path = "../../builder/src/diff.rs"]
mod diff;
#[allow(dead_code)]
#[path = "../../builder/src/error.rs"]
mod error;

fn base() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("hpbuild-fuzz-base-{}", std::process::id()));
        for (path, text) in [
            ("prog.c", "int main(void) { return 0; }\n"),
            ("src/util.c", "int util(int x) { return x; }\n"),
            ("src/util.h", "int util(int x);\n"),
        ] {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
        }
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match diff::parse(&text, base()) {
        Ok(diff) => {
            assert!(!diff.files.is_empty(), "a parsed diff with no file");
            for f in &diff.files {
                let _ = (f.is_c(), f.is_header());
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "error is not one line: {msg:?}");
        }
    }
});
