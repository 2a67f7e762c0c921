//! The one definition of everything the patch writer (hpbuild), the client
//! (hpctl), the differ and the in-process C loader must agree on:
//!
//! * [`layout`](layout.rs): the byte layout of patch format v1's metadata
//!   section, as `pub const` lines that `loader/build.rs` turns into the C
//!   header `hp_format.h`;
//! * [`patch`]: reading and writing that metadata, the fingerprint, the
//!   content hash that seals a patch file (`seal`, `verify_content_hash`);
//! * [`protocol`]: the control-socket protocol (also turned into
//!   `hp_protocol.h`) and a client for it;
//! * [`mask`]: which bytes of compiled code the linker may still rewrite,
//!   so a fingerprint taken on an object matches the linked program.
//!
//! The crate depends on nothing but `object` (to find the metadata section
//! in a patch object) and `sha2` (the content hash), so the differ can use
//! the fingerprint without building the C loader.

pub mod mask;
mod patch;
pub mod protocol;

pub use patch::*;
