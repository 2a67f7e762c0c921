//! What capture's link steps give hpbuild (issue 9 items 1 and 6): the
//! program or shared library a unit is linked into. One source, scale.c, is
//! compiled twice by a plain Makefile: position-independent into
//! libscale.so.1 (which `prog` loads), and plain into libscale.a (which
//! `prog-static` links). Without `--target`, hpbuild patches the library
//! the first entry is linked into and says so; `--target prog-static` picks
//! the other entry. Each patch is applied to the running program it is for:
//! new code runs, the counter in scale.c carries on.
//!
//! A unit linked into several outputs is patched in each one a process has:
//! the same position-independent object in libscale.so.1 and in
//! `prog-both`, which also loads the library, makes one patch for both.

use std::fs;
use std::path::Path;
use std::process::Command;
use tests::*;

fn must<T>(r: Res<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

const SCALE: &str = "static int calls;\n\nint scale(int x)\n{\n    calls++;\n    return x * 2;\n}\n\nint scale_calls(void)\n{\n    return calls;\n}\n";

const MAIN: &str = r#"#include <stdio.h>
int scale(int);
int scale_calls(void);
int main(void)
{
    char line[64];
    int n;
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (fgets(line, sizeof line, stdin))
        if (sscanf(line, "call %d", &n) == 1) {
            int r = scale(n);
            printf("result %d calls %d\n", r, scale_calls());
        }
    return 0;
}
"#;

const MAKEFILE: &str = "CC = gcc\nCFLAGS = -O2 -g\n\
all: libscale.so.1 prog prog-static\n\
pic/scale.o: scale.c\n\tmkdir -p pic\n\t$(CC) $(CFLAGS) -fPIC -c scale.c -o pic/scale.o\n\
libscale.so.1: pic/scale.o\n\t$(CC) -shared -Wl,-soname,libscale.so.1 -o $@ pic/scale.o\n\
prog: main.o libscale.so.1\n\t$(CC) -o $@ main.o ./libscale.so.1 -Wl,-rpath,'$$ORIGIN' $(LOADER)\n\
static/scale.o: scale.c\n\tmkdir -p static\n\t$(CC) $(CFLAGS) -c scale.c -o static/scale.o\n\
libscale.a: static/scale.o\n\tar rcs $@ static/scale.o\n\
prog-static: main.o libscale.a\n\t$(CC) -o $@ main.o -L. -lscale $(LOADER)\n\
main.o: main.c\n\t$(CC) $(CFLAGS) -c main.c -o main.o\n";

const FIX: &str = "--- a/scale.c\n+++ b/scale.c\n@@ -3,5 +3,5 @@ static int calls;\n int scale(int x)\n {\n     calls++;\n-    return x * 2;\n+    return x * 3;\n }\n";

/// `prog-both`: scale.c's object linked in, and libscale.so.1 (the same
/// object) loaded beside it; `libcall N` calls the library's copy.
const BOTH: &str = r#"#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int scale(int);
int scale_calls(void);
int main(void)
{
    char self[4096], line[64];
    int x;
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 32);
    if (n < 0)
        return 1;
    self[n] = 0;
    strcpy(strrchr(self, '/') + 1, "libscale.so.1");
    void *h = dlopen(self, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "%s\n", dlerror());
        return 1;
    }
    int (*lib_scale)(int) = (int (*)(int))dlsym(h, "scale");
    int (*lib_calls)(void) = (int (*)(void))dlsym(h, "scale_calls");
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (fgets(line, sizeof line, stdin)) {
        if (sscanf(line, "call %d", &x) == 1) {
            int r = scale(x);
            printf("result %d calls %d\n", r, scale_calls());
        } else if (sscanf(line, "libcall %d", &x) == 1) {
            int r = lib_scale(x);
            printf("lib result %d calls %d\n", r, lib_calls());
        }
    }
    return 0;
}
"#;

const MAKEFILE_BOTH: &str = "CC = gcc\nCFLAGS = -O2 -g\n\
all: libscale.so.1 prog prog-both\n\
pic/scale.o: scale.c\n\tmkdir -p pic\n\t$(CC) $(CFLAGS) -fPIC -c scale.c -o pic/scale.o\n\
libscale.so.1: pic/scale.o\n\t$(CC) -shared -Wl,-soname,libscale.so.1 -o $@ pic/scale.o\n\
prog: main.o libscale.so.1\n\t$(CC) -o $@ main.o ./libscale.so.1 -Wl,-rpath,'$$ORIGIN' $(LOADER)\n\
prog-both: both.o pic/scale.o libscale.so.1\n\t$(CC) -o $@ both.o pic/scale.o -ldl $(LOADER)\n\
%.o: %.c\n\t$(CC) $(CFLAGS) -c $< -o $@\n";

/// The project built under `hpbuild capture` in `<tmp>/base`.
fn captured() -> (tempfile::TempDir, std::path::PathBuf) {
    captured_with(&[("Makefile", MAKEFILE)])
}

