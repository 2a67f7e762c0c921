//! Playing a fixture's script against a started program: send/expect lines,
//! apply (also in the background), wait for it, revert; then a final ping.

use crate::checks::{check_list, check_refusal};
use crate::driver::Started;
use crate::fixture::Fixture;
use crate::run::{run_timeout, Output, Running};
use crate::step::Step;
use crate::tools::hpctl_bin;
use crate::{Res, HPCTL_TIMEOUT};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

fn ctx(s: &Started, step: &str, e: String) -> String {
    format!("step: {step}\nerror: {e}\n{}", s.prog.report())
}

/// Runs every step of `f` against `s`, with `hpo` as the patch and `build`
/// as hpbuild's run (shown when an apply fails); `config` names the
/// configuration in notes.
pub fn play_steps(
    f: &Fixture,
    s: &mut Started,
    hpo: &Path,
    build: &Output,
    config: &str,
) -> Res<()> {
    let hpctl = hpctl_bin()?;
    let pid = s.prog.pid();
    let mut background: Option<Running> = None;
    for (i, step) in f.steps.iter().enumerate() {
        let label = format!("#{i} {}", step.describe());
        match step {
            Step::Send {
                send,
                expect,
                retry_secs,
                ..
            } => {
                let retry = retry_secs.map(Duration::from_secs);
                s.prog
                    .expect(send, expect, retry)
                    .map_err(|e| ctx(s, &label, e))?;
            }
            Step::Apply {
                expect_fail,
                background: bg,
                settle_secs,
                consistent,
                lazy,
                redirect,
            } => {
                let mut cmd = Command::new(&hpctl);
                cmd.arg("apply");
                switch_args(&mut cmd, *consistent, *lazy);
                if let Some(kind) = redirect {
                    cmd.arg(format!("--redirect={kind}"));
                }
                cmd.arg(pid.to_string()).arg(hpo);
                if *bg {
                    let mut r = Running::start(&mut cmd).map_err(|e| ctx(s, &label, e))?;
                    let until = Instant::now() + Duration::from_secs(*settle_secs);
                    while Instant::now() < until && r.poll().is_none() {
                        thread::sleep(Duration::from_millis(20));
                    }
                    s.prog
                        .transcript
                        .push(format!("# hpctl apply {pid} started in the background"));
                    background = Some(r);
                    continue;
                }
                let out = run_timeout(&mut cmd, HPCTL_TIMEOUT).map_err(|e| ctx(s, &label, e))?;
                s.prog.note(&out);
                match expect_fail {
                    Some(needles) => check_refusal(&out, needles, "hpctl apply")
                        .map_err(|e| ctx(s, &label, e))?,
                    None => {
                        if !out.status.success() {
                            return Err(ctx(
                                s,
                                &label,
                                format!(
                                    "hpctl apply failed\n{}\n--- hpbuild ---\n{}",
                                    out.report(),
                                    build.report()
                                ),
                            ));
                        }
                        let l =
                            check_list(&hpctl, pid, hpo, true).map_err(|e| ctx(s, &label, e))?;
                        s.prog.note(&l);
                        if redirect.as_deref() == Some("call-site") {
                            check_sites_rewritten(&l.stdout).map_err(|e| ctx(s, &label, e))?;
                        }
                    }
                }
            }
            Step::WaitApply => {
                let r = background
                    .take()
                    .expect("validated: a background apply is pending");
                let out = r.finish(HPCTL_TIMEOUT).map_err(|e| ctx(s, &label, e))?;
                s.prog.note(&out);
                if !out.status.success() {
                    return Err(ctx(
                        s,
                        &label,
                        format!(
                            "background hpctl apply failed\n{}\n--- hpbuild ---\n{}",
                            out.report(),
                            build.report()
                        ),
                    ));
                }
                let l = check_list(&hpctl, pid, hpo, true).map_err(|e| ctx(s, &label, e))?;
                s.prog.note(&l);
            }
            Step::Revert {
                expect_fail,
                consistent,
                lazy,
            } => {
                let mut cmd = Command::new(&hpctl);
                cmd.arg("revert");
                switch_args(&mut cmd, *consistent, *lazy);
                let out = run_timeout(cmd.arg(pid.to_string()), HPCTL_TIMEOUT)
                    .map_err(|e| ctx(s, &label, e))?;
                s.prog.note(&out);
                match expect_fail {
                    Some(needles) => check_refusal(&out, needles, "hpctl revert")
                        .map_err(|e| ctx(s, &label, e))?,
                    None => {
                        if !out.status.success() {
                            return Err(ctx(
                                s,
                                &label,
                                format!("hpctl revert failed\n{}", out.report()),
                            ));
                        }
                        let l =
                            check_list(&hpctl, pid, hpo, false).map_err(|e| ctx(s, &label, e))?;
                        s.prog.note(&l);
                    }
                }
            }
        }
    }
    // Still alive and answering at the end.
    s.prog
        .expect("ping", "pong", None)
        .map_err(|e| ctx(s, "final ping", e))?;
    let stderr = s.prog.stderr();
    if stderr.contains("EINTR") {
        eprintln!(
            "note [{} {:?}]: the program saw EINTR during the run:\n{stderr}",
            f.name, config
        );
    }
    Ok(())
}

/// `--lazy`, or the consistent switch's `--timeout-ms`.
fn switch_args(cmd: &mut Command, consistent: Option<u64>, lazy: bool) {
    if lazy {
        cmd.arg("--lazy");
    }
    if let Some(ms) = consistent {
        cmd.arg(format!("--timeout-ms={ms}"));
    }
}

/// After `--redirect call-site`, `hpctl list` must show call sites for the
/// patch just applied (the newest line): a fixture using it calls its
/// patched function directly, so a count of zero means nothing was
/// rewritten and the calls only took the entry jump.
fn check_sites_rewritten(list: &str) -> Res<()> {
    let newest = list.lines().last().unwrap_or("");
    let total: usize = newest
        .split(" call sites)")
        .filter_map(|part| part.rsplit('(').next()?.trim().parse::<usize>().ok())
        .sum();
    if total == 0 {
        return Err(format!(
            "hpctl list shows no rewritten call site after --redirect call-site:\n{list}"
        ));
    }
    Ok(())
}
