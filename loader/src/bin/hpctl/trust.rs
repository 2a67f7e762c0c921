//! Signed patches, hpctl's side: the key the target process requires, found
//! the way its loader found it at start-up (`csrc/signing.c`): the
//! `HOTPATCH_PUBKEY` of its environment, else `trusted.pub` in its patch
//! directory root. A patch that key would refuse is refused here, in the
//! loader's words (`format::TrustedKey::check`), before anything is sent.
//!
//! hpctl only adds an earlier refusal: where it cannot read or parse the
//! key, it leaves the verdict to the loader, which checks every patch
//! itself and says why it refuses.

use crate::persist;
use format::TrustedKey;
use std::path::{Path, PathBuf};

/// `name` in the start-up environment of `pid`, if set and not empty.
fn env_of(pid: u32, name: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|&b| b == 0).find_map(|kv| {
        let v = kv.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
        (!v.is_empty()).then(|| String::from_utf8_lossy(v).into_owned())
    })
}

/// Where the loader of `pid` reads its key, and how it names it.
fn key_file_of(pid: u32) -> Option<(PathBuf, String)> {
    if let Some(path) = env_of(pid, format::HP_PUBKEY_ENV) {
        let shown = format!("{}={path}", format::HP_PUBKEY_ENV);
        // The loader refuses a relative path (its cwd may have moved).
        return Path::new(&path).is_absolute().then(|| (path.into(), shown));
    }
    let root = persist::root_of_process(pid).ok()??;
    let file = root.join(format::HP_TRUSTED_KEY_FILE);
    let shown = file.display().to_string();
    Some((file, shown))
}

/// The key the loader of `pid` requires, as far as hpctl can read it.
fn key_of(pid: u32) -> Option<TrustedKey> {
    let (file, shown) = key_file_of(pid)?;
    let text = std::fs::read_to_string(file).ok()?;
    TrustedKey::from_pem(&text, shown).ok()
}

/// Refuses `patch` (read and checked by `format::read_patch`) if the
/// loader of `pid` would refuse it for its signature.
pub fn check(pid: u32, patch: &[u8], id: &str) -> Result<(), String> {
    match key_of(pid) {
        Some(key) => key
            .check(patch, id)
            .map_err(|e| format!("{e}; nothing was sent to process {pid}")),
        None => Ok(()),
    }
}