/// [`captured`] with these files too (or instead).
fn captured_with(files: &[(&str, &str)]) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::Builder::new()
        .prefix("hp-e2e-links-")
        .tempdir()
        .unwrap();
    let base = tmp.path().join("base");
    fs::create_dir_all(&base).unwrap();
    for (name, text) in [("scale.c", SCALE), ("main.c", MAIN)].iter().chain(files) {
        fs::write(base.join(name), text).unwrap();
    }
    let loader = format!("LOADER={}", loader::link_flags(&must(loader_dir())));
    let out = must(run_timeout(
        Command::new(must(hpbuild_bin()))
            .args(["capture", "--", "make", "-s", &loader])
            .current_dir(&base),
        HPBUILD_TIMEOUT,
    ));
    assert!(out.status.success(), "{}", out.report());
    assert!(
        out.stderr.contains("link step(s) in"),
        "capture says it recorded the links\n{}",
        out.report()
    );
    fs::write(tmp.path().join("fix.patch"), FIX).unwrap();
    (tmp, base)
}

/// `hpbuild` on the captured base: (output, manifest).
fn build_patch(tmp: &Path, base: &Path, name: &str, extra: &[&str]) -> (Output, serde_json::Value) {
    let hpo = tmp.join(format!("{name}.hpo"));
    let out = must(run_timeout(
        Command::new(must(hpbuild_bin()))
            .arg("--base")
            .arg(base)
            .arg("--diff")
            .arg(tmp.join("fix.patch"))
            .arg("-o")
            .arg(&hpo)
            .args(extra),
        HPBUILD_TIMEOUT,
    ));
    assert!(out.status.success(), "{}", out.report());
    let manifest =
        serde_json::from_str(&fs::read_to_string(hpo.with_extension("json")).unwrap()).unwrap();
    (out, manifest)
}

fn hpctl(args: &[&str]) -> Output {
    must(run_timeout(
        Command::new(must(hpctl_bin())).args(args),
        HPCTL_TIMEOUT,
    ))
}

/// `exe` of the built `base`, running.
fn start(base: &Path, exe: &str) -> Program {
    let dir = base.parent().unwrap().join(format!("run-{exe}"));
    fs::create_dir_all(&dir).unwrap();
    must(Program::start(&base.join(exe), &dir))
}

/// Sends `line`, requires `want` back.
fn answers(p: &mut Program, line: &str, want: &str, when: &str) {
    if let Err(e) = p.expect(line, want, None) {
        panic!("{when}: {e}\n{}", p.report());
    }
}

/// `exe` started, given state (two calls), patched with `hpo`: the new
/// code runs and the counter carries on.
fn applies_live(base: &Path, exe: &str, hpo: &Path, refused: Option<(&Path, &str)>) {
    let mut p = start(base, exe);
    for want in ["result 6 calls 1", "result 6 calls 2"] {
        answers(&mut p, "call 3", want, exe);
    }
    let pid = p.pid().to_string();
    if let Some((other, why)) = refused {
        let out = hpctl(&["apply", &pid, other.to_str().unwrap()]);
        assert!(
            !out.status.success() && out.stderr.contains(why),
            "{}",
            out.report()
        );
    }
    let out = hpctl(&["apply", &pid, hpo.to_str().unwrap()]);
    assert!(out.status.success(), "{}\n{}", out.report(), p.report());
    answers(
        &mut p,
        "call 3",
        "result 9 calls 3",
        &format!("{exe} after the patch"),
    );
}

#[test]
fn capture_records_links_and_the_patch_goes_to_the_output_its_unit_is_linked_into() {
    let (tmp, base) = captured();
    let links: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(base.join("link_commands.json")).unwrap())
            .unwrap();
    let step = |out: &str| {
        links
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["output"] == out)
            .unwrap_or_else(|| panic!("no step for {out}: {links:#}"))
            .clone()
    };
    assert_eq!(step("libscale.so.1")["kind"], "shared");
    assert_eq!(step("libscale.so.1")["soname"], "libscale.so.1");
    assert_eq!(step("libscale.a")["kind"], "archive");
    assert_eq!(step("libscale.a")["inputs"][0], "static/scale.o");
    assert_eq!(step("prog-static")["libs"][0], "scale");

    // No --target: the first entry of scale.c is the library's; the patch
    // is for the library, and the notes say which entry and why.
    let (out, manifest) = build_patch(tmp.path(), &base, "lib", &[]);
    assert_eq!(manifest["target"], "libscale.so.1", "{manifest:#}");
    let notes = manifest["notes"].to_string();
    assert!(
        notes.contains("used the one writing pic/scale.o → libscale.so.1 — pass --target"),
        "{notes}\n{}",
        out.report()
    );
    assert!(notes.contains("the patch is for libscale.so.1"), "{notes}");

    // --target prog-static: the other entry, and a patch for the executable.
    let (out, manifest) = build_patch(tmp.path(), &base, "exe", &["--target", "prog-static"]);
    assert!(manifest.get("target").is_none(), "{manifest:#}");
    let notes = manifest["notes"].to_string();
    assert!(
        notes.contains("used the one writing static/scale.o → prog-static"),
        "{notes}\n{}",
        out.report()
    );

    let lib_hpo = tmp.path().join("lib.hpo");
    let exe_hpo = tmp.path().join("exe.hpo");
    applies_live(&base, "prog", &lib_hpo, None);
    applies_live(
        &base,
        "prog-static",
        &exe_hpo,
        Some((&lib_hpo, "which this process has not loaded")),
    );
}

