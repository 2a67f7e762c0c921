//! The deployed shape of the original unit without a third compile.
//!
//! The base check needs each replaced function's bytes as the deployed
//! build has them: without `-ffunction-sections`, all functions share one
//! `.text` and the assembler relaxes jumps between them differently
//! (`differ::use_deployed_shape`). Compiling the original once more for that
//! costs a third compile on top of the original and the patched one. GCC's
//! code does not depend on the section a function goes to, only the
//! assembler's encoding does: so the original compile's assembly, with every
//! function section folded back into the section the deployed build uses
//! and the debug information left out, assembles to the deployed code.
//! (On SQLite's 240k-line amalgamation at -O2 the `.text` and its relocations
//! come out byte for byte as GCC's plain compile; assembling takes ~5% of a
//! compile.)
//!
//! The assembly is tapped on its way to the assembler: GCC runs the
//! assembler named `as` in a `-B` directory first, where a two-line script
//! runs `hpbuild as-wrap`. That runs the real assembler on the unchanged
//! input (so the original object is exactly the compiler's) and, beside it,
//! the folded copy. Anything unexpected leaves no derived object, and the
//! caller compiles the deployed shape as before. Clang assembles in process
//! and is not tapped.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Writes the `-B` directory whose `as` hands the assembly to
/// `hpbuild as-wrap`, which writes the derived object to `derived`.
/// Returns the directory (with its trailing slash, as GCC wants a prefix).
pub fn tap_dir(dir: &Path, derived: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    let hpbuild = std::env::current_exe()?;
    let script = format!(
        "#!/bin/sh\nexec {} as-wrap {} \"$@\"\n",
        sh_quote(&hpbuild.to_string_lossy()),
        sh_quote(&derived.to_string_lossy())
    );
    let path = dir.join("as");
    std::fs::write(&path, script)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(format!("{}/", dir.display()))
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Is `program` GCC (the driver that runs an external `as` found by `-B`)?
pub fn is_gcc(program: &str) -> bool {
    let Some(path) = crate::cache::resolve_program(program) else {
        return false;
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    name.is_some_and(|n| n.contains("gcc") && !n.contains("clang"))
}

/// `hpbuild as-wrap DERIVED AS-ARGS...`: assembles as asked, and the folded
/// copy into DERIVED. The exit status is the real assembler's.
pub fn as_wrap(argv: &[String]) -> i32 {
    let Some((derived, args)) = argv.split_first() else {
        eprintln!("hpbuild as-wrap: usage: as-wrap DERIVED.o AS-ARGS...");
        return 2;
    };
    let derived = PathBuf::from(derived);
    // GCC names the input last; with -pipe it comes on stdin.
    let (args, input) = match args.last() {
        Some(last) if last.ends_with(".s") && Path::new(last).is_file() => {
            (args.to_vec(), PathBuf::from(last))
        }
        _ => {
            let copy = derived.with_extension("stdin.s");
            let mut text = Vec::new();
            if std::io::stdin().read_to_end(&mut text).is_err()
                || std::fs::write(&copy, &text).is_err()
            {
                eprintln!("hpbuild as-wrap: cannot keep the assembly from stdin");
                return 1;
            }
            let mut a = args.to_vec();
            a.push(copy.to_string_lossy().into_owned());
            (a, copy)
        }
    };
    let status = std::thread::scope(|s| {
        let folded = s.spawn(|| {
            if derive(&args, &input, &derived).is_err() {
                let _ = std::fs::remove_file(&derived);
            }
        });
        let status = Command::new("as").args(&args).status();
        let _ = folded.join();
        status
    });
    if args.len() > argv.len() - 1 {
        let _ = std::fs::remove_file(&input); // the copy of stdin
    }
    match status {
        Ok(st) => st.code().unwrap_or(1),
        Err(e) => {
            eprintln!("hpbuild as-wrap: cannot run as: {e}");
            1
        }
    }
}

/// Folds `input` and assembles it into `derived` with the same assembler
/// options, less the debug ones.
fn derive(args: &[String], input: &Path, derived: &Path) -> Result<(), ()> {
    let text = std::fs::read_to_string(input).map_err(|_| ())?;
    let folded_path = derived.with_extension("s");
    std::fs::write(&folded_path, fold(&text)).map_err(|_| ())?;
    let mut cmd = Vec::new();
    let mut it = args[..args.len() - 1].iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" => {
                it.next();
            }
            _ if a.starts_with("--gdwarf") || a == "-g" || a == "--gen-debug" => {}
            _ => cmd.push(a.clone()),
        }
    }
    let ok = Command::new("as")
        .args(&cmd)
        .arg("-o")
        .arg(derived)
        .arg(&folded_path)
        .status()
        .map_err(|_| ())?
        .success();
    let _ = std::fs::remove_file(&folded_path);
    ok.then_some(()).ok_or(())
}

