//! The JSON manifest written beside the patch (`fix.hpo` → `fix.json`): the
//! same facts as the metadata section, plus provenance (base, diff hash,
//! compiler and flags) and why each function is in the patch.

use crate::edits::{clone_parent, Edited, LineTableEdit};
use differ::{Change, UnitDiff};
use serde::Serialize;

#[derive(Serialize)]
pub struct Manifest {
    pub format_version: u32,
    pub patch_id: String,
    pub patch_object: String,
    /// The patch object's content hash, hex: SHA-256 of the file with the
    /// hash's own 32 bytes (in `.hotpatch.meta`) read as zero — the value
    /// stored there, which hpctl and the loader check before applying
    /// (format/README.md). Not `sha256sum` of the file, which reads those
    /// bytes as they are.
    pub sha256: String,
    pub reviewable_source: String,
    pub base: String,
    /// The shared library the patch is for (`hpbuild --target`, or inferred
    /// from the link steps); absent: the executable.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// A patch for several outputs (its units are linked into each): their
    /// names, "" for the executable. Then `target` is absent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    pub diff: DiffInfo,
    pub compiler: String,
    pub units: Vec<UnitInfo>,
    /// Functions of the running program the patch redirects.
    pub replaced: Vec<Replaced>,
    /// Functions only the patch has.
    pub added: Vec<String>,
    /// Variables only the patch has: defined (with their initialisers) in
    /// the reviewable source, allocated by the loader.
    pub added_data: Vec<String>,
    /// Present when the patch is signed (`hpbuild --sign`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed: Option<Signed>,
    pub notes: Vec<String>,
}

impl Manifest {
    /// Records what the patch is for, as `format::Meta::targets` has it.
    pub fn set_targets(&mut self, targets: Vec<String>) {
        match targets.as_slice() {
            [one] => self.target = one.clone(),
            [] => {}
            _ => self.targets = targets,
        }
    }
}

/// The key a signed patch was signed with.
#[derive(Serialize)]
pub struct Signed {
    pub algorithm: &'static str,
    /// Hex SHA-256 of the DER public key (`format::key_fingerprint`), the
    /// value whose start hpctl and the loader show in their messages.
    pub key_fingerprint: String,
    /// The raw 32-byte ed25519 public key, hex.
    pub public_key: String,
}

#[derive(Serialize)]
pub struct DiffInfo {
    pub path: String,
    /// FNV-1a 64 of the diff file's bytes, hex.
    pub fnv1a64: String,
    pub files: Vec<String>,
}

#[derive(Serialize)]
pub struct UnitInfo {
    pub source: String,
    /// The STT_FILE name statics are resolved under.
    pub symbol_file: String,
    pub original_command: Vec<String>,
    pub patched_command: Vec<String>,
    /// Functions the source diff edits (source names; a compiler clone
    /// counts through its parent).
    pub edited_in_diff: Vec<String>,
    /// Where the objects' DWARF line table, not the tree-sitter parse, said
    /// which function a hunk edits (the parse was unsure or disagreed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub edited_by_line_table: Vec<LineTableEdit>,
    /// Functions the diff edits whose compiled code did not change (a
    /// comment, a reformatting, an edit the optimiser folds away): they are
    /// not shipped.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub edited_not_shipped: Vec<String>,
}

#[derive(Serialize)]
pub struct Replaced {
    pub name: String,
    /// Source file for a static function, empty for a global.
    pub file: String,
    pub old_size: u64,
    pub fingerprint: String,
    pub redirect: &'static str,
    pub why: Vec<String>,
}

/// Reasons for one function: the source view first (edited in the diff,
/// itself or as the parent of a compiler clone; which view said so when the
/// DWARF line table did), then what the object comparison saw.
pub fn reasons(diff: &UnitDiff, name: &str, edited: &Edited) -> Vec<String> {
    let mut why = Vec::new();
    let parent = clone_parent(name);
    let source = |f: &str| -> String {
        let places: Vec<String> = edited
            .by_line_table
            .iter()
            .filter(|e| e.function == f)
            .map(|e| format!("{}: {}", e.lines, e.because))
            .collect();
        if places.is_empty() {
            String::new()
        } else {
            format!(" (found by the DWARF line table; {})", places.join("; "))
        }
    };
    if edited.functions.iter().any(|e| e == name) {
        why.push(format!("edited in the diff{}", source(name)));
    } else if parent != name && edited.functions.iter().any(|e| e == parent) {
        why.push(format!(
            "edited in the diff (in {parent}, whose compiler clone it is){}",
            source(parent)
        ));
    } else {
        why.push("not edited in the diff, but its compiled code changed".to_string());
    }
    if let Some(v) = diff.functions.iter().find(|f| f.name == name) {
        why.extend(v.reasons.iter().cloned());
    }
    why
}

pub fn added_functions(diff: &UnitDiff) -> impl Iterator<Item = &str> {
    diff.functions
        .iter()
        .filter(|f| f.change == Change::New)
        .map(|f| f.name.as_str())
}

/// The functions the diff edits that compiled to the same code: each has a
/// symbol in the object and neither it nor a compiler clone of it ships. An
/// edited function with no symbol (inlined everywhere) is explained by the
/// callers that ship instead.
pub fn edited_not_shipped(diff: &UnitDiff, edited: &Edited) -> Vec<String> {
    let of = |f: &str, name: &str| f == name || clone_parent(f) == name;
    edited
        .functions
        .iter()
        .filter(|name| {
            let verdicts: Vec<_> = diff
                .functions
                .iter()
                .filter(|v| of(&v.name, name))
                .collect();
            !verdicts.is_empty() && verdicts.iter().all(|v| v.change == Change::Unchanged)
        })
        .cloned()
        .collect()
}
