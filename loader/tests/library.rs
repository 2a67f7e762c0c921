//! Shared libraries (issue 9 item 1): a patch built from a library's own
//! source is applied to that library's code in the running process. The
//! loader finds the library by the name the patch carries, looks its
//! functions and statics up in the library's symbol table, checks the base
//! against the library's code and places the patch within reach of it.

mod common;

use common::{hpctl, Proc, Work};
use std::process::Command;

const LIB: &str = include_str!("programs/libdemo.c");
const PROG: &str = include_str!("programs/uselib.c");

fn lib_version(factor: u32, extra: &str) -> String {
    format!("#define LIB_FACTOR {factor}\n#define LIB_EXTRA {extra}\n{LIB}")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The patch for `new` over `orig`, both compiled as the library's unit.
fn library_patch(work: &Work, id: &str, target: &str, orig: &str, new: &str) -> Vec<u8> {
    patch_for(work, id, &[target], orig, new)
}

/// [`library_patch`] for several objects (`""`: the executable).
fn patch_for(work: &Work, id: &str, targets: &[&str], orig: &str, new: &str) -> Vec<u8> {
    let o = std::fs::read(common::compile(
        work,
        &format!("{id}/o"),
        "libdemo.c",
        orig,
        &["-fPIC"],
    ))
    .unwrap();
    let n = std::fs::read(common::compile(
        work,
        &format!("{id}/n"),
        "libdemo.c",
        new,
        &["-fPIC"],
    ))
    .unwrap();
    let diff = differ::compare(&o, &n).unwrap();
    assert!(diff.refusals.is_empty(), "{:?}", diff.refusals);
    let unit = emit::Unit {
        patched: &n,
        diff: &diff,
        rel: "libdemo.c",
    };
    let targets: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
    emit::emit_for(&targets, &[unit], id, "test", 0)
        .unwrap()
        .object
}

/// libdemo.so.1 built from `lib_src` and the program linked to it (with the
/// loader); the program's path.
fn build_uselib(work: &Work, lib_src: &str) -> std::path::PathBuf {
    let lib_obj = common::compile(work, "lib", "libdemo.c", lib_src, &["-fPIC"]);
    let lib_dir = work.path("lib");
    run(Command::new("gcc")
        .args(["-shared", "-Wl,-soname,libdemo.so.1", "-o", "libdemo.so.1"])
        .arg(&lib_obj)
        .current_dir(&lib_dir));
    run(Command::new("ln")
        .args(["-sf", "libdemo.so.1", "libdemo.so"])
        .current_dir(&lib_dir));
    let prog_obj = common::compile(work, "prog", "uselib.c", PROG, &[]);
    let exe = work.path("prog/uselib");
    let lib_arg = format!("-L{}", lib_dir.display());
    let rpath = format!("-Wl,-rpath,{}", lib_dir.display());
    run(Command::new("gcc")
        .arg(&prog_obj)
        .args(["-o", exe.to_str().unwrap(), &lib_arg, "-ldemo", &rpath])
        .args(loader::link_args(&work.path("loader"))));
    exe
}

#[test]
fn a_fix_to_a_shared_library_applies_to_its_code() {
    let work = Work::new("library");
    let v1 = lib_version(2, "");
    let exe = build_uselib(&work, &v1);

    let fixed = lib_version(3, "+ 1000");
    let patch = library_patch(&work, "libfix", "libdemo.so.1", &v1, &fixed);
    let file = work.path("libfix.hpo");
    std::fs::write(&file, &patch).unwrap();
    // The same patch said to be for the executable is refused: lib_scale
    // is not the executable's.
    let wrong = library_patch(&work, "exefix", "", &v1, &fixed);
    let wrong_file = work.path("exefix.hpo");
    std::fs::write(&wrong_file, &wrong).unwrap();
    let absent = library_patch(&work, "nolib", "libnothere.so", &v1, &fixed);
    let absent_file = work.path("nolib.hpo");
    std::fs::write(&absent_file, &absent).unwrap();

    let mut p = Proc::start(&exe, &work);
    let pid = p.pid().to_string();
    assert_eq!(p.ask("scale 5"), "11"); // 5*2 + bump 1
    let (ok, _, err) = hpctl(&["apply", &pid, wrong_file.to_str().unwrap()]);
    assert!(!ok && err.contains("lib_scale"), "{err}");
    let (ok, _, err) = hpctl(&["apply", &pid, absent_file.to_str().unwrap()]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("shared library libnothere.so, which this process has not loaded"),
        "{err}"
    );
    let (ok, out, err) = hpctl(&["apply", &pid, file.to_str().unwrap()]);
    assert!(ok, "{err}\n{}", p.log_text());
    assert!(out.starts_with("applied libfix: 1 function"), "{out}");
    // New code in the library, its static counter kept: 5*3 + bump 2 + 1000.
    assert_eq!(p.ask("scale 5"), "1017");
    let log = p.log_text();
    assert!(log.contains("libdemo.so.1 symbols:"), "{log}");
    let (ok, _, err) = hpctl(&["revert", &pid]);
    assert!(ok, "{err}");
    assert_eq!(p.ask("scale 5"), "13");
}

/// A library fix that reads and writes the library's thread-locals (issue 9
/// item 1): the library's -fPIC code reaches them through __tls_get_addr,
/// an exported one general-dynamic (TLSGD) and the library's own
/// local-dynamic (TLSLD + DTPOFF32); the patch does the same with the
/// library's module id, so the patched code sees this thread's values and
/// keeps updating them.
#[test]
fn a_library_fix_uses_the_librarys_thread_locals() {
    let work = Work::new("library-tls");
    let v1 = lib_version(2, "");
    let exe = build_uselib(&work, &v1);

    let fixed = format!("#define LIB_TLS_FACTOR 3\n{v1}");
    let patch = library_patch(&work, "tlsfix", "libdemo.so.1", &v1, &fixed);
    let file = work.path("tlsfix.hpo");
    std::fs::write(&file, &patch).unwrap();

    let mut p = Proc::start(&exe, &work);
    let pid = p.pid().to_string();
    // calls * 1000 + total * factor
    assert_eq!(p.ask("tls 5"), "1010");
    assert_eq!(p.ask("tls 5"), "2020");
    let (ok, out, err) = hpctl(&["apply", &pid, file.to_str().unwrap()]);
    assert!(ok, "{err}\n{}", p.log_text());
    assert!(out.starts_with("applied tlsfix: 1 function"), "{out}");
    // The new factor, the thread's counters carried on (3 calls, 15 in all).
    assert_eq!(p.ask("tls 5"), "3045");
    let (ok, _, err) = hpctl(&["revert", &pid]);
    assert!(ok, "{err}");
    assert_eq!(p.ask("tls 5"), "4040");
}

/// libdemo.c's object linked into libdemo.so.1 and into a program that
/// also loads the library: a patch for both objects, and one built on top of
/// it. The first adds a function (`bonus`) that lib_scale calls; each
/// object gets its own copy. The second replaces `bonus`, and must replace
/// each object's own copy, so that each lib_scale sees the fix.
#[test]
fn a_patch_for_two_objects_and_one_built_on_top_of_it() {
    let work = Work::new("library-both");
    let v1 = lib_version(2, "");
    let lib_obj = common::compile(&work, "lib", "libdemo.c", &v1, &["-fPIC"]);
    let lib_dir = work.path("lib");
    run(Command::new("gcc")
        .args(["-shared", "-Wl,-soname,libdemo.so.1", "-o", "libdemo.so.1"])
        .arg(&lib_obj)
        .current_dir(&lib_dir));
    let prog_obj = common::compile(
        &work,
        "prog",
        "bothlib.c",
        include_str!("programs/bothlib.c"),
        &[],
    );
    let exe = work.path("lib/bothlib");
    run(Command::new("gcc")
        .arg(&prog_obj)
        .arg(&lib_obj)
        .args(["-o", exe.to_str().unwrap(), "-ldl"])
        .args(loader::link_args(&work.path("loader"))));

    let bonus = |n: u32| {
        format!(
            "int bonus(void);\n{}\n__attribute__((noinline)) int bonus(void)\n{{\n    return {n};\n}}\n",
            lib_version(2, "+ bonus()")
        )
    };
    let both = ["libdemo.so.1", ""];
    let first = work.path("first.hpo");
    std::fs::write(&first, patch_for(&work, "first", &both, &v1, &bonus(1000))).unwrap();
    let second = work.path("second.hpo");
    let on_top = patch_for(&work, "second", &both, &bonus(1000), &bonus(2000));
    std::fs::write(&second, on_top).unwrap();

    let mut p = Proc::start(&exe, &work);
    let pid = p.pid().to_string();
    // 5*2 + bump: each object counts its own bumps.
    assert_eq!(
        (p.ask("scale 5"), p.ask("libscale 5")),
        ("11".into(), "11".into())
    );
    let (ok, out, err) = hpctl(&["apply", &pid, first.to_str().unwrap()]);
    assert!(ok, "{err}\n{}", p.log_text());
    assert!(out.contains("in libdemo.so.1, the executable"), "{out}");
    assert_eq!(p.ask("scale 5"), "1012");
    assert_eq!(p.ask("libscale 5"), "1012");
    let (ok, _, err) = hpctl(&["apply", &pid, second.to_str().unwrap()]);
    assert!(ok, "{err}\n{}", p.log_text());
    assert_eq!(
        p.ask("scale 5"),
        "2013",
        "the program's lib_scale calls its new bonus"
    );
    assert_eq!(
        p.ask("libscale 5"),
        "2013",
        "the library's lib_scale calls its new bonus"
    );
    for (want, patch) in [("1014", "second"), ("15", "first")] {
        let (ok, out, err) = hpctl(&["revert", &pid]);
        assert!(ok && out.contains(patch), "{out}{err}\n{}", p.log_text());
        assert_eq!(
            (p.ask("scale 5"), p.ask("libscale 5")),
            (want.into(), want.into())
        );
    }
}

/// `--redirect call-site` for a library patch: the direct calls inside the
/// library to the replaced function (lib_scale calls the static bump) are
/// found in the library's file and rewritten, as in the executable.
#[test]
fn call_sites_inside_a_library_are_rewritten() {
    let work = Work::new("library-sites");
    let v1 = lib_version(2, "");
    let exe = build_uselib(&work, &v1);
    let fixed = v1.replace("return ++bumps;", "return ++bumps + 100;");
    let file = work.path("bumpfix.hpo");
    std::fs::write(
        &file,
        library_patch(&work, "bumpfix", "libdemo.so.1", &v1, &fixed),
    )
    .unwrap();

    let mut p = Proc::start(&exe, &work);
    let pid = p.pid().to_string();
    assert_eq!(p.ask("scale 5"), "11");
    let (ok, out, err) = hpctl(&[
        "apply",
        "--redirect",
        "call-site",
        &pid,
        file.to_str().unwrap(),
    ]);
    assert!(ok, "{err}\n{}", p.log_text());
    assert!(out.contains("(1 call sites)"), "{out}\n{}", p.log_text());
    // 5*2 + the new bump (its counter kept: 2) + 100.
    assert_eq!(p.ask("scale 5"), "112");
    let (ok, _, err) = hpctl(&["revert", &pid]);
    assert!(ok, "{err}");
    assert_eq!(p.ask("scale 5"), "13");
}

/// A target list naming one loaded library twice (its soname and its link
/// name): one object, patched once.
#[test]
fn two_names_of_one_library_are_one_object() {
    let work = Work::new("library-alias");
    let v1 = lib_version(2, "");
    let exe = build_uselib(&work, &v1);
    let fixed = lib_version(3, "");
    let names = ["libdemo.so.1", "libdemo.so"];
    let file = work.path("alias.hpo");
    std::fs::write(&file, patch_for(&work, "alias", &names, &v1, &fixed)).unwrap();

    let mut p = Proc::start(&exe, &work);
    let pid = p.pid().to_string();
    assert_eq!(p.ask("scale 5"), "11");
    let (ok, out, err) = hpctl(&["apply", &pid, file.to_str().unwrap()]);
    assert!(ok, "{err}\n{}", p.log_text());
    assert!(out.starts_with("applied alias: 1 function ("), "{out}");
    assert_eq!(p.ask("scale 5"), "17");
    let (ok, _, err) = hpctl(&["revert", &pid]);
    assert!(ok, "{err}");
    assert_eq!(p.ask("scale 5"), "13");
    let (_, listed, _) = hpctl(&["list", &pid]);
    assert!(!listed.contains("alias"), "{listed}");
}
