//! One step of a fixture's script and its JSON form.

use crate::Res;
use serde_json::Value;

/// One step of a fixture's script.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Send a line; the program must answer exactly `expect`. With
    /// `retry_secs`, resend until it does (at most that long). `version`
    /// says which code must be running for the answer to hold ("old" or
    /// "new"); by default, the version the apply/revert steps so far imply.
    Send {
        send: String,
        expect: String,
        retry_secs: Option<u64>,
        version: Option<Version>,
    },
    /// `hpctl apply PID OUT.hpo`. `expect_fail`: it must fail, and its
    /// stderr must contain every one of these strings. `background`: start
    /// it and go on; a later `wait_apply` step collects it. `settle_secs`:
    /// with `background`, wait that long (or until hpctl exits) first.
    /// `consistent`: `--timeout-ms MS` for the (default) consistent switch
    /// (JSON `"consistent": true` for the default 5000 ms, or a number of
    /// ms). `lazy`: `hpctl apply --lazy`. `redirect`: `--redirect KIND`
    /// (`"entry"` or `"call-site"`).
    Apply {
        expect_fail: Option<Vec<String>>,
        background: bool,
        settle_secs: u64,
        consistent: Option<u64>,
        lazy: bool,
        redirect: Option<String>,
    },
    /// Wait for a background apply; it must succeed.
    WaitApply,
    /// `hpctl revert PID`; it must succeed (or fail with `expect_fail`).
    /// `consistent` and `lazy` as for Apply.
    Revert {
        expect_fail: Option<Vec<String>>,
        consistent: Option<u64>,
        lazy: bool,
    },
}

/// Which build of a fixture a step's answer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Old,
    New,
}

impl Step {
    /// A one-line description for messages.
    pub fn describe(&self) -> String {
        match self {
            Step::Send {
                send,
                expect,
                retry_secs,
                version,
            } => {
                let mut s = format!("send {send:?}, expect {expect:?}");
                if let Some(r) = retry_secs {
                    s += &format!(" (retrying for up to {r} s)");
                }
                if let Some(v) = version {
                    s += &format!(" (from the {v:?} code)");
                }
                s
            }
            Step::Apply {
                expect_fail: Some(n),
                ..
            } => format!("hpctl apply, expected to fail naming {n:?}"),
            Step::Apply {
                background: true,
                settle_secs,
                ..
            } => {
                format!("hpctl apply in the background (settle {settle_secs} s)")
            }
            Step::Apply { .. } => "hpctl apply".into(),
            Step::WaitApply => "wait for the background hpctl apply".into(),
            Step::Revert {
                expect_fail: Some(n),
                ..
            } => format!("hpctl revert, expected to fail naming {n:?}"),
            Step::Revert { .. } => "hpctl revert".into(),
        }
    }
}

pub(crate) fn str_list(v: &Value, what: &str) -> Res<Vec<String>> {
    v.as_array()
        .ok_or_else(|| format!("{what} must be an array of strings"))?
        .iter()
        .map(|x| {
            x.as_str()
                .map(String::from)
                .ok_or_else(|| format!("{what} must hold strings only"))
        })
        .collect()
}

pub(crate) fn check_keys(
    obj: &serde_json::Map<String, Value>,
    allowed: &[&str],
    what: &str,
) -> Res<()> {
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(format!("{what}: unknown key {k:?} (allowed: {allowed:?})"));
        }
    }
    Ok(())
}

pub(crate) fn opt_needles(v: Option<&Value>, what: &str) -> Res<Option<Vec<String>>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(v) => Ok(Some(str_list(v, what)?)),
    }
}

/// `"consistent"`: absent/false → None, true → the loader's default
/// timeout, a whole number → that many ms.
fn consistent_opt(v: Option<&Value>, what: &str) -> Res<Option<u64>> {
    match v {
        None | Some(Value::Bool(false)) => Ok(None),
        Some(Value::Bool(true)) => Ok(Some(5000)),
        Some(x) => match x.as_u64() {
            Some(ms) if ms > 0 => Ok(Some(ms)),
            _ => Err(format!(
                "{what}.consistent must be a boolean or a number of ms"
            )),
        },
    }
}

