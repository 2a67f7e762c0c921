//! What `hpbuild capture` records about the build's link steps, beside the
//! compile commands: each `cc -o OUT …` that links objects into a program or
//! a shared library, and each `ar` that puts objects into an archive. With
//! them hpbuild knows which output every unit ends up in (`links`), so it
//! can tell the loader which library a patch is for without `--target`, and
//! pick, among the entries of a source compiled into several programs, the
//! one linked into the program being patched.
//!
//! The records keep paths as the build wrote them, with the directory the
//! step ran in; `links` resolves them.

use crate::ccwrap::TAKES_VALUE;
use serde::{Deserialize, Serialize};

/// The file `hpbuild capture` writes beside compile_commands.json.
pub const FILE_NAME: &str = "link_commands.json";

/// What a link step makes.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A program (`cc -o prog a.o b.o`).
    Executable,
    /// A shared library (`cc -shared`).
    Shared,
    /// A static archive (`ar rcs libx.a a.o`).
    Archive,
    /// A relocatable object made of objects (`cc -r`, `ld -r`).
    Relocatable,
}

/// One recorded link or archive step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LinkStep {
    pub directory: String,
    pub output: String,
    pub kind: Kind,
    /// Objects, archives and shared libraries given by path, in order.
    pub inputs: Vec<String>,
    /// `-lNAME` libraries and the `-L` directories searched for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub libs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lib_dirs: Vec<String>,
    /// A shared library's soname (`-Wl,-soname,NAME`): the name the
    /// dynamic loader knows it by, and so the name a patch targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soname: Option<String>,
    /// An archive this step created: it holds these members only. Without
    /// it (`ar r` on an archive that exists) the members add to those an
    /// earlier step put in.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fresh: bool,
}

/// Is `arg` a file the linker takes as input (not a source: a source is
/// compiled first, and its object stands in for it)?
pub fn is_link_input(arg: &str) -> bool {
    !arg.starts_with('-')
        && ([".o", ".a", ".so", ".lo", ".obj"]
            .iter()
            .any(|e| arg.ends_with(e))
            || arg.contains(".so."))
}

/// The object a compile-and-link command makes of a source it compiles
/// (GCC names it after the source in a temporary directory; capture records
/// the unit with this name: `ccwrap::output_of`).
pub fn object_for_source(source: &str) -> String {
    let stem = std::path::Path::new(source)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{stem}.o")
}

/// The linker's own arguments, from `-Wl,a,b` and `-Xlinker a`, in order.
fn linker_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(list) = a.strip_prefix("-Wl,") {
            out.extend(list.split(',').map(String::from));
        } else if a == "-Xlinker" {
            out.extend(it.next().cloned());
        }
    }
    out
}

/// `-soname NAME`, `-soname=NAME`, `--soname=NAME`, `-h NAME`, `-hNAME`.
fn soname(linker: &[String]) -> Option<String> {
    let mut it = linker.iter();
    while let Some(a) = it.next() {
        let a = a.as_str();
        if matches!(a, "-soname" | "--soname" | "-h") {
            return it.next().cloned();
        }
        for p in ["-soname=", "--soname="] {
            if let Some(v) = a.strip_prefix(p) {
                return Some(v.to_string());
            }
        }
        if let Some(v) = a.strip_prefix("-h").filter(|v| !v.is_empty()) {
            return Some(v.to_string());
        }
    }
    None
}

/// The link step of a compiler command that links (no `-c`, `-S`, `-E`):
/// `None` for a compile or a preprocess. `directory` is where it ran.
pub fn from_cc(directory: &str, args: &[String]) -> Option<LinkStep> {
    let compile_only = args.iter().any(|a| {
        matches!(
            a.as_str(),
            "-c" | "-E" | "-S" | "-M" | "-MM" | "-fsyntax-only"
        )
    });
    if compile_only {
        return None;
    }
    let (mut inputs, mut libs, mut lib_dirs) = (Vec::new(), Vec::new(), Vec::new());
    let mut output = None;
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" => output = it.next().cloned(),
            "-l" => libs.extend(it.next().cloned()),
            "-L" => lib_dirs.extend(it.next().cloned()),
            s if TAKES_VALUE.contains(&s) => {
                it.next();
            }
            s if s.starts_with("-o") => output = Some(s[2..].to_string()),
            s if s.starts_with("-l") => libs.push(s[2..].to_string()),
            s if s.starts_with("-L") => lib_dirs.push(s[2..].to_string()),
            s if !s.starts_with('-') && s.ends_with(".c") => inputs.push(object_for_source(s)),
            s if is_link_input(s) => inputs.push(s.to_string()),
            _ => {}
        }
    }
    if inputs.is_empty() {
        return None; // `cc --version`, a probe with nothing of the build's
    }
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let kind = if has("-shared") {
        Kind::Shared
    } else if has("-r") || has("-relocatable") {
        Kind::Relocatable
    } else {
        Kind::Executable
    };
    let linker = linker_args(args);
    Some(LinkStep {
        directory: directory.to_string(),
        output: output.unwrap_or_else(|| "a.out".into()),
        kind,
        inputs,
        libs,
        lib_dirs,
        soname: (kind == Kind::Shared).then(|| soname(&linker)).flatten(),
        fresh: false,
    })
}

