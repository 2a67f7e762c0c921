//! What each object of the build is linked into, from the link and archive
//! steps `hpbuild capture` recorded (link_commands.json, `linkrec`).
//!
//! An object reaches a program or a shared library directly, or through
//! archives and relocatable objects (`lapi.o` → `liblua.a` → `lua`). Those
//! two are the outputs a patch can be for: a program's code is patched in
//! its processes, a library's wherever it is loaded. A program linked
//! against a shared library does not contain the library's code, so the
//! walk stops there.

use crate::compdb::{normalize, Entry};
use crate::error::{Error, Result};
use crate::linkrec::{Kind, LinkStep, FILE_NAME};
use std::path::{Path, PathBuf};

/// One step, its paths resolved.
struct Step {
    output: PathBuf,
    kind: Kind,
    inputs: Vec<PathBuf>,
    soname: Option<String>,
}

/// A program or shared library the build makes.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    pub path: PathBuf,
    pub kind: Kind,
    pub soname: Option<String>,
}

impl Output {
    /// How messages name it: the file name.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The patch's target for it: a library by the name the dynamic loader
    /// knows it by (its soname, else its file name); "" for a program (the
    /// loader patches the executable).
    pub fn target(&self) -> String {
        match self.kind {
            Kind::Shared => self.soname.clone().unwrap_or_else(|| self.name()),
            _ => String::new(),
        }
    }

    /// Does `--target NAME` name this output: its soname, file name, or the
    /// end of its path?
    pub fn is_named(&self, name: &str) -> bool {
        self.soname.as_deref() == Some(name) || self.name() == name || self.path.ends_with(name)
    }

    /// "liblua.so.5 (shared library)", "lua (program)".
    pub fn describe(&self) -> String {
        let what = if self.kind == Kind::Shared {
            "shared library"
        } else {
            "program"
        };
        let name = match self.kind {
            Kind::Shared => self.target(),
            _ => self.name(),
        };
        format!("{name} ({what})")
    }
}

/// The build's link graph.
pub struct Links {
    steps: Vec<Step>,
    /// Where it was read from, for the notes.
    pub path: PathBuf,
}

impl Links {
    /// The link steps recorded beside the compile database `db`
    /// (link_commands.json), else those of the Ninja build it sits in
    /// (`ninja`), if any.
    pub fn beside(db: &Path) -> Result<Option<Links>> {
        let path = db.with_file_name(FILE_NAME);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let dir = db.parent().unwrap_or(Path::new("."));
                return Ok(crate::ninja::link_steps(dir)
                    .map(|steps| Links::new(steps, dir.join("build.ninja"))));
            }
            Err(e) => return Err(Error::new(format!("cannot read {}: {e}", path.display()))),
        };
        let raw: Vec<LinkStep> = serde_json::from_str(&text).map_err(|e| {
            Error::new(format!(
                "{} is not a valid link record: {e} (run `hpbuild capture` again, or delete it)",
                path.display()
            ))
        })?;
        Ok(Some(Links::new(raw, path)))
    }

    pub(crate) fn new(raw: Vec<LinkStep>, path: PathBuf) -> Links {
        let outputs: Vec<PathBuf> = raw
            .iter()
            .map(|s| resolve(&s.directory, &s.output))
            .collect();
        let steps = raw
            .iter()
            .map(|s| {
                let mut inputs: Vec<PathBuf> =
                    s.inputs.iter().map(|i| resolve(&s.directory, i)).collect();
                inputs.extend(s.libs.iter().filter_map(|l| find_lib(s, l, &outputs)));
                Step {
                    output: resolve(&s.directory, &s.output),
                    kind: s.kind,
                    inputs,
                    soname: s.soname.clone(),
                }
            })
            .collect();
        Links { steps, path }
    }

    /// The programs and shared libraries `object` is linked into, in the
    /// order the build made them.
    pub fn outputs_of(&self, object: &Path) -> Vec<Output> {
        let mut found: Vec<Output> = Vec::new();
        let mut reached = vec![normalize(object)];
        let mut i = 0;
        while i < reached.len() {
            let here = reached[i].clone();
            for s in self.steps.iter().filter(|s| s.inputs.contains(&here)) {
                match s.kind {
                    Kind::Archive | Kind::Relocatable => {
                        if !reached.contains(&s.output) {
                            reached.push(s.output.clone());
                        }
                    }
                    Kind::Executable | Kind::Shared => {
                        if !found.iter().any(|o| o.path == s.output) {
                            found.push(Output {
                                path: s.output.clone(),
                                kind: s.kind,
                                soname: s.soname.clone(),
                            });
                        }
                    }
                }
            }
            i += 1;
        }
        found
    }

    /// The program or shared library of the build that `name` names (as
    /// `--target` does), if any.
    pub fn output_named(&self, name: &str) -> Option<Output> {
        self.steps
            .iter()
            .filter(|s| matches!(s.kind, Kind::Executable | Kind::Shared))
            .map(|s| Output {
                path: s.output.clone(),
                kind: s.kind,
                soname: s.soname.clone(),
            })
            .find(|o| o.is_named(name))
    }

    /// The outputs of a compile entry's object (none when its object is
    /// unknown or the build never linked it).
    pub fn outputs_of_entry(&self, e: &Entry) -> Vec<Output> {
        match &e.output {
            Some(o) => self.outputs_of(&e.directory.join(o)),
            None => Vec::new(),
        }
    }
}

