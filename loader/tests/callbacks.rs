//! Data migration instead of refusal (issue 9 item 2): a fix that needs a
//! new field in a struct whose objects already exist keeps it in a shadow
//! variable (hotpatch.h), and its callbacks run around apply and revert; a
//! pre-apply or pre-revert callback that returns non-zero cancels the
//! operation and nothing changes.

mod common;

use common::{hpctl, make_patch, Proc, Work};

const PROG: &str = include_str!("programs/shadow.c");
const FILE: &str = "shadow.c";

#[test]
fn shadow_fields_and_callbacks() {
    let work = Work::new("shadow");
    let exe = common::build_program(&work, FILE, PROG, &[]);
    let fixed = format!("#define FIX 1\n{PROG}");
    make_patch(&work, "errs", FILE, PROG, &fixed, &["conn_read"], &[]);
    let hpo = work.path("errs.hpo").to_str().unwrap().to_string();
    let mut p = Proc::start(&exe, &work);
    let pid = p.pid().to_string();

    assert_eq!(p.ask("read 1 5"), "5");
    assert_eq!(p.ask("read 1 -1"), "4", "v1 counts a failed read as bytes");

    // A pre-apply callback that says no cancels the apply.
    assert_eq!(p.ask("refuse 7 0"), "ok");
    let (ok, _, err) = hpctl(&["apply", &pid, &hpo]);
    assert!(!ok);
    assert_eq!(
        err,
        "hpctl: patch errs: its pre-apply callback returned 7, so the apply was cancelled; \
         nothing was changed"
    );
    assert_eq!(p.ask("seen"), "1", "only pre-apply ran");
    assert_eq!(p.ask("read 1 -1"), "3", "still v1");

    assert_eq!(p.ask("refuse 0 0"), "ok");
    let (ok, _, err) = hpctl(&["apply", &pid, &hpo]);
    assert!(ok, "{err}");
    assert_eq!(p.ask("seen"), "3", "pre-apply, then post-apply");
    // The new field, per connection; the old field kept its value.
    assert_eq!(p.ask("read 1 -1"), "-1");
    assert_eq!(p.ask("read 1 -1"), "-2");
    assert_eq!(p.ask("read 2 -1"), "-1");
    assert_eq!(p.ask("read 1 4"), "7");

    // A pre-revert callback that says no keeps the patch.
    assert_eq!(p.ask("refuse 0 3"), "ok");
    let (ok, _, err) = hpctl(&["revert", &pid]);
    assert!(!ok);
    assert!(err.contains("its pre-revert callback returned 3"), "{err}");
    assert_eq!(p.ask("seen"), "4");
    assert_eq!(p.ask("read 1 -1"), "-3", "still the fix, shadows intact");

    assert_eq!(p.ask("refuse 0 0"), "ok");
    let (ok, _, err) = hpctl(&["revert", &pid]);
    assert!(ok, "{err}");
    assert_eq!(p.ask("seen"), "12", "pre-revert, then post-revert");
    assert_eq!(p.ask("read 1 -1"), "6", "v1 again");
    // The post-revert callback freed the shadows: a new apply starts at 0.
    let (ok, _, err) = hpctl(&["apply", &pid, &hpo]);
    assert!(ok, "{err}");
    assert_eq!(p.ask("read 1 -1"), "-1");
    assert!(p.alive());
}

/// hotpatch.h's macros put the callbacks in the sections the patch format
/// names (format/src/layout.rs), which the loader reads.
#[test]
fn hotpatch_h_uses_the_format_sections() {
    let h = loader::HOTPATCH_H;
    assert!(h.contains("section(\".hotpatch.\" #kind)"));
    for (section, mac) in [
        (format::HP_CB_PRE_APPLY_SECTION, "HOTPATCH_PRE_APPLY"),
        (format::HP_CB_POST_APPLY_SECTION, "HOTPATCH_POST_APPLY"),
        (format::HP_CB_PRE_REVERT_SECTION, "HOTPATCH_PRE_REVERT"),
        (format::HP_CB_POST_REVERT_SECTION, "HOTPATCH_POST_REVERT"),
    ] {
        let kind = section.strip_prefix(".hotpatch.").unwrap();
        let def = format!("#define {mac}(fn) HOTPATCH_CALLBACK_({kind}, fn)");
        assert!(h.contains(&def), "hotpatch.h lacks {def}");
    }
}