/// The archive step of an `ar` command that adds members (`ar rcs libx.a
/// a.o b.o`, `ar -q …`); `None` for listing, extracting, deleting.
pub fn from_ar(directory: &str, args: &[String]) -> Option<LinkStep> {
    // The first argument is the operation and its modifiers; GNU ar takes
    // them with or without a dash. Options with values (`--plugin P`) and
    // `@file` are rare in builds and left out.
    let mut rest = args.iter().filter(|a| !a.starts_with("--"));
    let ops = rest.next()?.trim_start_matches('-');
    if !(ops.contains('r') || ops.contains('q')) {
        return None;
    }
    // Modifiers a, b, i take a member name before the archive.
    let positioned = ops.contains('a') || ops.contains('b') || ops.contains('i');
    let mut rest = rest.skip(usize::from(positioned));
    let archive = rest.next()?.clone();
    Some(LinkStep {
        directory: directory.to_string(),
        output: archive,
        kind: Kind::Archive,
        inputs: rest.cloned().collect(),
        libs: Vec::new(),
        lib_dirs: Vec::new(),
        soname: None,
        fresh: false,
    })
}

/// A tool's name without its version and target triplet: `gcc` for
/// `x86_64-linux-gnu-gcc-12`, `ar` for `llvm-ar-16`.
fn base_name(name: &str) -> &str {
    name.rsplit('-')
        .find(|p| p.parse::<u32>().is_err())
        .unwrap_or(name)
}

/// Is this tool an archiver (`ar`, `gcc-ar`, `x86_64-linux-gnu-ar`,
/// `llvm-ar-16`)?
pub fn is_archiver(name: &str) -> bool {
    base_name(name) == "ar"
}

/// Is this tool a C compiler driver (`cc`, `gcc-12`, `clang`, …)?
pub fn is_compiler(name: &str) -> bool {
    matches!(base_name(name), "cc" | "c89" | "c99" | "gcc" | "clang")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn a_program_link_names_its_objects_and_libraries() {
        let s = from_cc("/b", &v("-o lua lua.o liblua.a -Wl,-E -L. -lhelp -lm")).unwrap();
        assert_eq!(s.kind, Kind::Executable);
        assert_eq!(s.output, "lua");
        assert_eq!(s.inputs, v("lua.o liblua.a"));
        assert_eq!(s.libs, v("help m"));
        assert_eq!(s.lib_dirs, v("."));
        assert_eq!(s.soname, None);
    }

    #[test]
    fn a_shared_library_link_keeps_its_soname_however_it_is_spelled() {
        for flags in [
            "-Wl,-soname,liblua.so.5",
            "-Wl,-soname -Wl,liblua.so.5",
            "-Xlinker -soname -Xlinker liblua.so.5",
            "-Wl,-hliblua.so.5",
            "-Wl,--soname=liblua.so.5",
        ] {
            let args = v(&format!(
                "-shared -o .libs/liblua.so.5.0.0 a.o .libs/b.o {flags}"
            ));
            let s = from_cc("/b", &args).unwrap();
            assert_eq!(s.kind, Kind::Shared, "{flags}");
            assert_eq!(s.soname.as_deref(), Some("liblua.so.5"), "{flags}");
            assert_eq!(s.inputs, v("a.o .libs/b.o"));
        }
    }

    #[test]
    fn compiles_are_not_link_steps_and_sources_stand_for_their_objects() {
        assert!(from_cc("/b", &v("-c -o a.o a.c")).is_none());
        assert!(from_cc("/b", &v("-E a.c")).is_none());
        assert!(from_cc("/b", &v("--version")).is_none());
        let s = from_cc("/b", &v("-O2 -o sqlite3 shell.c sqlite3.o -lm")).unwrap();
        assert_eq!(s.inputs, v("shell.o sqlite3.o"));
        let r = from_cc("/b", &v("-r -o all.o a.o b.o")).unwrap();
        assert_eq!(r.kind, Kind::Relocatable);
    }

    #[test]
    fn ar_adding_members_is_an_archive_step() {
        let s = from_ar("/b", &v("rcu liblua.a lapi.o lcode.o")).unwrap();
        assert_eq!((s.kind, s.output.as_str()), (Kind::Archive, "liblua.a"));
        assert_eq!(s.inputs, v("lapi.o lcode.o"));
        assert_eq!(from_ar("/b", &v("-qc x.a y.o")).unwrap().inputs, v("y.o"));
        assert_eq!(
            from_ar("/b", &v("rb old.o x.a new.o")).unwrap().output,
            "x.a"
        );
        assert!(from_ar("/b", &v("t liblua.a")).is_none());
        assert!(from_ar("/b", &v("x liblua.a")).is_none());
        assert!(is_archiver("ar") && is_archiver("x86_64-linux-gnu-ar") && is_archiver("gcc-ar"));
        assert!(is_archiver("llvm-ar-16") && !is_archiver("gcc") && !is_archiver("ranlib"));
    }
}