fn resolve(directory: &str, path: &str) -> PathBuf {
    normalize(&Path::new(directory).join(path))
}

/// `-lNAME` as the linker finds it among the build's own outputs: in the
/// step's `-L` directories, `libNAME.so` before `libNAME.a`. A system
/// library is not an output of the build, and not part of the graph.
fn find_lib(step: &LinkStep, name: &str, outputs: &[PathBuf]) -> Option<PathBuf> {
    step.lib_dirs.iter().find_map(|d| {
        ["so", "a"].iter().find_map(|ext| {
            let p = resolve(&step.directory, &format!("{d}/lib{name}.{ext}"));
            outputs.contains(&p).then_some(p)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linkrec::{from_ar, from_cc};

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    /// Lua's own Makefile plus a shared build: objects into an archive,
    /// the archive into two programs (one through -L/-l), and PIC objects
    /// into a shared library the third program links to.
    fn lua() -> Links {
        let raw = vec![
            from_ar("/b/src", &v("rcu liblua.a lapi.o lvm.o")).unwrap(),
            from_cc("/b/src", &v("-o lua lua.o liblua.a -lm")).unwrap(),
            from_cc("/b/src", &v("-o luac luac.o -L. -llua")).unwrap(),
            from_cc(
                "/b/src",
                &v("-shared -o pic/liblua.so.5.4 pic/lapi.o pic/lvm.o -Wl,-soname,liblua.so.5"),
            )
            .unwrap(),
            from_cc("/b/src", &v("-o lua-shared lua.o pic/liblua.so.5.4")).unwrap(),
        ];
        Links::new(raw, PathBuf::from("/b/link_commands.json"))
    }

    fn names(o: &[Output]) -> Vec<String> {
        o.iter().map(Output::name).collect()
    }

    #[test]
    fn an_object_reaches_programs_through_archives_and_libraries_directly() {
        let l = lua();
        assert_eq!(
            names(&l.outputs_of(Path::new("/b/src/lvm.o"))),
            v("lua luac")
        );
        let pic = l.outputs_of(Path::new("/b/src/./pic/lvm.o"));
        assert_eq!(names(&pic), v("liblua.so.5.4"));
        assert_eq!(pic[0].target(), "liblua.so.5");
        assert!(pic[0].is_named("liblua.so.5") && pic[0].is_named("pic/liblua.so.5.4"));
        assert!(!pic[0].is_named("lua"));
        // A program linked to the library does not contain its code.
        assert_eq!(
            names(&l.outputs_of(Path::new("/b/src/lua.o"))),
            v("lua lua-shared")
        );
        assert!(l.outputs_of(Path::new("/b/src/unlinked.o")).is_empty());
    }
}
