//! The compiler × flags matrix every fixture runs in (issue 3 item 7).
//!
//! Every axis is covered without running the full product: each optimisation
//! level with both compilers (default PIE), and `-no-pie` and
//! `-fcf-protection=full` at -O2 with both compilers. A fixture adds its own
//! `cflags` after the configuration's (so a fixture flag wins), and may mark
//! configurations `unsupported` or `expected_fail`, each with a reason.

/// One configuration of the matrix.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Stable name, used in fixture.json and in test names (`-` → `_`).
    pub name: &'static str,
    /// The compiler recorded in compile_commands.json and used to link.
    pub cc: &'static str,
    pub cflags: &'static [&'static str],
    /// Extra link arguments (after the objects).
    pub ldflags: &'static [&'static str],
}

pub const MATRIX: &[Config] = &[
    Config {
        name: "gcc-O0",
        cc: "gcc",
        cflags: &["-O0"],
        ldflags: &[],
    },
    Config {
        name: "gcc-O2",
        cc: "gcc",
        cflags: &["-O2"],
        ldflags: &[],
    },
    Config {
        name: "gcc-O3",
        cc: "gcc",
        cflags: &["-O3"],
        ldflags: &[],
    },
    Config {
        name: "clang-O0",
        cc: "clang",
        cflags: &["-O0"],
        ldflags: &[],
    },
    Config {
        name: "clang-O2",
        cc: "clang",
        cflags: &["-O2"],
        ldflags: &[],
    },
    Config {
        name: "clang-O3",
        cc: "clang",
        cflags: &["-O3"],
        ldflags: &[],
    },
    Config {
        name: "gcc-O2-nopie",
        cc: "gcc",
        cflags: &["-O2", "-fno-pie"],
        ldflags: &["-no-pie"],
    },
    Config {
        name: "clang-O2-nopie",
        cc: "clang",
        cflags: &["-O2", "-fno-pie"],
        ldflags: &["-no-pie"],
    },
    Config {
        name: "gcc-O2-cet",
        cc: "gcc",
        cflags: &["-O2", "-fcf-protection=full"],
        ldflags: &[],
    },
    Config {
        name: "clang-O2-cet",
        cc: "clang",
        cflags: &["-O2", "-fcf-protection=full"],
        ldflags: &[],
    },
];

/// The configuration used where one is enough (CLI tests, `--base` tests).
pub const DEFAULT_CONFIG: &str = "gcc-O2";

/// The configurations the consistency check (no tools) builds each fixture
/// with: one per compiler, at different levels, is enough to prove the
/// expected answers; the behaviour must not depend on the configuration.
pub const CONSISTENCY_CONFIGS: &[&str] = &["gcc-O2", "clang-O0"];

pub fn config(name: &str) -> Option<&'static Config> {
    MATRIX.iter().find(|c| c.name == name)
}

/// Does `pattern` (a config name, or a prefix ending in `*`) match `name`?
pub fn config_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// A fixture's configuration resolved to the exact compiler and flags.
#[derive(Debug, Clone)]
pub struct Build {
    pub name: String,
    pub cc: String,
    /// Every compile command's flags (and the link's, before the objects).
    pub cflags: Vec<String>,
    /// Link arguments after the objects (fixture's, then the config's).
    pub ldflags: Vec<String>,
}
