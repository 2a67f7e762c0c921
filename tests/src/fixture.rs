//! A parsed `fixture.json` (schema: `fixtures/README.md`).

use crate::matrix::{config, config_matches, Build, Config, MATRIX};
use crate::step::{check_keys, opt_needles, parse_step, str_list, Step, Version};
use crate::tools::fixtures_dir;
use crate::Res;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// A parsed `fixture.json` (see `fixtures/README.md`).
#[derive(Debug, Clone)]
pub struct Fixture {
    pub name: String,
    pub dir: PathBuf,
    pub description: String,
    /// Translation units, compiled in this order.
    pub sources: Vec<String>,
    /// Files copied from `fixtures/common/`.
    pub common: Vec<String>,
    /// Flags added after every matrix configuration's flags.
    pub cflags: Vec<String>,
    /// Further complete flag sets, each run once with gcc (e.g. `-O1`).
    pub also_cflags: Vec<Vec<String>>,
    /// Matrix configurations (name or `prefix*`) this fixture skips, with why.
    pub unsupported: BTreeMap<String, String>,
    /// Configurations (name or `prefix*`) known to fail, with the exact
    /// failure; they run, and a failure is reported as expected.
    pub expected_fail: BTreeMap<String, String>,
    /// Extra arguments for the link (after the objects, before the loader).
    pub ldflags: Vec<String>,
    /// For the base given to hpbuild only: file name -> fixture file to use instead.
    pub hpbuild_base_sources: BTreeMap<String, String>,
    /// hpbuild must fail, and one stderr line must contain all of these.
    pub hpbuild_fails_with: Option<Vec<String>>,
    pub steps: Vec<Step>,
}

