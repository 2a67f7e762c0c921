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
//!   so a fingerprint taken on an object matches the linked program;
//! * [`signature`](signature.rs): the optional ed25519 signature section
//!   (layout in `signature_layout.rs`, also turned into `hp_signature.h`),
//!   signing, and the policy of a process configured with a public key.
//!
//! The crate depends on `object` (to find the metadata section in a patch
//! object), `sha2` (the content hash) and `ed25519-dalek` (signatures and
//! the PEM key files), so the differ can use the fingerprint without
//! building the C loader.

pub mod mask;
mod patch;
pub mod protocol;
mod signature;

pub use patch::*;
pub use signature::*;
