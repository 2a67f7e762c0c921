//! The C source side of hpbuild.
//!
//! * [`source`]: tree-sitter analysis of one C file — its top-level items,
//!   which of them a diff touches, and item-by-item comparison of two
//!   versions ([`changed_items`]).
//! * [`generate()`]: the reviewable, compilable C source of a patch
//!   (kGraft-style): shipped functions verbatim, plus the includes, macros,
//!   types and `extern` declarations they need.

pub mod changed;
pub mod generate;
pub mod source;
mod syntax;

pub use changed::{changed_items, Change, ChangedItem};
pub use generate::{
    generate, generate_parsed, generate_unit, OutsideSymbol, PatchSource, SymbolKind, UnitSource,
};
pub use source::{parse, CFile, Conditional, DeclParts, Item, ItemKind, SourceError};
