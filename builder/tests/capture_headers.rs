//! Build capture from a plain Makefile, then a header fix: only the unit
//! that includes the header is compared (the compiler's -M decides).

use std::path::Path;
use std::process::Command;

const HPBUILD: &str = env!("CARGO_BIN_EXE_hpbuild");

fn hpbuild(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(HPBUILD)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn capture_then_header_fix_compares_only_its_includers() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    std::fs::create_dir_all(&base).unwrap();
    let w = |name: &str, text: &str| std::fs::write(base.join(name), text).unwrap();
    w("rate.h", "#define RATE 1\n");
    w(
        "a.c",
        "#include \"rate.h\"\nint price(int s) { return 10 + RATE * s; }\n",
    );
    w("b.c", "int other(int s) { return s + 1; }\n");
    w(
        "main.c",
        "int price(int); int other(int);\nint main(void) { return price(1) + other(1) == 0; }\n",
    );
    w("Makefile", "CC= gcc -std=gnu99\nCFLAGS= -O2\napp: a.o b.o main.o\n\t$(CC) -o app a.o b.o main.o\n%.o: %.c\n\t$(CC) $(CFLAGS) -c $< -o $@\n");

    let (ok, out) = hpbuild(&base, &["capture", "--", "make", "-s"]);
    assert!(ok, "{out}");
    let db: serde_json::Value =
        serde_json::from_slice(&std::fs::read(base.join("compile_commands.json")).unwrap())
            .unwrap();
    let files: Vec<&str> = db
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["file"].as_str())
        .collect();
    assert_eq!(files.len(), 3, "{db}");
    let a = db
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["file"] == "a.c")
        .unwrap();
    assert_eq!(a["arguments"][0], "gcc");
    assert!(a["arguments"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x == "-std=gnu99"));
    assert_eq!(a["output"], "a.o");

    let fix = tmp.path().join("fix.patch");
    std::fs::write(
        &fix,
        "--- a/rate.h\n+++ b/rate.h\n@@ -1 +1 @@\n-#define RATE 1\n+#define RATE 3\n",
    )
    .unwrap();
    let out_hpo = tmp.path().join("fix.hpo");
    let (ok, out) = hpbuild(
        &base,
        &[
            "--explain",
            "--base",
            ".",
            "--diff",
            fix.to_str().unwrap(),
            "-o",
            out_hpo.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("rate.h is included by 1 unit(s), compared: a.c"),
        "{out}"
    );
    assert!(out.contains("price"), "{out}");
}

#[test]
fn struct_layout_change_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    std::fs::write(
        base.join("s.h"),
        "struct agg {\n  int n;\n  short col;\n};\n",
    )
    .unwrap();
    std::fs::write(
        base.join("a.c"),
        "#include \"s.h\"\nint f(struct agg *a) { return a->col; }\n",
    )
    .unwrap();
    let db = format!(
        r#"[{{"directory": "{}", "file": "a.c", "arguments": ["cc", "-O2", "-c", "a.c"]}}]"#,
        base.display()
    );
    std::fs::write(base.join("compile_commands.json"), db).unwrap();
    let fix = base.join("fix.patch");
    std::fs::write(&fix, "--- a/s.h\n+++ b/s.h\n@@ -1,4 +1,4 @@\n struct agg {\n   int n;\n-  short col;\n+  int col;\n };\n").unwrap();
    let (ok, out) = hpbuild(base, &["--base", ".", "--diff", "fix.patch", "-o", "x.hpo"]);
    assert!(!ok);
    assert!(
        out.contains("struct agg changes its members (`int col`)"),
        "{out}"
    );
}
