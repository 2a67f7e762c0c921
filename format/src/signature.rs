//! Optional signatures: a patch signed with an ed25519 key carries the
//! section [`HP_SIG_SECTION`] (layout: `signature_layout.rs`, also the C
//! header `hp_signature.h`), and a process configured with the public key
//! applies only patches whose signature verifies with it.
//!
//! What is signed ([`signed_message`]): [`HP_SIG_CONTEXT`] and its NUL,
//! then the SHA-256 of the whole patch file with the content hash and the
//! signature read as zero — every other byte, the metadata included. The
//! writer signs before it seals ([`sign`] does both), so the content hash
//! covers the signature and keeps its one rule: a loader or hpctl that
//! predates signatures still accepts a signed patch.
//!
//! Who reads what:
//! * [`read_signature`]: the structure of the section, checked by
//!   [`crate::read_patch`] (so by hpctl for every patch) in the same words
//!   as the loader's C reader (`loader/csrc/patchobj.c`);
//! * [`TrustedKey::check`]: the policy, "signed, and by this key", as the
//!   loader applies it (`loader/csrc/signing.c`, same words); hpctl runs it
//!   with the key the target process is configured with;
//! * [`signing_key_from_pem`], [`TrustedKey::from_pem`]: the key files
//!   people have (OpenSSL's PEM PKCS#8 private key, `openssl genpkey
//!   -algorithm ed25519`, and its public half, `openssl pkey -pubout`).
//!
//! The section's public-key field says which key signed the patch, for
//! messages only: a verifier never trusts it.

use crate::patch::{bad, find_meta, find_section, hash_field, named, seal};
use crate::{FormatError, HP_SHA256_SIZE};
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{Signer, Verifier};
use sha2::{Digest, Sha256};

pub use ed25519_dalek::{SigningKey, VerifyingKey};

include!("signature_layout.rs");

/// A patch's signature section, its structure checked (not verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigSection {
    /// File offset of the section's contents.
    pub offset: usize,
    /// The key the writer says it signed with (never trusted).
    pub public_key: [u8; 32],
    pub signature: [u8; 64],
}

fn le32(data: &[u8], at: u32) -> u32 {
    u32::from_le_bytes(data[at as usize..at as usize + 4].try_into().unwrap())
}

/// The signature section of a patch, if it has one, its structure checked
/// with the same checks and words as the loader's C reader. The patch's
/// metadata must be findable (call after the content hash check).
pub fn read_signature(patch: &[u8]) -> Result<Option<SigSection>, FormatError> {
    let Some((offset, sig)) = find_section(patch, HP_SIG_SECTION)? else {
        return Ok(None);
    };
    let (_, meta) = find_meta(patch)?;
    let who = named(meta);
    if sig.len() != HP_SIG_SIZE as usize {
        return Err(bad(format!(
            "{who}signature section {HP_SIG_SECTION} is {} bytes, not {HP_SIG_SIZE}",
            sig.len()
        )));
    }
    if &sig[..8] != HP_SIG_MAGIC {
        return Err(bad(format!(
            "{who}signature section {HP_SIG_SECTION} has no HPSIGNED header"
        )));
    }
    let alg = le32(sig, HP_SIG_ALG);
    if alg != HP_SIG_ALG_ED25519 {
        return Err(bad(format!(
            "{who}signature algorithm {alg} is unknown (this reader verifies ed25519, \
             {HP_SIG_ALG_ED25519})"
        )));
    }
    let flags = le32(sig, HP_SIG_FLAGS);
    if flags != 0 {
        return Err(bad(format!(
            "{who}signature section {HP_SIG_SECTION} has unknown flags {flags:#x}"
        )));
    }
    let field = |at: u32, len: u32| &sig[at as usize..(at + len) as usize];
    Ok(Some(SigSection {
        offset,
        public_key: field(HP_SIG_PUBKEY, HP_SIG_PUBKEY_SIZE).try_into().unwrap(),
        signature: field(HP_SIG_SIGNATURE, HP_SIG_SIGNATURE_SIZE)
            .try_into()
            .unwrap(),
    }))
}

