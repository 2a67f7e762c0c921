//! Which program or shared library a patch is for, from the build's link
//! steps (`links`) and `--target`.
//!
//! - With `--target NAME`, the units the diff affects that the build links
//!   into NAME are patched; a unit linked only into other outputs is left
//!   out with a note (a header fix compares every includer, and some of
//!   them belong to other programs).
//! - Without it, the outputs every affected unit is linked into are the
//!   targets: a shared library by its soname, a program as "the executable".
//!   A unit linked into several (the same objects in a program and in a
//!   shared library) makes a patch for each; the loader patches every one
//!   of them a process has.
//! - Without link steps (a compile database from CMake or Bear), the target
//!   is `--target` or the executable, as before.

use crate::bail;
use crate::compdb::Entry;
use crate::error::Result;
use crate::linkrec::Kind;
use crate::links::{Links, Output};
use std::path::Path;

/// The patch's targets and the units it is made of.
pub struct Targeted {
    /// As the patch records them (`format::Meta::targets`): a library's
    /// name, "" for the executable; none: the executable.
    pub targets: Vec<String>,
    pub units: Vec<Entry>,
    pub notes: Vec<String>,
}

/// Decides the target for the affected `units`.
pub fn choose(
    links: Option<&Links>,
    want: Option<&str>,
    units: Vec<Entry>,
    base: &Path,
) -> Result<Targeted> {
    let Some(links) = links else {
        return Ok(Targeted {
            targets: want.map(String::from).into_iter().collect(),
            units,
            notes: Vec::new(),
        });
    };
    let outputs: Vec<Vec<Output>> = units.iter().map(|e| links.outputs_of_entry(e)).collect();
    let rel = |e: &Entry| e.relative_to(base).unwrap_or_default();
    match want {
        Some(name) => for_named(name, units, &outputs, rel, links),
        None => inferred(units, &outputs, rel, links),
    }
}

/// `--target NAME`: the units linked into NAME (and those the link steps
/// know nothing about).
fn for_named(
    name: &str,
    units: Vec<Entry>,
    outputs: &[Vec<Output>],
    rel: impl Fn(&Entry) -> String,
    links: &Links,
) -> Result<Targeted> {
    let named = outputs.iter().flatten().find(|o| o.is_named(name)).cloned();
    let Some(output) = named else {
        if let Some(o) = links.output_named(name) {
            let mut all: Vec<Output> = Vec::new();
            for o in outputs.iter().flatten() {
                if !all.contains(o) {
                    all.push(o.clone());
                }
            }
            bail!(
                "--target {name}: none of the units the diff changes is linked into {} (they are linked into {})",
                o.describe(),
                list(&all)
            );
        }
        // Not an output the build recorded (a name it is installed under,
        // say): the user's word stands, for every unit.
        return Ok(Targeted {
            targets: vec![name.to_string()],
            units,
            notes: Vec::new(),
        });
    };
    let mut notes = Vec::new();
    let mut kept = Vec::new();
    for (e, outs) in units.into_iter().zip(outputs) {
        if outs.is_empty() || outs.iter().any(|o| o.path == output.path) {
            kept.push(e);
        } else {
            notes.push(format!(
                "{}: not linked into {} (the build links it into {}); left out",
                rel(&e),
                output.name(),
                list(outs)
            ));
        }
    }
    // `output` came from one of the units, so `kept` holds that one at least.
    Ok(Targeted {
        targets: vec![output.target()],
        units: kept,
        notes,
    })
}

/// No `--target`: the one output all the affected units share.
fn inferred(
    units: Vec<Entry>,
    outputs: &[Vec<Output>],
    rel: impl Fn(&Entry) -> String,
    links: &Links,
) -> Result<Targeted> {
    let known: Vec<(&Entry, &Vec<Output>)> = units
        .iter()
        .zip(outputs)
        .filter(|(_, o)| !o.is_empty())
        .collect();
    let Some((_, first)) = known.first() else {
        return Ok(Targeted {
            targets: Vec::new(),
            units,
            notes: Vec::new(),
        });
    };
    let common: Vec<&Output> = first
        .iter()
        .filter(|o| known.iter().all(|(_, outs)| outs.contains(o)))
        .collect();
    if common.is_empty() {
        let each: Vec<String> = known
            .iter()
            .map(|(e, outs)| format!("{} → {}", rel(e), list(outs)))
            .collect();
        bail!(
            "the diff changes units linked into different outputs ({}): build one patch for each with --target NAME",
            each.join("; ")
        );
    }
    let programs: Vec<&Output> = common
        .iter()
        .copied()
        .filter(|o| o.kind != Kind::Shared)
        .collect();
    let mut targets: Vec<String> = common
        .iter()
        .filter(|o| o.kind == Kind::Shared)
        .map(|o| o.target())
        .collect();
    let mut what: Vec<String> = targets.clone();
    if !programs.is_empty() {
        what.push(format!("the executable ({})", list_names(&programs)));
        if !targets.is_empty() {
            targets.push(String::new());
        }
    }
    if targets.len() > format::HP_MAX_TARGETS as usize {
        bail!(
            "the changed units are linked into {} outputs ({}); a patch names at most {}: build one per library with --target NAME",
            targets.len(),
            what.join(", "),
            format::HP_MAX_TARGETS
        );
    }
    let mut notes = vec![if what.len() > 1 {
        format!(
            "the patch is for each of {}: {} links the changed unit(s) into each, and the loader patches every one of them a process has",
            what.join(", "),
            links.path.display()
        )
    } else {
        format!(
            "the patch is for {}: {} links the changed unit(s) into it",
            what[0],
            links.path.display()
        )
    }];
    notes.extend(left_as_is(&known, &common, rel));
    Ok(Targeted {
        targets,
        units,
        notes,
    })
}

