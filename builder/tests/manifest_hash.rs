//! What the manifest and the patch header record: the patch's content hash
//! (issue 8 item 6: the `"sha256"` of `OUT.json` is the value sealed into
//! `OUT.hpo`, which hpctl and the loader check before applying) and the
//! shared library a patch is for (`--target`, issue 9 item 1).

use serde_json::Value;
use std::process::Command;

const HPBUILD: &str = env!("CARGO_BIN_EXE_hpbuild");

const SRC: &str = "int scale(int x)\n{\n    return x * 2;\n}\n";
const FIX: &str = "--- a/m.c\n+++ b/m.c\n@@ -1,4 +1,4 @@\n int scale(int x)\n {\n-    return x * 2;\n+    return x * 3;\n }\n";

/// Builds the one-line fix with `extra` options: (patch bytes, manifest).
fn build(extra: &[&str]) -> (Vec<u8>, Value) {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(base.join("m.c"), SRC).unwrap();
    let db = format!(
        r#"[{{"directory": "{}", "file": "m.c", "arguments": ["gcc", "-O2", "-fPIC", "-c", "m.c"]}}]"#,
        base.display()
    );
    std::fs::write(base.join("compile_commands.json"), db).unwrap();
    std::fs::write(tmp.path().join("fix.patch"), FIX).unwrap();
    let out = Command::new(HPBUILD)
        .args(["--base", ".", "--diff", "../fix.patch", "-o", "../fix.hpo"])
        .args(extra)
        .current_dir(&base)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hpo = std::fs::read(tmp.path().join("fix.hpo")).unwrap();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("fix.json")).unwrap()).unwrap();
    (hpo, manifest)
}

#[test]
fn the_manifest_records_the_sealed_content_hash() {
    let (hpo, manifest) = build(&[]);
    let sealed = format::verify_content_hash(&hpo).expect("hpbuild wrote a sealed patch");
    assert_eq!(manifest["sha256"], Value::from(format::hex(&sealed)));
    assert_eq!(
        manifest.get("target"),
        None,
        "a patch for the executable names no library"
    );
    assert!(format::read_patch(&hpo).unwrap().targets.is_empty());
}

#[test]
fn target_names_the_library_in_the_patch_and_the_manifest() {
    let (hpo, manifest) = build(&["--target", "libscale.so.1"]);
    assert_eq!(format::read_patch(&hpo).unwrap().targets, ["libscale.so.1"]);
    assert_eq!(manifest["target"], Value::from("libscale.so.1"));
}
