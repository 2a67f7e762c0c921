//! The project's compile database (compile_commands.json, as written by
//! CMake, Meson or Bear) and how a recorded command is turned into the two
//! compiles hpbuild needs.

use crate::bail;
use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::{Component, Path, PathBuf};

#[derive(Deserialize)]
struct RawEntry {
    directory: String,
    file: String,
    #[serde(default)]
    arguments: Option<Vec<String>>,
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    output: Option<String>,
}

/// One translation unit of the project.
#[derive(Debug, Clone)]
pub struct Entry {
    pub directory: PathBuf,
    /// Absolute, lexically normalised path of the source file.
    pub file: PathBuf,
    /// The compiler and its arguments, as recorded.
    pub args: Vec<String>,
    /// The object it writes (the entry's `output`, else its `-o`), if known:
    /// tells apart the entries of a source compiled into several programs.
    pub output: Option<String>,
}

/// Where the compile database is, and a note when hpbuild had to look for
/// it. `choose` is how the user names one (`--compile-db FILE`, or in the
/// git hook `git config hpbuild.compiledb FILE`), for the messages.
pub struct Located {
    pub path: PathBuf,
    pub note: Option<String>,
}

/// `explicit` if given, else `<base>/compile_commands.json`, else the one
/// database in a build directory of the base (CMake and Meson keep it
/// there: `build/`, `out/…`). Several, or none: the error says which to
/// pass, or how to record one.
pub fn locate(base_root: &Path, explicit: Option<&Path>, choose: &str) -> Result<Located> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(Located {
                path: p.to_path_buf(),
                note: None,
            })
        } else {
            Err(Error::new(format!(
                "{choose} {}: no such file",
                p.display()
            )))
        };
    }
    let p = base_root.join("compile_commands.json");
    if p.is_file() {
        return Ok(Located {
            path: p,
            note: None,
        });
    }
    let found = in_build_dirs(base_root);
    let rel = |p: &Path| p.strip_prefix(base_root).unwrap_or(p).display().to_string();
    match found.as_slice() {
        [one] => Ok(Located {
            note: Some(format!(
                "compile database: {} (none in the base directory; {choose} FILE chooses another)",
                rel(one)
            )),
            path: one.clone(),
        }),
        [] => bail!(
            "no compile_commands.json in {} or a build directory of it: record one with \
             `hpbuild capture -- make` (any build command), or let the build write it \
             (CMake -DCMAKE_EXPORT_COMPILE_COMMANDS=ON, meson, `bear -- make`), or pass \
             {choose} FILE",
            base_root.display()
        ),
        several => bail!(
            "no compile_commands.json in {}, but {} in its build directories ({}): pass {choose} {}",
            base_root.display(),
            several.len(),
            several.iter().map(|p| rel(p)).collect::<Vec<_>>().join(", "),
            rel(&several[0])
        ),
    }
}

/// `compile_commands.json` one directory below the base (`build/`,
/// `cmake-build-debug/`), or up to three below `build/`, `out/` or
/// `_build/` (Visual Studio's CMake presets: `out/build/x64-debug`), hidden
/// directories skipped; sorted.
fn in_build_dirs(base_root: &Path) -> Vec<PathBuf> {
    let subdirs = |d: &Path| -> Vec<PathBuf> {
        let Ok(rd) = std::fs::read_dir(d) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .collect()
    };
    let mut found = Vec::new();
    for d in subdirs(base_root) {
        let name = d
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let mut places = vec![d.clone()];
        if matches!(name.as_str(), "build" | "out" | "_build") {
            let below = subdirs(&d);
            places.extend(below.iter().flat_map(|b| subdirs(b)));
            places.extend(below);
        }
        found.extend(
            places
                .into_iter()
                .map(|p| p.join("compile_commands.json"))
                .filter(|p| p.is_file()),
        );
    }
    found.sort();
    found
}

pub fn load(path: &Path) -> Result<Vec<Entry>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::new(format!("cannot read {}: {e}", path.display())))?;
    let raw: Vec<RawEntry> = serde_json::from_str(&text).map_err(|e| {
        Error::new(format!(
            "{} is not a valid compile database: {e}",
            path.display()
        ))
    })?;
    raw.into_iter().map(|r| entry(r, path)).collect()
}

