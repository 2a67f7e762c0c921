//! `differ::source_lines`: lines per function from the DWARF line table, on
//! objects compiled by GCC from macro-heavy C.

mod common;

use common::compile;
use differ::source_lines::LineMap;

/// Unbalanced-brace macros, a storage-class macro, a function head made by
/// a macro, computed `goto *` and an always-inlined helper.
pub const SRC: &str = r#"#define OPEN_OP(n) case n: {
#define CLOSE_OP break; }
#define l_sinline static inline __attribute__((always_inline))
#define DEF(name) int name(int x)

l_sinline int clamp (int v) {
  if (v > 1000)
    return 1000;
  return v;
}

int first (int op, int v) {
  switch (op) {
    OPEN_OP(1)
      v += 1;
    CLOSE_OP
    OPEN_OP(2)
      v = clamp(v * 2);
    CLOSE_OP
  }
  return v;
}

DEF(second) {
  return x - 1;
}

int third (int v) {
  static void *t[] = { &&a, &&b };
  goto *t[v & 1];
 a: return v;
 b: return -v;
}
"#;

fn line_of(needle: &str) -> u64 {
    SRC.lines().position(|l| l.contains(needle)).unwrap() as u64 + 1
}

#[test]
fn lines_belong_to_the_function_whose_code_they_are() {
    let dir = tempfile::tempdir().unwrap();
    for opt in ["-O0", "-O2"] {
        let obj = compile(dir.path(), opt, SRC, opt);
        let map = LineMap::read(&obj).unwrap().expect("compiled with -g");
        let file = map
            .files()
            .into_iter()
            .find(|f| f.ends_with("/main.c"))
            .expect("main.c in the line table")
            .to_string();
        let at = |needle: &str| map.functions_at(&file, &[line_of(needle)]);
        assert_eq!(at("v += 1;"), ["first"], "{opt}: {map:#?}");
        assert_eq!(at("v = clamp"), ["first"], "{opt}");
        assert_eq!(at("return x - 1;"), ["second"], "{opt}");
        assert_eq!(at("DEF(second)"), ["second"], "{opt}");
        assert_eq!(at("goto *t"), ["third"], "{opt}");
        assert_eq!(at("b: return -v;"), ["third"], "{opt}");
        // The inlined helper's lines are its own, not its caller's (at -O2
        // `return 1000` has no code of its own: a cmov of line 7).
        assert_eq!(at("if (v > 1000)"), ["clamp"], "{opt}");
        assert!(!at("return 1000;").contains(&"first"), "{opt}");
        // Between functions: nobody's.
        assert!(
            map.functions_at(&file, &[line_of("#define DEF") + 1])
                .is_empty(),
            "{opt}"
        );
        let second = map.get("second").unwrap();
        assert_eq!(second.symbols, ["second"], "{opt}");
    }
}

#[test]
fn a_clone_is_code_of_its_parent() {
    // GCC splits the rarely taken part of `big` out as `big.part.0`.
    let src = r#"
extern void slow(int *);
static int work(int *p) {
  if (__builtin_expect(*p == 0, 1))
    return 0;
  slow(p); slow(p); slow(p); slow(p);
  slow(p + 1); slow(p + 2); slow(p + 3);
  return *p * 7;
}
int a(int *p) { return work(p) + 1; }
int b(int *p) { return work(p) + 2; }
"#;
    let dir = tempfile::tempdir().unwrap();
    let obj = compile(dir.path(), "o2", src, "-O2");
    let map = LineMap::read(&obj).unwrap().unwrap();
    let work = map.get("work").expect("work has code");
    assert!(
        work.symbols.iter().any(|s| s.starts_with("work.part")),
        "{map:#?}"
    );
    assert!(
        map.functions.iter().all(|f| !f.name.contains('.')),
        "{map:#?}"
    );
}