/// The contents of a signature section before signing: header, zeros.
/// The writer adds it to the object, then calls [`sign`].
pub fn unsigned_section() -> Vec<u8> {
    let mut out = vec![0u8; HP_SIG_SIZE as usize];
    out[..8].copy_from_slice(HP_SIG_MAGIC);
    out[HP_SIG_ALG as usize..][..4].copy_from_slice(&HP_SIG_ALG_ED25519.to_le_bytes());
    out
}

/// The message a patch's signature is over: [`HP_SIG_CONTEXT`], NUL, and
/// SHA-256 of the file with the content hash and the signature read as
/// zero. `sig`: the patch's signature section.
pub fn signed_message(patch: &[u8], sig: &SigSection) -> Result<Vec<u8>, FormatError> {
    let (hash_at, _) = hash_field(patch)?;
    let sig_at = sig.offset + HP_SIG_SIGNATURE as usize;
    let mut zeroed = patch.to_vec();
    zeroed[hash_at..hash_at + HP_SHA256_SIZE as usize].fill(0);
    zeroed[sig_at..sig_at + HP_SIG_SIGNATURE_SIZE as usize].fill(0);
    let mut message = HP_SIG_CONTEXT.as_bytes().to_vec();
    message.push(0);
    message.extend_from_slice(&Sha256::digest(&zeroed));
    Ok(message)
}

/// Signs a written patch that has an (unsigned) signature section, then
/// seals it: the public key and the signature are stored, and the content
/// hash, last, covers them. Returns the key's [`key_fingerprint`].
pub fn sign(patch: &mut [u8], key: &SigningKey) -> Result<String, FormatError> {
    let Some(section) = read_signature(patch)? else {
        return Err(bad(format!(
            "the patch has no {HP_SIG_SECTION} section to sign (the writer adds one when asked \
             to sign)"
        )));
    };
    let public = key.verifying_key().to_bytes();
    let key_at = section.offset + HP_SIG_PUBKEY as usize;
    patch[key_at..key_at + public.len()].copy_from_slice(&public);
    let section = SigSection {
        public_key: public,
        ..section
    };
    let signature = key.sign(&signed_message(patch, &section)?).to_bytes();
    let sig_at = section.offset + HP_SIG_SIGNATURE as usize;
    patch[sig_at..sig_at + signature.len()].copy_from_slice(&signature);
    seal(patch)?;
    Ok(key_fingerprint(&public))
}

/// A key's fingerprint: hex SHA-256 of its DER SubjectPublicKeyInfo, what
/// `openssl pkey -pubin -in key.pub -outform DER | sha256sum` prints.
pub fn key_fingerprint(public_key: &[u8; 32]) -> String {
    let mut h = Sha256::new();
    h.update(HP_ED25519_SPKI_PREFIX);
    h.update(public_key);
    crate::hex(&h.finalize())
}

/// The start of a fingerprint, as messages show it.
fn short(fingerprint: &str) -> &str {
    &fingerprint[..HP_FINGERPRINT_SHOWN as usize]
}

/// `--sign KEYFILE`'s key: an unencrypted PEM PKCS#8 ed25519 private key,
/// as `openssl genpkey -algorithm ed25519 -out key.pem` writes it.
pub fn signing_key_from_pem(pem: &str) -> Result<SigningKey, FormatError> {
    SigningKey::from_pkcs8_pem(pem).map_err(|e| {
        let why = if pem.contains("ENCRYPTED PRIVATE KEY") {
            "it is encrypted; give an unencrypted copy (openssl pkey -in key.pem -out plain.pem)"
                .to_string()
        } else if pem.contains("PUBLIC KEY") {
            "it holds a public key; signing needs the private key".to_string()
        } else {
            format!("{e}")
        };
        bad(format!(
            "not a PEM PKCS#8 ed25519 private key: {why} (make one with: openssl genpkey \
             -algorithm ed25519 -out key.pem)"
        ))
    })
}

