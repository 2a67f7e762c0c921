//! hotpatch: patch format v1 and the pieces hpctl and hpbuild share with the
//! in-process loader.
pub mod format;