fn entry(r: RawEntry, db: &Path) -> Result<Entry> {
    let args = match (r.arguments, r.command) {
        (Some(a), _) if !a.is_empty() => a,
        (_, Some(c)) => shlex::split(&c).ok_or_else(|| {
            Error::new(format!(
                "{}: cannot split the command for {}",
                db.display(),
                r.file
            ))
        })?,
        _ => bail!(
            "{}: entry for {} has neither arguments nor command",
            db.display(),
            r.file
        ),
    };
    let directory = PathBuf::from(&r.directory);
    let file = normalize(&directory.join(&r.file));
    let output = r.output.or_else(|| {
        args.iter()
            .position(|a| a == "-o")
            .and_then(|i| args.get(i + 1).cloned())
    });
    Ok(Entry {
        directory,
        file,
        args,
        output,
    })
}

/// Lexical normalisation (`a/./b/../c` → `a/c`); the files may not exist
/// under these names in the scratch trees, so no canonicalize.
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

impl Entry {
    /// The command that compiles this unit from `tree` (a copy of
    /// `base_root`) into `output`: the recorded flags, with every path into
    /// the base moved into the tree, dependency-file and output options
    /// replaced, plus one function/data object per section so the differ can
    /// compare function by function. `-ffile-prefix-map` makes `__FILE__`
    /// and debug paths read as in the deployed build.
    pub fn command_in(
        &self,
        base_root: &Path,
        tree: &Path,
        output: &Path,
    ) -> (PathBuf, Vec<String>) {
        let (dir, mut cmd) = self.flags_in(base_root, tree);
        // The differ reads DWARF to explain inlining and to tell line-number
        // shifts from real changes; -g does not change the generated code.
        if !cmd.iter().any(|a| a.starts_with("-g") && a != "-g0") {
            cmd.push("-g".to_string());
        }
        cmd.extend([
            "-c".to_string(),
            "-ffunction-sections".to_string(),
            "-fdata-sections".to_string(),
            "-fno-lto".to_string(),
            format!(
                "-ffile-prefix-map={}={}",
                tree.to_string_lossy(),
                base_root.to_string_lossy()
            ),
            "-o".to_string(),
            output.to_string_lossy().into_owned(),
        ]);
        (dir, cmd)
    }

    /// The command that compiles this unit from `tree` into `output` as the
    /// deployed build did: the recorded flags, moved into the tree, with no
    /// added sections. The base check of each replaced function comes from
    /// this object, since the assembler encodes jumps within one `.text`
    /// differently (`differ::use_deployed_shape`). Only its code is read, so
    /// it is compiled without debug information (`-g0` last): GCC and Clang
    /// generate the same code with and without `-g`, and the compile is a
    /// quarter cheaper.
    pub fn deployed_command_in(
        &self,
        base_root: &Path,
        tree: &Path,
        output: &Path,
    ) -> (PathBuf, Vec<String>) {
        let (dir, mut cmd) = self.flags_in(base_root, tree);
        cmd.extend([
            "-c".to_string(),
            "-g0".to_string(),
            "-fno-lto".to_string(),
            format!(
                "-ffile-prefix-map={}={}",
                tree.to_string_lossy(),
                base_root.to_string_lossy()
            ),
            "-o".to_string(),
            output.to_string_lossy().into_owned(),
        ]);
        (dir, cmd)
    }

    /// Does the recorded command already put every function in its own
    /// section? Then the sectioned compile is the deployed shape.
    pub fn has_function_sections(&self) -> bool {
        self.args
            .iter()
            .rev()
            .find_map(|a| match a.as_str() {
                "-ffunction-sections" => Some(true),
                "-fno-function-sections" => Some(false),
                _ => None,
            })
            .unwrap_or(false)
    }

    /// The command that lists the headers this unit includes when compiled
    /// from `tree` (`-M`: preprocess only, make-style dependencies on stdout).
    pub fn deps_command_in(&self, base_root: &Path, tree: &Path) -> (PathBuf, Vec<String>) {
        let (dir, mut cmd) = self.flags_in(base_root, tree);
        cmd.push("-M".to_string());
        (dir, cmd)
    }

    /// The compiler and the recorded flags with every path into the base
    /// moved into `tree`, and the output, dependency-file and compile-mode
    /// options removed (the callers add their own).
    fn flags_in(&self, base_root: &Path, tree: &Path) -> (PathBuf, Vec<String>) {
        let (from, to) = (base_root.to_string_lossy(), tree.to_string_lossy());
        let moved = |s: &str| s.replace(from.as_ref(), to.as_ref());
        let compiler = self.args.first().cloned().unwrap_or_else(|| "cc".into());
        let mut args = vec![compiler];
        let mut it = self.args.iter().skip(1);
        while let Some(a) = it.next() {
            if matches!(a.as_str(), "-o" | "-MF" | "-MT" | "-MQ") {
                it.next();
                continue;
            }
            let drop = a.starts_with("-o")
                || matches!(
                    a.as_str(),
                    "-c" | "-M" | "-MM" | "-MD" | "-MMD" | "-MP" | "-MG"
                )
                || a.starts_with("-MF")
                || a.starts_with("-MT")
                || a.starts_with("-MQ");
            if matches!(a.as_str(), "-save-temps" | "-save-temps=cwd") {
                // Beside the object (hpbuild's scratch directory), not in
                // the unit's directory: that is the base itself, or the
                // patched tree whose files are hard links to the base's.
                args.push("-save-temps=obj".to_string());
            } else if !drop {
                args.push(moved(a));
            }
        }
        (
            PathBuf::from(moved(&self.directory.to_string_lossy())),
            args,
        )
    }