/// The public key a process trusts, and where it was configured (for
/// messages: `HOTPATCH_PUBKEY=/path` or the `trusted.pub` file's path).
#[derive(Debug, Clone)]
pub struct TrustedKey {
    key: VerifyingKey,
    source: String,
}

impl TrustedKey {
    pub fn new(key: VerifyingKey, source: impl Into<String>) -> TrustedKey {
        TrustedKey {
            key,
            source: source.into(),
        }
    }

    /// A PEM "PUBLIC KEY" file's contents (`openssl pkey -in key.pem -pubout`).
    pub fn from_pem(pem: &str, source: impl Into<String>) -> Result<TrustedKey, FormatError> {
        let key = VerifyingKey::from_public_key_pem(pem).map_err(|e| {
            let why = if pem.contains("PRIVATE KEY") {
                "it holds a private key; give the process the public key only".to_string()
            } else {
                format!("{e}")
            };
            bad(format!(
                "not a PEM ed25519 public key: {why} (make one with: openssl pkey -in key.pem \
                 -pubout -out key.pub)"
            ))
        })?;
        Ok(TrustedKey::new(key, source))
    }

    pub fn fingerprint(&self) -> String {
        key_fingerprint(self.key.as_bytes())
    }

    /// Refuses patch `id` unless it is signed and its signature verifies
    /// with this key; the loader says the same, in the same words. The
    /// patch's structure must have been read ([`crate::read_patch`]).
    pub fn check(&self, patch: &[u8], id: &str) -> Result<(), FormatError> {
        let mine = self.fingerprint();
        let Some(section) = read_signature(patch)? else {
            return Err(bad(format!(
                "patch {id} is not signed, and this process requires signed patches (key {}, \
                 {})",
                short(&mine),
                self.source
            )));
        };
        let signature = ed25519_dalek::Signature::from_bytes(&section.signature);
        let message = signed_message(patch, &section)?;
        if self.key.verify(&message, &signature).is_ok() {
            return Ok(());
        }
        let signer = key_fingerprint(&section.public_key);
        let why = if signer == mine {
            "the patch or its signature was changed after it was signed".to_string()
        } else {
            format!("it was signed with key {}", short(&signer))
        };
        Err(bad(format!(
            "patch {id}: signature does not verify with the configured key {} ({}): {why}",
            short(&mine),
            self.source
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn the_fingerprint_hashes_the_der_public_key() {
        let k = key(7).verifying_key();
        let der = k.to_public_key_der().unwrap();
        assert_eq!(
            key_fingerprint(k.as_bytes()),
            crate::hex(&Sha256::digest(der.as_bytes()))
        );
    }

    #[test]
    fn pem_keys_read_and_mixed_up_ones_are_named() {
        let k = key(9);
        let private = k.to_pkcs8_pem(Default::default()).unwrap();
        let public = k
            .verifying_key()
            .to_public_key_pem(Default::default())
            .unwrap();
        assert_eq!(
            signing_key_from_pem(&private).unwrap().to_bytes(),
            k.to_bytes()
        );
        let trusted = TrustedKey::from_pem(&public, "test").unwrap();
        assert_eq!(
            trusted.fingerprint(),
            key_fingerprint(k.verifying_key().as_bytes())
        );

        let e = signing_key_from_pem(&public).unwrap_err().0;
        assert!(e.contains("it holds a public key"), "{e}");
        assert!(e.contains("openssl genpkey -algorithm ed25519"), "{e}");
        let e = TrustedKey::from_pem(&private, "test").unwrap_err().0;
        assert!(e.contains("it holds a private key"), "{e}");
        assert!(e.contains("openssl pkey -in key.pem -pubout"), "{e}");
        assert!(signing_key_from_pem("junk").is_err());
    }

    /// A small patch object (one function, its metadata), with an
    /// unsigned signature section if `signed`, sealed.
    fn patch(signed: bool) -> Vec<u8> {
        use object::write;
        let mut out = write::Object::new(
            object::BinaryFormat::Elf,
            object::Architecture::X86_64,
            object::Endianness::Little,
        );
        let text = out.add_section(Vec::new(), b".text".to_vec(), object::SectionKind::Text);
        out.set_section_data(text, vec![0x8d, 0x04, 0x7f, 0xc3], 16);
        out.add_symbol(write::Symbol {
            name: b"f".to_vec(),
            value: 0,
            size: 4,
            kind: object::SymbolKind::Text,
            scope: object::SymbolScope::Linkage,
            weak: false,
            section: write::SymbolSection::Section(text),
            flags: object::SymbolFlags::None,
        });
        let meta = crate::Meta {
            patch_id: "fix-1".into(),
            funcs: vec![crate::FuncRecord {
                name: "f".into(),
                file: String::new(),
                new_symbol: "f".into(),
                redirect: crate::HP_REDIRECT_ENTRY_JUMP,
                old_size: 4,
                fingerprint: 1,
                masks: vec![],
            }],
            ..Default::default()
        };
        let kind = object::SectionKind::Metadata;
        let m = out.add_section(Vec::new(), crate::HP_META_SECTION.into(), kind);
        out.set_section_data(m, meta.encode(), 8);
        if signed {
            let sig = out.add_section(Vec::new(), HP_SIG_SECTION.into(), kind);
            out.set_section_data(sig, unsigned_section(), 8);
        }
        let mut bytes = out.write().unwrap();
        seal(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn a_signed_patch_verifies_with_its_key_only() {
        let mut p = patch(true);
        let fp = sign(&mut p, &key(1)).unwrap();
        assert_eq!(fp, key_fingerprint(key(1).verifying_key().as_bytes()));
        crate::read_patch(&p).unwrap();
        let mine = TrustedKey::new(key(1).verifying_key(), "HOTPATCH_PUBKEY=/k");
        mine.check(&p, "fix-1").unwrap();
        let read = read_signature(&p).unwrap().unwrap();
        assert_eq!(read.public_key, key(1).verifying_key().to_bytes());

        let other = TrustedKey::new(key(2).verifying_key(), "/r/trusted.pub");
        let e = other.check(&p, "fix-1").unwrap_err().0;
        assert_eq!(
            e,
            format!(
                "patch fix-1: signature does not verify with the configured key {} \
                 (/r/trusted.pub): it was signed with key {}",
                &other.fingerprint()[..16],
                &fp[..16]
            )
        );
        let e = mine.check(&patch(false), "fix-1").unwrap_err().0;
        assert_eq!(
            e,
            format!(
                "patch fix-1 is not signed, and this process requires signed patches (key {}, \
                 HOTPATCH_PUBKEY=/k)",
                &fp[..16]
            )
        );
    }

    #[test]
    fn every_byte_but_the_hash_is_signed() {
        let mut p = patch(true);
        sign(&mut p, &key(1)).unwrap();
        let mine = TrustedKey::new(key(1).verifying_key(), "k");
        let (hash_at, _) = hash_field(&p).unwrap();
        let mut unnoticed = Vec::new();
        for at in 0..p.len() {
            if (hash_at..hash_at + 32).contains(&at) {
                continue;
            }
            let mut changed = p.clone();
            changed[at] ^= 0x10;
            // Sealed again, as anyone who can write the file could.
            let _ = seal(&mut changed);
            let refused =
                crate::read_patch(&changed).is_err() || mine.check(&changed, "fix-1").is_err();
            if !refused {
                unnoticed.push(at);
            }
        }
        assert!(
            unnoticed.is_empty(),
            "bytes changed unnoticed: {unnoticed:?}"
        );
    }

    #[test]
    fn the_unsigned_section_reads_as_its_header() {
        let s = unsigned_section();
        assert_eq!(s.len(), HP_SIG_SIZE as usize);
        assert_eq!(&s[..8], HP_SIG_MAGIC);
        assert_eq!(le32(&s, HP_SIG_ALG), HP_SIG_ALG_ED25519);
        assert!(s[HP_SIG_FLAGS as usize..].iter().all(|&b| b == 0));
    }
}
