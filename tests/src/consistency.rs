//! Consistency of a fixture without the tools: the original program gives
//! the pre-patch answers, the program rebuilt from the patched source the
//! post-patch answers.

use crate::fixture::Fixture;
use crate::matrix::{Build, CONSISTENCY_CONFIGS};
use crate::program::Program;
use crate::step::{Step, Version};
use crate::tree::{apply_patch, build_tree, copy_fixture};
use crate::Res;
use std::fs;
use std::time::Duration;

/// Builds one version of a fixture without the loader and plays every step
/// against it, checking the answers that belong to `version`. Returns how
/// many answers were checked.
fn play_version(f: &Fixture, b: &Build, version: Version) -> Res<usize> {
    let tmp = tempfile::Builder::new()
        .prefix(&format!("hp-e2e-consistency-{}-", f.name))
        .tempdir()
        .map_err(|e| format!("tempdir: {e}"))?;
    let dir = tmp.path().join("src");
    match version {
        Version::Old => copy_fixture(f, &dir, false)?,
        Version::New => {
            copy_fixture(f, &dir, true)?;
            apply_patch(&dir, &f.dir.join("fix.patch"))?;
        }
    }
    let exe = build_tree(f, &dir, b, None)?;
    if version == Version::New && f.hpbuild_base_sources.values().count() > 0 {
        // The patched *base* is not what runs (wrong-base): it only has to build.
        return Ok(0);
    }
    let mut prog = Program::start(&exe, tmp.path())?;
    let mut checked = 0;
    for ((i, step), v) in f.steps.iter().enumerate().zip(f.step_versions()) {
        if let Step::Send {
            send,
            expect,
            retry_secs,
            ..
        } = step
        {
            let res = if v == Some(version) {
                checked += 1;
                prog.expect(send, expect, retry_secs.map(Duration::from_secs))
            } else {
                prog.ask(send).map(|_| ())
            };
            res.map_err(|e| format!("step #{i} {}: {e}\n{}", step.describe(), prog.report()))?;
        }
    }
    prog.expect("ping", "pong", None)
        .map_err(|e| format!("final ping: {e}\n{}", prog.report()))?;
    Ok(checked)
}

/// Checks a fixture without hpbuild/hpctl: `fix.patch` uses a/ b/ prefixes
/// and applies with `patch -p1`; the original program gives the answers of
/// the steps before the patch, the program rebuilt from the patched source
/// gives the answers after it; checked with one configuration per compiler
/// ([`CONSISTENCY_CONFIGS`]) and every `also_cflags` set.
pub fn check_consistency(f: &Fixture) -> Res<()> {
    let patch =
        fs::read_to_string(f.dir.join("fix.patch")).map_err(|e| format!("fix.patch: {e}"))?;
    let minus: Vec<&str> = patch.lines().filter(|l| l.starts_with("--- ")).collect();
    let plus: Vec<&str> = patch.lines().filter(|l| l.starts_with("+++ ")).collect();
    if minus.is_empty() || minus.len() != plus.len() {
        return Err("fix.patch has no (or unbalanced) ---/+++ file headers".into());
    }
    if !minus.iter().all(|l| l.starts_with("--- a/"))
        || !plus.iter().all(|l| l.starts_with("+++ b/"))
    {
        return Err("fix.patch must use a/ and b/ prefixes".into());
    }
    for k in f.hpbuild_base_sources.keys() {
        let (a, b) = (
            fs::read(f.dir.join(k)).unwrap_or_default(),
            fs::read(f.dir.join(&f.hpbuild_base_sources[k])).unwrap_or_default(),
        );
        if a == b {
            return Err(format!(
                "hpbuild_base_sources: {k} and its replacement are identical"
            ));
        }
    }
    let versions = f.step_versions();
    let applies_ok = f.steps.iter().any(|s| {
        matches!(
            s,
            Step::Apply {
                expect_fail: None,
                ..
            }
        )
    });
    let n_old = versions
        .iter()
        .filter(|v| **v == Some(Version::Old))
        .count();
    let n_new = versions
        .iter()
        .filter(|v| **v == Some(Version::New))
        .count();
    if n_old == 0 {
        return Err("no step checks the original behaviour".into());
    }
    if applies_ok && n_new == 0 {
        return Err("the patch is applied but no step checks the new behaviour".into());
    }
    let mut builds: Vec<Build> = CONSISTENCY_CONFIGS
        .iter()
        .filter(|c| f.unsupported_reason(c).is_none())
        .map(|c| f.build(c))
        .collect::<Res<_>>()?;
    for also in f.also_names() {
        builds.push(f.build(&also)?);
    }
    for b in &builds {
        let flags = format!("{} {:?}", b.cc, b.cflags);
        let old = play_version(f, b, Version::Old)
            .map_err(|e| format!("original program, {flags}: {e}"))?;
        let new = play_version(f, b, Version::New)
            .map_err(|e| format!("patched program, {flags}: {e}"))?;
        assert_eq!(old, n_old);
        if f.hpbuild_base_sources.is_empty() {
            assert_eq!(new, n_new);
        }
    }
    Ok(())
}