    /// Path of the source relative to the base root, if it is inside it.
    pub fn relative_to(&self, base_root: &Path) -> Option<String> {
        self.file
            .strip_prefix(normalize(base_root))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_database_in_a_build_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path();
        let err = |r: Result<Located>| r.err().map(|e| e.to_string()).unwrap_or_default();
        let none = err(locate(base, None, "--compile-db"));
        assert!(
            none.contains("`hpbuild capture -- make`")
                && none.find("capture") < none.find("bear")
                && none.ends_with("pass --compile-db FILE"),
            "{none}"
        );
        std::fs::create_dir_all(base.join("build")).unwrap();
        std::fs::write(base.join("build/compile_commands.json"), "[]").unwrap();
        let one = locate(base, None, "--compile-db").unwrap();
        assert_eq!(one.path, base.join("build/compile_commands.json"));
        assert!(one
            .note
            .unwrap()
            .starts_with("compile database: build/compile_commands.json"));

        std::fs::create_dir_all(base.join("out/build/x64")).unwrap();
        std::fs::write(base.join("out/build/x64/compile_commands.json"), "[]").unwrap();
        let two = err(locate(base, None, "git config hpbuild.compiledb"));
        assert!(
            two.ends_with(
                "(build/compile_commands.json, out/build/x64/compile_commands.json): pass git config hpbuild.compiledb build/compile_commands.json"
            ),
            "{two}"
        );
    }

    /// `-save-temps` writes into the unit's directory: the base, or the
    /// patched tree that shares its files. It is moved beside the object.
    #[test]
    fn save_temps_go_beside_the_object() {
        let e = entry(
            RawEntry {
                directory: "/base".into(),
                file: "a.c".into(),
                arguments: None,
                command: Some("gcc -O2 -save-temps -c a.c -o a.o".into()),
                output: None,
            },
            Path::new("db"),
        )
        .unwrap();
        for (_, cmd) in [
            e.command_in(Path::new("/base"), Path::new("/t"), Path::new("/w/o.o")),
            e.deployed_command_in(Path::new("/base"), Path::new("/t"), Path::new("/w/d.o")),
        ] {
            assert!(cmd.contains(&"-save-temps=obj".to_string()), "{cmd:?}");
            assert!(!cmd.contains(&"-save-temps".to_string()), "{cmd:?}");
        }
    }

    #[test]
    fn command_moves_paths_and_replaces_output() {
        let e = entry(
            RawEntry {
                directory: "/base/build".into(),
                file: "../src/a.c".into(),
                arguments: None,
                command: Some("gcc -O2 -I/base/include -MD -MF a.d -o a.o -c ../src/a.c".into()),
                output: None,
            },
            Path::new("db"),
        )
        .unwrap();
        assert_eq!(e.file, PathBuf::from("/base/src/a.c"));
        assert_eq!(
            e.relative_to(Path::new("/base")).as_deref(),
            Some("src/a.c")
        );
        let (dir, cmd) = e.command_in(
            Path::new("/base"),
            Path::new("/tmp/t"),
            Path::new("/tmp/o.o"),
        );
        assert_eq!(dir, PathBuf::from("/tmp/t/build"));
        assert_eq!(cmd[0], "gcc");
        assert!(cmd.contains(&"-I/tmp/t/include".to_string()));
        assert!(!cmd.iter().any(|a| a == "a.o" || a == "-MD" || a == "a.d"));
        assert!(cmd.ends_with(&["-o".to_string(), "/tmp/o.o".to_string()]));
        assert!(cmd.contains(&"-ffunction-sections".to_string()));
        assert!(!e.has_function_sections());

        let (_, deployed) = e.deployed_command_in(
            Path::new("/base"),
            Path::new("/tmp/t"),
            Path::new("/tmp/d.o"),
        );
        assert!(!deployed
            .iter()
            .any(|a| a.contains("-sections") || a == "-g"));
        assert!(deployed.contains(&"-O2".to_string()));
        assert!(deployed.ends_with(&["-o".to_string(), "/tmp/d.o".to_string()]));
    }
}
