//! The JSON manifest written beside the patch (`fix.hpo` → `fix.json`): the
//! same facts as the metadata section, plus provenance (base, diff hash,
//! compiler and flags) and why each function is in the patch.

use differ::{Change, UnitDiff};
use serde::Serialize;

#[derive(Serialize)]
pub struct Manifest {
    pub format_version: u32,
    pub patch_id: String,
    pub patch_object: String,
    pub reviewable_source: String,
    pub base: String,
    pub diff: DiffInfo,
    pub compiler: String,
    pub units: Vec<UnitInfo>,
    /// Functions of the running program the patch redirects.
    pub replaced: Vec<Replaced>,
    /// Functions only the patch has.
    pub added: Vec<String>,
    pub notes: Vec<String>,
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
    /// Functions the source diff edits (tree-sitter view).
    pub edited_in_diff: Vec<String>,
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

/// Reasons for one function: the source view first (edited in the diff),
/// then what the object comparison saw.
pub fn reasons(diff: &UnitDiff, name: &str, edited: &[String]) -> Vec<String> {
    let mut why = Vec::new();
    if edited.iter().any(|e| e == name) {
        why.push("edited in the diff".to_string());
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
