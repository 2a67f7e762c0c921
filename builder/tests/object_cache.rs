//! The object cache (issue 9 item 5): a second build against the same base
//! takes the original objects from the cache and compiles only the patched
//! side; an edited input (here a header the unit includes) misses.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

const HPBUILD: &str = env!("CARGO_BIN_EXE_hpbuild");

const SRC: &str = "#include \"k.h\"\nint scale(int x)\n{\n    return x * K;\n}\n";
const FIX: &str = "--- a/m.c\n+++ b/m.c\n@@ -2,4 +2,4 @@\n int scale(int x)\n {\n-    return x * K;\n+    return x * K + 1;\n }\n";

/// Builds the fix; the manifest's notes.
fn build(base: &Path, cache: &Path, out: &str) -> Vec<String> {
    let result = Command::new(HPBUILD)
        .args(["--base", ".", "--diff", "../fix.patch", "-o"])
        .arg(format!("../{out}.hpo"))
        .env("HPBUILD_CACHE", cache)
        .current_dir(base)
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(base.parent().unwrap().join(format!("{out}.json"))).unwrap(),
    )
    .unwrap();
    manifest["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

fn from_cache(notes: &[String]) -> bool {
    notes.iter().any(|n| n.contains("from the object cache"))
}

#[test]
fn a_second_build_compiles_only_the_patched_side() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, cache) = (tmp.path().join("base"), tmp.path().join("cache"));
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(base.join("m.c"), SRC).unwrap();
    std::fs::write(base.join("k.h"), "#define K 2\n").unwrap();
    let db = format!(
        r#"[{{"directory": "{}", "file": "m.c", "arguments": ["gcc", "-O2", "-c", "m.c"]}}]"#,
        base.display()
    );
    std::fs::write(base.join("compile_commands.json"), db).unwrap();
    std::fs::write(tmp.path().join("fix.patch"), FIX).unwrap();

    assert!(!from_cache(&build(&base, &cache, "cold")));
    let warm = build(&base, &cache, "warm");
    assert!(from_cache(&warm), "{warm:?}");
    // The same patch either way (the id follows the output name).
    let (cold, warm) = (
        std::fs::read(tmp.path().join("cold.hpo")).unwrap(),
        std::fs::read(tmp.path().join("warm.hpo")).unwrap(),
    );
    let code = |p: &[u8]| format::read_patch(p).unwrap().funcs;
    assert_eq!(code(&cold), code(&warm));
    // The header changed: the cached original is stale.
    std::fs::write(base.join("k.h"), "#define K 3\n").unwrap();
    assert!(!from_cache(&build(&base, &cache, "edited")));
}