impl Fixture {
    /// Loads `fixtures/<name>/fixture.json`.
    pub fn load(name: &str) -> Res<Fixture> {
        let dir = fixtures_dir().join(name);
        let path = dir.join("fixture.json");
        let text =
            fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(name, &dir, &v).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn parse(name: &str, dir: &Path, v: &Value) -> Res<Fixture> {
        let obj = v.as_object().ok_or("the top level must be an object")?;
        check_keys(
            obj,
            &[
                "description",
                "sources",
                "common",
                "cflags",
                "also_cflags",
                "ldflags",
                "hpbuild_base_sources",
                "hpbuild_fails_with",
                "unsupported",
                "expected_fail",
                "steps",
            ],
            "fixture",
        )?;
        let description = obj
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let sources = str_list(
            obj.get("sources").ok_or("\"sources\" is required")?,
            "sources",
        )?;
        if sources.is_empty() {
            return Err("\"sources\" is empty".into());
        }
        let common = match obj.get("common") {
            Some(c) => str_list(c, "common")?,
            None => vec![],
        };
        let cflags = match obj.get("cflags") {
            Some(c) => str_list(c, "cflags")?,
            None => vec!["-g".into()],
        };
        let also_cflags = match obj.get("also_cflags") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| str_list(x, "also_cflags[]"))
                .collect::<Res<_>>()?,
            Some(_) => return Err("\"also_cflags\" must be an array of arrays of strings".into()),
            None => vec![],
        };
        let ldflags = match obj.get("ldflags") {
            Some(c) => str_list(c, "ldflags")?,
            None => vec![],
        };
        let mut hpbuild_base_sources = BTreeMap::new();
        if let Some(m) = obj.get("hpbuild_base_sources") {
            if !m.is_null() {
                let m = m
                    .as_object()
                    .ok_or("\"hpbuild_base_sources\" must be an object")?;
                for (k, v) in m {
                    let v = v
                        .as_str()
                        .ok_or("\"hpbuild_base_sources\" values must be strings")?;
                    hpbuild_base_sources.insert(k.clone(), v.to_string());
                }
            }
        }
        let unsupported = reasons(obj.get("unsupported"), "unsupported")?;
        let expected_fail = reasons(obj.get("expected_fail"), "expected_fail")?;
        let hpbuild_fails_with = opt_needles(obj.get("hpbuild_fails_with"), "hpbuild_fails_with")?;
        let steps = obj
            .get("steps")
            .and_then(Value::as_array)
            .ok_or("\"steps\" (an array) is required")?
            .iter()
            .enumerate()
            .map(|(i, s)| parse_step(s, i))
            .collect::<Res<Vec<_>>>()?;
        let f = Fixture {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            description,
            sources,
            common,
            cflags,
            also_cflags,
            unsupported,
            expected_fail,
            ldflags,
            hpbuild_base_sources,
            hpbuild_fails_with,
            steps,
        };
        f.validate()?;
        Ok(f)
    }

    fn validate(&self) -> Res<()> {
        for (what, map) in [
            ("unsupported", &self.unsupported),
            ("expected_fail", &self.expected_fail),
        ] {
            for (pat, why) in map {
                if !MATRIX.iter().any(|c| config_matches(pat, c.name)) && !pat.starts_with("also") {
                    return Err(format!(
                        "{what}: {pat:?} matches no configuration of the matrix"
                    ));
                }
                if why.trim().is_empty() {
                    return Err(format!("{what}: {pat:?} needs a reason"));
                }
            }
        }
        if !self.dir.join("fix.patch").is_file() {
            return Err("fix.patch is missing".into());
        }
        for s in &self.sources {
            if !self.dir.join(s).is_file() && !self.common.contains(s) {
                return Err(format!(
                    "source {s} is neither in the fixture nor in \"common\""
                ));
            }
        }
        for c in &self.common {
            if !fixtures_dir().join("common").join(c).is_file() {
                return Err(format!("common file {c} is not in fixtures/common/"));
            }
        }
        for (k, v) in &self.hpbuild_base_sources {
            if !self.dir.join(v).is_file() {
                return Err(format!(
                    "hpbuild_base_sources: {k} -> {v}, but {v} is not in the fixture"
                ));
            }
        }
        let applies = self.steps.iter().any(|s| matches!(s, Step::Apply { .. }));
        if self.hpbuild_fails_with.is_some() && applies {
            return Err("a fixture whose hpbuild must fail cannot have apply steps".into());
        }
        let mut pending_bg = false;
        for s in &self.steps {
            match s {
                Step::Apply {
                    background: true, ..
                } if pending_bg => {
                    return Err("two background applies without wait_apply in between".into())
                }
                Step::Apply {
                    background: true, ..
                } => pending_bg = true,
                Step::Apply { .. } | Step::Revert { .. } if pending_bg => {
                    return Err("apply/revert while a background apply is pending".into())
                }
                Step::WaitApply if !pending_bg => {
                    return Err("wait_apply without a background apply".into())
                }
                Step::WaitApply => pending_bg = false,
                _ => {}
            }
        }
        if pending_bg {
            return Err("a background apply is never waited for".into());
        }
        Ok(())
    }

    /// The exact compiler and flags of matrix configuration `c` for this fixture.
    pub fn build_for(&self, c: &Config) -> Build {
        let mut cflags: Vec<String> = c.cflags.iter().map(|s| s.to_string()).collect();
        cflags.extend(self.cflags.iter().cloned());
        let mut ldflags = self.ldflags.clone();
        ldflags.extend(c.ldflags.iter().map(|s| s.to_string()));
        Build {
            name: c.name.into(),
            cc: c.cc.into(),
            cflags,
            ldflags,
        }
    }

    /// The build of a named configuration: a matrix name, or `also-N` for
    /// the N-th `also_cflags` set (compiled with gcc).
    pub fn build(&self, name: &str) -> Res<Build> {
        if let Some(c) = config(name) {
            return Ok(self.build_for(c));
        }
        let n: Option<usize> = name.strip_prefix("also-").and_then(|n| n.parse().ok());
        match n.and_then(|n| self.also_cflags.get(n)) {
            Some(set) => Ok(Build {
                name: name.into(),
                cc: "gcc".into(),
                cflags: set.clone(),
                ldflags: self.ldflags.clone(),
            }),
            None => Err(format!("no configuration {name:?}")),
        }
    }

    /// Names of the `also_cflags` builds.
    pub fn also_names(&self) -> Vec<String> {
        (0..self.also_cflags.len())
            .map(|i| format!("also-{i}"))
            .collect()
    }

    /// Why configuration `name` is skipped, if it is.
    pub fn unsupported_reason(&self, name: &str) -> Option<&str> {
        self.unsupported
            .iter()
            .find(|(p, _)| config_matches(p, name))
            .map(|(_, r)| r.as_str())
    }

    /// Why configuration `name` is expected to fail, if it is.
    pub fn expected_fail_reason(&self, name: &str) -> Option<&str> {
        self.expected_fail
            .iter()
            .find(|(p, _)| config_matches(p, name))
            .map(|(_, r)| r.as_str())
    }

    /// The version of the code each step's answer comes from (None: not
    /// determined, e.g. while a background apply is in flight). Used by the
    /// consistency check.
    pub fn step_versions(&self) -> Vec<Option<Version>> {
        let mut cur = Some(Version::Old);
        let mut out = Vec::new();
        for s in &self.steps {
            match s {
                Step::Send { version, .. } => out.push(version.or(cur)),
                Step::Apply {
                    expect_fail: Some(_),
                    ..
                }
                | Step::Revert {
                    expect_fail: Some(_),
                    ..
                } => out.push(None),
                Step::Apply {
                    background: true, ..
                } => {
                    cur = None;
                    out.push(None)
                }
                Step::Apply { .. } | Step::WaitApply => {
                    cur = Some(Version::New);
                    out.push(None)
                }
                Step::Revert { .. } => {
                    cur = Some(Version::Old);
                    out.push(None)
                }
            }
        }
        out
    }
}

/// Names of all fixtures: the directories under `fixtures/` holding a
/// `fixture.json` (other directories, such as `common/`, are not fixtures).
pub fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(fixtures_dir())
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().join("fixture.json").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `{"config or prefix*": "reason"}`.
fn reasons(v: Option<&Value>, what: &str) -> Res<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let Some(v) = v else { return Ok(out) };
    let m = v
        .as_object()
        .ok_or_else(|| format!("\"{what}\" must be an object {{config: reason}}"))?;
    for (k, r) in m {
        let r = r
            .as_str()
            .ok_or_else(|| format!("\"{what}\".{k} must be a string (the reason)"))?;
        out.insert(k.clone(), r.to_string());
    }
    Ok(out)
}
