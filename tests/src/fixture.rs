//! A parsed `fixture.json` (schema: `fixtures/README.md`).

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
    /// The main flag set; `also_cflags` lists further sets to run.
    pub cflags: Vec<String>,
    pub also_cflags: Vec<Vec<String>>,
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
            None => vec!["-O2".into(), "-g".into()],
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
            ldflags,
            hpbuild_base_sources,
            hpbuild_fails_with,
            steps,
        };
        f.validate()?;
        Ok(f)
    }

    fn validate(&self) -> Res<()> {
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

    /// Every flag set to run: `cflags` first, then `also_cflags`.
    pub fn flag_sets(&self) -> Vec<Vec<String>> {
        let mut v = vec![self.cflags.clone()];
        v.extend(self.also_cflags.iter().cloned());
        v
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