/// The assembly as the deployed build would have given it to the assembler,
/// as far as code goes: `.text.NAME` → `.text`, `.text.unlikely.NAME` →
/// `.text.unlikely` (likewise startup, hot, exit); debug sections, `.loc`
/// and `.file` left out. Data sections stay: code reaches data through
/// relocations, which the base check masks.
pub fn fold(asm: &str) -> String {
    let mut out = String::with_capacity(asm.len() / 4);
    let mut in_debug = false;
    for line in asm.lines() {
        let t = line.trim_start();
        if let Some(name) = section_switch(t) {
            in_debug = name.starts_with(".debug_");
            if in_debug {
                continue;
            }
            out.push_str(&fold_section(line, t, name));
            out.push('\n');
            continue;
        }
        if in_debug || t.starts_with(".loc") || t.starts_with(".file") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The section a directive switches to, if it is one.
fn section_switch(t: &str) -> Option<&str> {
    match t.split_whitespace().next()? {
        ".text" | ".data" | ".bss" => Some(t.split_whitespace().next()?),
        ".section" | ".pushsection" => {
            let rest = t.split_once(char::is_whitespace)?.1.trim_start();
            Some(rest.split(',').next()?.trim())
        }
        _ => None,
    }
}

/// The directive `line` (switching to `name`) with a function section
/// folded into its deployed section.
fn fold_section(line: &str, t: &str, name: &str) -> String {
    const KINDS: [&str; 4] = ["unlikely", "startup", "hot", "exit"];
    let Some(rest) = name.strip_prefix(".text.") else {
        return line.to_string();
    };
    let flags = &t[t.find(name).map_or(t.len(), |i| i + name.len())..];
    // A comdat group keeps its own section in the deployed build too.
    if flags.contains("comdat") {
        return line.to_string();
    }
    let kind = KINDS
        .iter()
        .find(|k| rest.strip_prefix(**k).is_some_and(|r| r.starts_with('.')));
    match kind {
        Some(k) => format!("\t.section\t.text.{k}{flags}"),
        None if KINDS.contains(&rest) => line.to_string(),
        None => "\t.text".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_sections_fold_into_the_deployed_ones() {
        let asm = "\t.section\t.text.f,\"ax\",@progbits\nf:\n\tret\n\
                   \t.section\t.text.unlikely.g,\"ax\",@progbits\ng.cold:\n\
                   \t.section\t.text.g\n\t.loc 1 2 3\n\
                   \t.section\t.text.startup.main,\"ax\",@progbits\n\
                   \t.section\t.text.unlikely\n\
                   \t.section\t.debug_info,\"\",@progbits\n\t.long 7\n\
                   \t.section\t.rodata.x,\"a\"\n\t.long 1\n\t.text\n\tnop\n";
        assert_eq!(
            fold(asm),
            "\t.text\nf:\n\tret\n\
             \t.section\t.text.unlikely,\"ax\",@progbits\ng.cold:\n\
             \t.text\n\
             \t.section\t.text.startup,\"ax\",@progbits\n\
             \t.section\t.text.unlikely\n\
             \t.section\t.rodata.x,\"a\"\n\t.long 1\n\t.text\n\tnop\n"
        );
    }

    #[test]
    fn a_comdat_section_stays() {
        let asm = "\t.section\t.text.f,\"axG\",@progbits,f,comdat\n";
        assert_eq!(fold(asm), asm);
    }
}