pub(crate) fn parse_step(v: &Value, i: usize) -> Res<Step> {
    let what = format!("steps[{i}]");
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{what} must be an object"))?;
    let flag = |k: &str| {
        obj.get(k).map_or(Ok(false), |x| {
            x.as_bool()
                .ok_or_else(|| format!("{what}.{k} must be a boolean"))
        })
    };
    if let Some(send) = obj.get("send") {
        check_keys(obj, &["send", "expect", "retry_secs", "version"], &what)?;
        let send = send
            .as_str()
            .ok_or_else(|| format!("{what}.send must be a string"))?
            .to_string();
        let expect = obj
            .get("expect")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{what}: a send step needs \"expect\" (a string)"))?
            .to_string();
        if send.contains('\n') || expect.contains('\n') {
            return Err(format!("{what}: send/expect are single lines"));
        }
        let retry_secs = match obj.get("retry_secs") {
            None => None,
            Some(x) => Some(
                x.as_u64()
                    .ok_or_else(|| format!("{what}.retry_secs must be a whole number"))?,
            ),
        };
        let version = match obj.get("version").map(|x| x.as_str()) {
            None => None,
            Some(Some("old")) => Some(Version::Old),
            Some(Some("new")) => Some(Version::New),
            Some(_) => return Err(format!("{what}.version must be \"old\" or \"new\"")),
        };
        return Ok(Step::Send {
            send,
            expect,
            retry_secs,
            version,
        });
    }
    if obj.contains_key("apply") {
        check_keys(
            obj,
            &[
                "apply",
                "expect_fail",
                "background",
                "settle_secs",
                "consistent",
                "lazy",
                "redirect",
            ],
            &what,
        )?;
        if !flag("apply")? {
            return Err(format!("{what}.apply must be true"));
        }
        let expect_fail = opt_needles(obj.get("expect_fail"), &format!("{what}.expect_fail"))?;
        let background = flag("background")?;
        let settle_secs = match obj.get("settle_secs") {
            None => 0,
            Some(x) => x
                .as_u64()
                .ok_or_else(|| format!("{what}.settle_secs must be a whole number"))?,
        };
        if background && expect_fail.is_some() {
            return Err(format!("{what}: a background apply cannot expect_fail"));
        }
        let consistent = consistent_opt(obj.get("consistent"), &what)?;
        let lazy = flag("lazy")?;
        if lazy && consistent.is_some() {
            return Err(format!("{what}: lazy and consistent exclude each other"));
        }
        let redirect = match obj.get("redirect") {
            None => None,
            Some(Value::String(k)) if k == "entry" || k == "call-site" => Some(k.clone()),
            Some(_) => {
                return Err(format!(
                    "{what}.redirect must be \"entry\" or \"call-site\""
                ))
            }
        };
        return Ok(Step::Apply {
            expect_fail,
            background,
            settle_secs,
            consistent,
            lazy,
            redirect,
        });
    }
    if obj.contains_key("wait_apply") {
        check_keys(obj, &["wait_apply"], &what)?;
        if !flag("wait_apply")? {
            return Err(format!("{what}.wait_apply must be true"));
        }
        return Ok(Step::WaitApply);
    }
    if obj.contains_key("revert") {
        check_keys(obj, &["revert", "expect_fail", "consistent", "lazy"], &what)?;
        if !flag("revert")? {
            return Err(format!("{what}.revert must be true"));
        }
        let expect_fail = opt_needles(obj.get("expect_fail"), &format!("{what}.expect_fail"))?;
        let consistent = consistent_opt(obj.get("consistent"), &what)?;
        let lazy = flag("lazy")?;
        if lazy && consistent.is_some() {
            return Err(format!("{what}: lazy and consistent exclude each other"));
        }
        return Ok(Step::Revert {
            expect_fail,
            consistent,
            lazy,
        });
    }
    Err(format!(
        "{what}: expected one of \"send\", \"apply\", \"wait_apply\", \"revert\""
    ))
}
