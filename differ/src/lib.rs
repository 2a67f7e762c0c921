//! The differ: compares the original and the patched object file of one
//! translation unit, both compiled with `-ffunction-sections -fdata-sections`,
//! function by function, and decides what a patch must ship.
//!
//! The object files — not the source diff — are the source of truth: at -O2
//! the compiler changes code the diff never mentions (inlining, IPA), so every
//! function whose bytes or relocations differ ships.
//!
//! Inside, in pipeline order ([`compare_with`] runs them): `elf` validates
//! and models an object, `dwarf` reads its debug info; `correlate` pairs
//! patched symbols with original ones (clones and static locals are
//! renumbered between compilations; [`names`] reads such names); `normalize`
//! turns code and data into a form where relocation targets are named by
//! what they mean (string literals by contents, statics by original name);
//! `compare` gives verdicts and refusals (`explain` words the reasons,
//! `lines` spots `__LINE__`-only changes); `why` adds the reasons that need
//! DWARF or callees; `refuse` refuses layout, signature and static-local
//! changes; `plan` computes what ships, the routes and the replacements;
//! `deployed` takes each replacement's base check (size, masks, fingerprint)
//! from the unit compiled as the deployed build was ([`use_deployed_shape`]);
//! `outside` ships the same functions from a compile that reaches outside
//! data through the GOT ([`ship_from`]) when they reference it directly.
//!
//! Entry point: [`compare`]. Its result, [`UnitDiff`], is consumed by
//! hpbuild's emitter, which copies the planned sections of the *patched*
//! object into the patch object and routes every relocation as the plan says.

mod compare;
mod correlate;
mod deployed;
mod dwarf;
mod elf;
mod explain;
mod lines;
pub mod names;
mod normalize;
mod outside;
mod plan;
mod refuse;
pub mod source_lines;
mod why;

pub use deployed::use_deployed_shape;
pub use outside::{direct_outside_refs, ship_from};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// What happened to one function between the two objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Unchanged,
    /// Exists in both, code differs: it ships and the old one is redirected.
    Changed,
    /// Only in the patched object: it ships, nothing is redirected.
    New,
    /// Only in the original object: nothing ships for it.
    Removed,
}

/// The verdict on one function symbol.
#[derive(Debug, Clone, Serialize)]
pub struct FunctionVerdict {
    /// Symbol name (as in the patched object, or the original one if removed).
    pub name: String,
    pub local: bool,
    pub change: Change,
    /// Human-readable reasons, e.g. "code differs at offset 0x12",
    /// "calls puts instead of printf", "new function".
    pub reasons: Vec<String>,
}

/// A change the patch cannot carry into a running process.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    /// The variable, type or function concerned.
    pub symbol: String,
    /// One sentence naming the symbol and saying what to do instead.
    pub message: String,
}

/// A function of the running program that the patch replaces.
#[derive(Debug, Clone, Serialize)]
pub struct Replacement {
    /// Name in the running program (= name in the original object).
    pub name: String,
    /// True for a static function (resolved by file + name).
    pub local: bool,
    /// Index in the patched object's symbol table of the new code.
    pub patched_symbol: usize,
    /// Size of the original function: from the sectioned compile, or (after
    /// [`use_deployed_shape`]) as the deployed build has it.
    pub old_size: u64,
    /// `format::fingerprint` of the original function's bytes, with
    /// `masks` applied (same origin as `old_size`).
    pub fingerprint: u64,
    /// (offset, length) ranges of the original code that depend on linking:
    /// every relocated field, widened to the whole instruction tail for
    /// relocation types the linker may relax (GOTPCRELX, REX_GOTPCRELX,
    /// GOTTPOFF: the 3 bytes before the field too).
    pub masks: Vec<(u32, u32)>,
}

/// Where a relocation target of shipped code lives once patched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Route {
    /// Inside a section the patch ships: keep the reference within the patch.
    Shipped,
    /// A global symbol of the running program (or of a shared library).
    BaseGlobal(String),
    /// A static symbol of the running program: `name` is the *original*
    /// object's name (e.g. a static local's `calls.0`), found after the
    /// STT_FILE entry `UnitDiff::file`.
    BaseLocal(String),
}

/// Everything the emitter needs from one translation unit.
#[derive(Debug, Clone, Serialize)]
pub struct UnitDiff {
    /// The STT_FILE name of the original object (e.g. "main.c").
    pub file: String,
    pub functions: Vec<FunctionVerdict>,
    pub refusals: Vec<Refusal>,
    pub replacements: Vec<Replacement>,
    /// Section indices of the patched object to copy into the patch: changed
    /// and new functions, new data, and the anonymous read-only data they use
    /// (string literals, constants, jump tables).
    pub ship_sections: Vec<usize>,
    /// For every symbol index of the patched object that a relocation in a
    /// shipped section targets: where it goes. A section symbol of a
    /// non-shipped section is routed to the named symbol that section holds;
    /// the relocation addend is kept as it is.
    pub routes: BTreeMap<usize, Route>,
    /// Facts for the user that change nothing shipped, e.g.
    /// "f: only line numbers changed (__LINE__ moved by +2), not shipped",
    /// or that the objects carry no DWARF so reasons are less precise.
    pub notes: Vec<String>,
}

