//! End-to-end tests: every fixture under fixtures/ run against the real
//! tools in every configuration of the matrix (tests/src/matrix.rs), and a
//! consistency check of the fixtures themselves (which needs no tool). The
//! CLI contract's error cases are in cli.rs. See tests/README.md.

use tests::*;

/// One test per matrix configuration (plus `also` for the fixture's
/// `also_cflags` sets), in a module named after the fixture:
/// `body_change::clang_o2_nopie`.
macro_rules! matrix_tests {
    ($dir:literal) => {
        #[test]
        fn gcc_o0() {
            tests::run_fixture($dir, "gcc-O0")
        }
        #[test]
        fn gcc_o2() {
            tests::run_fixture($dir, "gcc-O2")
        }
        #[test]
        fn gcc_o3() {
            tests::run_fixture($dir, "gcc-O3")
        }
        #[test]
        fn clang_o0() {
            tests::run_fixture($dir, "clang-O0")
        }
        #[test]
        fn clang_o2() {
            tests::run_fixture($dir, "clang-O2")
        }
        #[test]
        fn clang_o3() {
            tests::run_fixture($dir, "clang-O3")
        }
        #[test]
        fn gcc_o2_nopie() {
            tests::run_fixture($dir, "gcc-O2-nopie")
        }
        #[test]
        fn clang_o2_nopie() {
            tests::run_fixture($dir, "clang-O2-nopie")
        }
        #[test]
        fn gcc_o2_cet() {
            tests::run_fixture($dir, "gcc-O2-cet")
        }
        #[test]
        fn clang_o2_cet() {
            tests::run_fixture($dir, "clang-O2-cet")
        }
        #[test]
        fn also() {
            let f = tests::Fixture::load($dir).unwrap_or_else(|e| panic!("{e}"));
            for name in f.also_names() {
                tests::run_fixture($dir, &name);
            }
        }
    };
}

/// The test functions above, as configuration names.
const MATRIX_TESTS: &[&str] = &[
    "gcc-O0",
    "gcc-O2",
    "gcc-O3",
    "clang-O0",
    "clang-O2",
    "clang-O3",
    "gcc-O2-nopie",
    "clang-O2-nopie",
    "gcc-O2-cet",
    "clang-O2-cet",
];

macro_rules! fixture_tests {
    ($($test:ident => $dir:literal,)*) => {
        $(
            mod $test {
                matrix_tests!($dir);
            }
        )*
        /// Every fixture directory has a test above, and every test a directory.
        #[test]
        fn every_fixture_has_a_test() {
            let mut listed: Vec<String> = vec![$($dir.to_string()),*];
            listed.sort();
            assert_eq!(
                fixture_names(),
                listed,
                "fixtures/*/fixture.json and the fixture_tests! list in tests/e2e.rs disagree"
            );
        }
    };
}

/// matrix_tests! has one test per configuration of MATRIX.
#[test]
fn every_config_has_a_test() {
    let names: Vec<&str> = MATRIX.iter().map(|c| c.name).collect();
    assert_eq!(
        names, MATRIX_TESTS,
        "matrix_tests! in tests/e2e.rs and MATRIX disagree"
    );
}

fixture_tests! {
    body_change => "body-change",
    static_function => "static-function",
    static_local => "static-local",
    global_state => "global-state",
    string_literal => "string-literal",
    new_function_global => "new-function-global",
    function_pointer => "function-pointer",
    threads => "threads",
    recursion => "recursion",
    revert => "revert",
    wrong_base => "wrong-base",
    changed_initializer => "changed-initializer",
    ipa_ra => "ipa-ra",
    tiny_function => "tiny-function",
    inlined_helper => "inlined-helper",
    clone_constprop => "clone-constprop",
    cold_part => "cold-part",
    switch_table => "switch-table",
    line_shift => "line-shift",
    pic_data => "pic-data",
    tls => "tls",
    struct_layout => "struct-layout",
    signature_change => "signature-change",
    removed_static_local => "removed-static-local",
    blocked_below_patch => "blocked-below-patch",
    busy_function => "busy-function",
    call_site => "call-site",
    tail_call_relaxed => "tail-call-relaxed",
    cross_unit_helper => "cross-unit-helper",
    ifunc => "ifunc",
    outside_data => "outside-data",
    same_name_statics => "same-name-statics",
}

/// Each fixture's expectations hold for the original and the patched program
/// built from scratch (no hpbuild, no loader, no hpctl involved).
#[test]
fn fixtures_are_consistent() {
    let names = fixture_names();
    assert!(
        names.len() >= 12,
        "expected at least 12 fixtures, found {names:?}"
    );
    // Two fixtures at a time: the check builds and runs each fixture 4 times.
    let failures = std::sync::Mutex::new(String::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for _ in 0..2 {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(name) = names.get(i) else { return };
                let res = Fixture::load(name).and_then(|f| check_consistency(&f));
                if let Err(e) = res {
                    let msg = format!("\n===== fixture {name} is inconsistent =====\n{e}\n");
                    failures.lock().unwrap().push_str(&msg);
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{failures}");
}
