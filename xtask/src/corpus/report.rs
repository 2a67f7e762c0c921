//! The corpus table: one row per fix.

use std::path::Path;

pub struct Row {
    pub package: String,
    pub fix: String,
    /// "name (why)" for every function the patch ships.
    pub shipped: Vec<String>,
    pub build_secs: f64,
    pub apply: String,
    pub before: String,
    pub after: String,
    pub state: String,
    pub ok: bool,
}

impl Row {
    pub fn new(package: &str, fix: &str) -> Row {
        Row {
            package: package.into(),
            fix: fix.into(),
            shipped: Vec::new(),
            build_secs: 0.0,
            apply: String::new(),
            before: String::new(),
            after: String::new(),
            state: String::new(),
            ok: false,
        }
    }

    pub fn failed(package: &str, fix: &str, why: &str) -> Row {
        let mut r = Row::new(package, fix);
        r.apply = format!("ERROR: {why}");
        r
    }
}

/// What the manifest says the patch is for (`target`, or `targets` for
/// several outputs; none: the executable).
pub fn targets(manifest: &Path) -> Result<Vec<String>, String> {
    let m = read_manifest(manifest)?;
    let names = match m["target"].as_str() {
        Some(one) => vec![one.to_string()],
        None => m["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(String::from))
            .collect(),
    };
    Ok(names)
}

fn read_manifest(manifest: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(manifest)
        .map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", manifest.display()))
}

/// The shipped functions and why, from the patch manifest (OUT.json).
pub fn shipped(manifest: &Path) -> Result<Vec<String>, String> {
    let m = read_manifest(manifest)?;
    let mut out = Vec::new();
    for r in m["replaced"].as_array().into_iter().flatten() {
        let why: Vec<&str> = r["why"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w.as_str())
            .collect();
        out.push(format!(
            "{} ({})",
            r["name"].as_str().unwrap_or("?"),
            why.join("; ")
        ));
    }
    for a in m["added"].as_array().into_iter().flatten() {
        out.push(format!("{} (new function)", a.as_str().unwrap_or("?")));
    }
    Ok(out)
}

pub fn print(rows: &[Row]) {
    println!("\n| fix | functions shipped (why) | patch build s | apply | before | after | state | result |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        let shipped = if r.shipped.is_empty() {
            "—".to_string()
        } else {
            r.shipped.join("<br>")
        };
        println!(
            "| {}/{} | {} | {:.1} | {} | {} | {} | {} | {} |",
            r.package,
            r.fix,
            shipped,
            r.build_secs,
            cell(&r.apply),
            cell(&r.before),
            cell(&r.after),
            cell(&r.state),
            if r.ok { "ok" } else { "FAIL" }
        );
    }
    let ok = rows.iter().filter(|r| r.ok).count();
    println!("\ncorpus: {ok} of {} case(s) as expected", rows.len());
}

fn cell(s: &str) -> String {
    if s.is_empty() {
        "—".into()
    } else {
        s.replace('|', "\\|")
    }
}
