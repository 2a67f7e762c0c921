// Patch format v1, optional signature: the byte layout of the
// `.hotpatch.sig` section and the names the loader's key configuration
// uses.
//
// Like `layout.rs`, this file is the single definition: `signature.rs`
// `include!`s it and `loader/build.rs` turns every `pub const` line into a
// `#define` of the generated C header `hp_signature.h`.
//
// A signed patch has exactly one non-allocated section HP_SIG_SECTION of
// HP_SIG_SIZE bytes. Its signature is ed25519 (RFC 8032, pure Ed25519) over
// the message
//     HP_SIG_CONTEXT, its terminating NUL, then a 32-byte digest
// where the digest is the SHA-256 of the whole patch file with two fields
// read as zero: the content hash (HP_HDR_SHA256 of `.hotpatch.meta`) and
// the signature itself (HP_SIG_SIGNATURE). Every other byte — code,
// relocations, metadata, the section headers, this section's magic,
// algorithm and public key — is covered. The content hash is stored after
// the signature and covers it too, so a loader that predates signatures
// still accepts a signed patch (it checks the content hash only).

/// Name of the non-allocated ELF section holding the signature.
pub const HP_SIG_SECTION: &str = ".hotpatch.sig";
/// First eight bytes of the signature section.
pub const HP_SIG_MAGIC: &[u8; 8] = b"HPSIGNED";
/// Size of the signature section: exactly this, nothing after it.
pub const HP_SIG_SIZE: u32 = 112;
pub const HP_SIG_HDR_MAGIC: u32 = 0; // [u8; 8]
pub const HP_SIG_ALG: u32 = 8; // u32, HP_SIG_ALG_*
pub const HP_SIG_FLAGS: u32 = 12; // u32, no flags are defined: 0
pub const HP_SIG_PUBKEY: u32 = 16; // [u8; 32], the signer's public key (for messages; never trusted)
pub const HP_SIG_SIGNATURE: u32 = 48; // [u8; 64], R then S (RFC 8032 5.1.6)
pub const HP_SIG_PUBKEY_SIZE: u32 = 32;
pub const HP_SIG_SIGNATURE_SIZE: u32 = 64;

/// The one algorithm: Ed25519 (RFC 8032 section 5.1).
pub const HP_SIG_ALG_ED25519: u32 = 1;

/// Domain separation: the signed message starts with this string and its
/// NUL, so a key used for patches cannot be tricked into signing anything
/// that reads as a patch digest elsewhere, and a later scheme can change it.
pub const HP_SIG_CONTEXT: &str = "hotpatch patch signature v1";

/// The process environment variable naming the trusted public key (a PEM
/// file, absolute path). It wins over HP_TRUSTED_KEY_FILE.
pub const HP_PUBKEY_ENV: &str = "HOTPATCH_PUBKEY";
/// The trusted public key's file name in the patch directory root
/// (`$HOTPATCH_DIR/trusted.pub`, beside the per-build directories).
pub const HP_TRUSTED_KEY_FILE: &str = "trusted.pub";
/// The largest key file either side reads.
pub const HP_KEY_FILE_MAX: u32 = 4096;
/// How many hex digits of a key's fingerprint messages show.
pub const HP_FINGERPRINT_SHOWN: u32 = 16;
/// The DER SubjectPublicKeyInfo of an ed25519 key is these 12 bytes and
/// the 32-byte key (RFC 8410): what a PEM "PUBLIC KEY" holds, and what a
/// key's fingerprint hashes (SHA-256, as `openssl pkey -pubin -in key.pub
/// -outform DER | sha256sum` prints it).
pub const HP_ED25519_SPKI_PREFIX: &[u8; 12] = b"\x30\x2a\x30\x05\x06\x03\x2b\x65\x70\x03\x21\x00";