/// Optional knowledge from outside the objects.
#[derive(Debug, Clone, Default)]
pub struct Hints {
    /// Functions the source diff edits (the builder's tree-sitter view).
    /// An edited function is never treated as "only line numbers changed",
    /// and an edited inlined-only static is named as the inlined change.
    pub edited: Vec<String>,
    /// The lines the source diff removes and adds, per file. An edited
    /// function whose edit compiled to no code (an `assert()` under
    /// `NDEBUG`, a comment) and whose other bytes differ only in shifted
    /// `__LINE__` values is not shipped.
    pub line_edits: Vec<LineEdit>,
}

/// One file's edit as line numbers: `removed` in the original text,
/// `added` in the patched text (1-based, as DWARF counts).
#[derive(Debug, Clone, Default)]
pub struct LineEdit {
    /// The path as the diff names it; matched against the end of DWARF's
    /// file names.
    pub file: String,
    pub removed: Vec<u64>,
    pub added: Vec<u64>,
}

/// What the rules consult besides the two objects.
pub(crate) struct Context {
    pub orig_dbg: Option<dwarf::Debug>,
    pub pat_dbg: Option<dwarf::Debug>,
    pub edited: Vec<String>,
    pub line_edits: Vec<LineEdit>,
}

impl Context {
    pub fn edited(&self, name: &str) -> bool {
        self.edited.iter().any(|e| e == name)
    }
}

impl UnitDiff {
    /// True when nothing needs shipping.
    pub fn is_empty(&self) -> bool {
        self.ship_sections.is_empty()
    }
}

/// The objects could not be compared.
#[derive(Debug, Clone)]
pub struct DiffError(pub String);

impl fmt::Display for DiffError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DiffError {}

/// Compares `original` with `patched` (the bytes of two ELF x86-64
/// relocatable objects of the same translation unit).
///
/// Never panics on malformed input: anything that is not a well-formed
/// ELF64 x86-64 relocatable object is a [`DiffError`].
pub fn compare(original: &[u8], patched: &[u8]) -> Result<UnitDiff, DiffError> {
    compare_with(original, patched, &Hints::default())
}

/// [`compare`] with [`Hints`] from the source view.
///
/// Objects compiled with `-g` give better answers: reasons from DWARF
/// (inlining, clones), `__LINE__`-only changes recognised, and refusals of
/// struct layout and signature changes. Without DWARF these fall back to the
/// conservative answer and a note says so.
pub fn compare_with(original: &[u8], patched: &[u8], hints: &Hints) -> Result<UnitDiff, DiffError> {
    let orig = elf::parse(original, "original")?;
    let pat = elf::parse(patched, "patched")?;
    let file = orig.file.clone().unwrap_or_default();
    let ctx = Context {
        orig_dbg: dwarf::load(&orig),
        pat_dbg: dwarf::load(&pat),
        edited: hints.edited.clone(),
        line_edits: hints.line_edits.clone(),
    };

    let corr = correlate::correlate(&orig, &pat, ctx.orig_dbg.as_ref(), ctx.pat_dbg.as_ref());
    let mut analysis = compare::analyze(&orig, &pat, &corr, &file, &ctx);
    why::annotate(&mut analysis, &ctx);
    let more = refuse::check(&analysis, &corr, &file, &ctx);
    analysis.refusals.extend(more);
    if ctx.orig_dbg.is_none() || ctx.pat_dbg.is_none() {
        analysis.notes.push(format!(
            "{file}: no DWARF in the objects (compile with -g): reasons are less precise, \
             __LINE__-only changes ship, struct layout and signature changes are not checked"
        ));
    }
    let plan = plan::plan(&analysis, &corr, &file);
    let replacements = plan::replacements(&analysis);

    let mut functions = Vec::with_capacity(analysis.funcs.len());
    for f in &analysis.funcs {
        let (obj, sym) = match (f.patched, f.original) {
            (Some(p), _) => (&pat, p),
            (None, Some(o)) => (&orig, o),
            (None, None) => continue,
        };
        let s = &obj.symbols[sym];
        let mut reasons = f.reasons.clone();
        if let (Some(p), true) = (f.patched, matches!(f.change, Change::Changed | Change::New)) {
            if let Some(sec) = pat.symbols[p].section {
                reasons.extend(plan.notes.get(&sec).into_iter().flatten().cloned());
            }
        }
        functions.push(FunctionVerdict {
            name: s.name.clone(),
            local: !s.global,
            change: f.change,
            reasons,
        });
    }
    let mut refusals = analysis.refusals.clone();
    refusals.extend(plan.refusals);

    Ok(UnitDiff {
        file,
        functions,
        refusals,
        replacements,
        ship_sections: plan.ship.into_iter().collect(),
        routes: plan.routes,
        notes: analysis.notes.clone(),
    })
}
