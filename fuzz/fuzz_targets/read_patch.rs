//! The Rust reader of patch files (`format::read_patch`, what hpctl runs
//! before it sends a patch to a process).
//!
//! The reader checks the content hash before anything else, so random
//! bytes stop there. Each input is read twice: as it is (the hash check and
//! what precedes it), and sealed — its hash field set as the writer would
//! (`format::seal`) — so that every check behind the hash is reached too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = format::read_patch(data);
    let mut sealed = data.to_vec();
    if format::seal(&mut sealed).is_ok() {
        assert!(
            format::verify_content_hash(&sealed).is_ok(),
            "a sealed patch fails its own hash check"
        );
        let _ = format::read_patch(&sealed);
    }
});