#[test]
fn a_unit_linked_into_a_program_and_its_library_is_patched_in_both() {
    let (tmp, base) = captured_with(&[("Makefile", MAKEFILE_BOTH), ("both.c", BOTH)]);
    let (_, manifest) = build_patch(tmp.path(), &base, "both", &[]);
    assert_eq!(
        manifest["targets"],
        serde_json::json!(["libscale.so.1", ""]),
        "{manifest:#}"
    );
    let notes = manifest["notes"].to_string();
    assert!(
        notes.contains("the patch is for each of libscale.so.1, the executable (prog-both)"),
        "{notes}"
    );
    let hpo = tmp.path().join("both.hpo");

    // A process with only the library: the library is patched.
    applies_live(&base, "prog", &hpo, None);

    // A process with both copies: one apply switches both, each copy's
    // counter carries on, one revert puts both back.
    let mut p = start(&base, "prog-both");
    let pid = p.pid().to_string();
    answers(&mut p, "call 3", "result 6 calls 1", "prog-both");
    answers(&mut p, "libcall 3", "lib result 6 calls 1", "prog-both");
    let out = hpctl(&["apply", &pid, hpo.to_str().unwrap()]);
    assert!(out.status.success(), "{}\n{}", out.report(), p.report());
    assert!(
        out.stdout
            .contains("1 function in libscale.so.1, the executable"),
        "{}",
        out.report()
    );
    answers(
        &mut p,
        "call 3",
        "result 9 calls 2",
        "the executable's copy, patched",
    );
    answers(
        &mut p,
        "libcall 3",
        "lib result 9 calls 2",
        "the library's copy, patched",
    );
    let listed = hpctl(&["list", &pid]);
    assert_eq!(
        listed.stdout.lines().filter(|l| l.contains("both")).count(),
        1,
        "one patch listed\n{}",
        listed.report()
    );
    let out = hpctl(&["revert", &pid]);
    assert!(out.status.success(), "{}\n{}", out.report(), p.report());
    answers(
        &mut p,
        "call 3",
        "result 6 calls 3",
        "the executable's copy, reverted",
    );
    answers(
        &mut p,
        "libcall 3",
        "lib result 6 calls 3",
        "the library's copy, reverted",
    );
    let listed = hpctl(&["list", &pid]);
    assert!(!listed.stdout.contains("both"), "{}", listed.report());
}

/// A Ninja build (the shape CMake's generator writes: `: && cc … && :`,
/// `ar qc`) with its compile database from `ninja -t compdb`: hpbuild reads
/// the link steps with `ninja -t commands`, no capture needed, and the
/// patch is for the library scale.c is linked into.
#[test]
fn a_ninja_builds_link_steps_name_the_library() {
    let tmp = tempfile::Builder::new()
        .prefix("hp-e2e-ninja-")
        .tempdir()
        .unwrap();
    let base = tmp.path().join("base");
    let build = base.join("build");
    fs::create_dir_all(&build).unwrap();
    for (name, text) in [("scale.c", SCALE), ("main.c", MAIN)] {
        fs::write(base.join(name), text).unwrap();
    }
    fs::write(
        build.join("build.ninja"),
        "rule cc\n  command = gcc -O2 -g $flags -c $in -o $out\n\
         rule shared\n  command = : && gcc -fPIC -shared -Wl,-soname,libscale.so.1 -o $out $in && :\n\
         rule link\n  command = : && gcc -o $out $in && :\n\
         rule static\n  command = : && rm -f $out && ar qc $out $in && ranlib $out && :\n\
         build CMakeFiles/scale.dir/scale.c.o: cc ../scale.c\n  flags = -fPIC\n\
         build libscale.so.1: shared CMakeFiles/scale.dir/scale.c.o\n\
         build CMakeFiles/prog.dir/main.c.o: cc ../main.c\n\
         build prog: link CMakeFiles/prog.dir/main.c.o libscale.so.1\n",
    )
    .unwrap();
    let compdb = Command::new("ninja")
        .args(["-t", "compdb", "cc"])
        .current_dir(&build)
        .output()
        .expect("ninja is installed (xtask/src/tools.list)");
    assert!(compdb.status.success(), "{compdb:?}");
    fs::write(build.join("compile_commands.json"), &compdb.stdout).unwrap();
    fs::write(tmp.path().join("fix.patch"), FIX).unwrap();

    let (out, manifest) = build_patch(tmp.path(), &base, "ninja", &[]);
    assert_eq!(manifest["target"], "libscale.so.1", "{}", out.report());
    let notes = manifest["notes"].to_string();
    assert!(
        notes.contains("the patch is for libscale.so.1") && notes.contains("build.ninja"),
        "{notes}"
    );
}