/// A unit also linked into an output some other changed unit is not: that
/// output keeps its old code, and the note says so.
fn left_as_is(
    known: &[(&Entry, &Vec<Output>)],
    common: &[&Output],
    rel: impl Fn(&Entry) -> String,
) -> Vec<String> {
    known
        .iter()
        .filter_map(|(e, outs)| {
            let rest: Vec<Output> = outs
                .iter()
                .filter(|o| !common.contains(o))
                .cloned()
                .collect();
            (!rest.is_empty()).then(|| {
                format!(
                    "{} is also linked into {}, which this patch leaves as it is (not every changed unit is linked into it)",
                    rel(e),
                    list(&rest)
                )
            })
        })
        .collect()
}

fn list(outputs: &[Output]) -> String {
    outputs
        .iter()
        .map(Output::describe)
        .collect::<Vec<_>>()
        .join(", ")
}

fn list_names(outputs: &[&Output]) -> String {
    outputs
        .iter()
        .map(|o| o.name())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linkrec::{from_ar, from_cc};
    use std::path::PathBuf;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    /// core.o goes into libcore.so.2 and, through libcore.a, into `tool`;
    /// cli.o only into `tool`; srv.o only into `server`.
    fn links() -> Links {
        let raw = vec![
            from_cc(
                "/b",
                &v("-shared -o libcore.so.2 core.o -Wl,-soname,libcore.so.2"),
            )
            .unwrap(),
            from_ar("/b", &v("rcs libcore.a core.o")).unwrap(),
            from_cc("/b", &v("-o tool cli.o libcore.a")).unwrap(),
            from_cc("/b", &v("-o server srv.o")).unwrap(),
        ];
        Links::new(raw, PathBuf::from("/b/link_commands.json"))
    }

    fn unit(name: &str) -> Entry {
        Entry {
            directory: PathBuf::from("/b"),
            file: PathBuf::from(format!("/b/{name}.c")),
            args: v(&format!("cc -c {name}.c")),
            output: Some(format!("{name}.o")),
        }
    }

    fn choose_for(want: Option<&str>, units: &[&str]) -> Result<Targeted> {
        let l = links();
        choose(
            Some(&l),
            want,
            units.iter().map(|u| unit(u)).collect(),
            Path::new("/b"),
        )
    }

    #[test]
    fn the_one_shared_output_is_the_target() {
        let t = choose_for(None, &["srv"]).unwrap();
        assert!(t.targets.is_empty());
        assert!(
            t.notes[0].contains("the executable (server)"),
            "{:?}",
            t.notes
        );
        let t = choose_for(None, &["cli"]).unwrap();
        assert!(t.targets.is_empty());
    }

    #[test]
    fn units_of_different_outputs_are_refused_without_target() {
        let e = choose_for(None, &["srv", "cli"]).err().unwrap().to_string();
        assert!(
            e.contains("srv.c → server (program); cli.c → tool (program)"),
            "{e}"
        );
        assert!(e.contains("--target"), "{e}");
    }

    #[test]
    fn a_unit_in_a_library_and_a_program_is_patched_in_each() {
        let t = choose_for(None, &["core"]).unwrap();
        assert_eq!(t.targets, ["libcore.so.2", ""]);
        assert!(
            t.notes[0].starts_with("the patch is for each of libcore.so.2, the executable (tool)"),
            "{:?}",
            t.notes
        );
    }

    #[test]
    fn target_picks_the_output_and_leaves_out_units_not_linked_into_it() {
        let t = choose_for(Some("libcore.so.2"), &["core", "cli"]).unwrap();
        assert_eq!(t.targets, ["libcore.so.2"]);
        assert_eq!(t.units.len(), 1);
        assert_eq!(
            t.notes,
            ["cli.c: not linked into libcore.so.2 (the build links it into tool (program)); left out"]
        );
        let t = choose_for(None, &["core", "cli"]).unwrap();
        assert!(t.targets.is_empty(), "{:?}", t.targets);
        assert_eq!(
            t.notes[1],
            "core.c is also linked into libcore.so.2 (shared library), which this patch leaves as it is (not every changed unit is linked into it)"
        );
        let t = choose_for(Some("tool"), &["core", "cli"]).unwrap();
        assert_eq!((t.targets, t.units.len()), (vec![String::new()], 2));
        // A name the build does not know stands as given.
        let t = choose_for(Some("libcore.so"), &["core"]).unwrap();
        assert_eq!(t.targets, ["libcore.so"]);
        // An output none of the units is linked into is refused.
        let e = choose_for(Some("server"), &["core"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("--target server: none of the units the diff changes is linked into server (program) (they are linked into libcore.so.2 (shared library), tool (program))"),
            "{e}"
        );
    }
}
