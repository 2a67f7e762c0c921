//! Which compile entry of a source hpbuild compiles, when the database has
//! several (a source compiled into several programs, each with its own
//! flags, or twice for a shared library and a static program): the one
//! whose object `--unit-output` names, else the one the link steps say is
//! linked into `--target`, else the first. The note says which, and how to
//! choose another.

use crate::compdb::Entry;
use crate::error::Result;
use crate::links::Links;
use std::path::Path;

/// The compile database with one entry per source.
pub struct Chosen {
    pub kept: Vec<Entry>,
    pub notes: Vec<String>,
}

/// How to choose among a source's entries: the object (`--unit-output`),
/// or the output it is linked into (`--target`, with link steps).
pub struct Want<'a> {
    pub object: Option<&'a str>,
    pub output: Option<&'a str>,
    pub links: Option<&'a Links>,
}

impl Want<'_> {
    fn asked(&self) -> bool {
        self.object.is_some() || (self.output.is_some() && self.links.is_some())
    }

    /// Is `e` the entry asked for?
    fn matches(&self, e: &Entry) -> bool {
        if let Some(w) = self.object {
            return e.output.as_deref().is_some_and(|o| o.ends_with(w));
        }
        match (self.output, self.links) {
            (Some(t), Some(l)) => l.outputs_of_entry(e).iter().any(|o| o.is_named(t)),
            _ => false,
        }
    }

    /// "server/prog.o" or, with link steps, "server/prog.o → server".
    fn describe(&self, e: &Entry) -> String {
        let object = e.output.clone().unwrap_or_else(|| "?".into());
        let outs = self
            .links
            .map(|l| l.outputs_of_entry(e))
            .unwrap_or_default();
        if outs.is_empty() {
            return object;
        }
        let names: Vec<String> = outs.iter().map(|o| o.name()).collect();
        format!("{object} → {}", names.join(", "))
    }

    fn how_to_choose(&self) -> &'static str {
        if self.links.is_some() {
            " — pass --target PROGRAM-OR-LIBRARY to use another"
        } else {
            " — pass --unit-output to use another"
        }
    }
}

/// A source with several entries (compiled into several programs with
/// their own flags) keeps the one asked for (`Want`), else the first; the
/// note says which, and how to choose another.
pub fn one_per_source(entries: Vec<Entry>, want: &Want, base: &Path) -> Result<Chosen> {
    let mut kept: Vec<Entry> = Vec::new();
    let mut notes = Vec::new();
    let mut groups: Vec<Vec<Entry>> = Vec::new();
    for e in entries {
        match groups.iter_mut().find(|g| g[0].file == e.file) {
            Some(g) if !g.iter().any(|o| o.args == e.args) => g.push(e),
            Some(_) => {} // the same command twice
            None => groups.push(vec![e]),
        }
    }
    for g in groups {
        if g.len() == 1 {
            kept.extend(g);
            continue;
        }
        let rel = g[0].relative_to(base).unwrap_or_default();
        let described: Vec<String> = g.iter().map(|e| want.describe(e)).collect();
        let pick = if want.asked() {
            g.iter().position(|e| want.matches(e))
        } else {
            Some(0)
        };
        let Some(pick) = pick else {
            // The option names one program's objects; a source that
            // program does not compile keeps its first entry.
            notes.push(format!(
                "{rel}: {} entries ({}), none {}; used the first",
                g.len(),
                described.join(", "),
                want.object.map_or_else(
                    || format!("linked into {}", want.output.unwrap_or_default()),
                    |o| format!("writes {o}")
                ),
            ));
            kept.push(g.into_iter().next().unwrap());
            continue;
        };
        notes.push(format!(
            "{rel}: {} entries in the compile database ({}); used the one writing {}{}",
            g.len(),
            described.join(", "),
            described[pick],
            if want.asked() {
                ""
            } else {
                want.how_to_choose()
            }
        ));
        kept.push(g.into_iter().nth(pick).unwrap());
    }
    Ok(Chosen { kept, notes })
}
