//! What hpbuild prints on stdout and stderr once the pipeline has decided:
//! the one-line summary of a patch it wrote, `--explain` (why each function
//! ships, what the diff edits that does not ship, every refusal) and
//! `--json` (the manifest, or the refusals) for tools. The error line itself
//! is `main`'s.

use crate::manifest::Manifest;
use crate::BuildArgs;
use serde::Serialize;

/// A change the running process cannot take, with the unit it is in.
#[derive(Serialize)]
pub struct Refused<'a> {
    pub unit: &'a str,
    pub symbol: &'a str,
    pub message: &'a str,
}

/// `--json` and `--explain` output of a build that wrote a patch, then the
/// summary line on stderr (stdout stays for what was asked for).
pub fn built(args: &BuildArgs, m: &Manifest, json: &str) {
    if args.json {
        println!("{json}");
    }
    if args.explain {
        explain(m);
    }
    eprintln!("hpbuild: {}", summary(m));
}

fn explain(m: &Manifest) {
    for r in &m.replaced {
        println!("{}{}: {}", r.name, in_file(&r.file), r.why.join("; "));
    }
    for a in &m.added {
        println!("{a}: new function");
    }
    for d in &m.added_data {
        println!("{d}: new variable, defined and initialised by the patch (see the .c)");
    }
    for u in &m.units {
        for f in &u.edited_not_shipped {
            println!("{f} ({}): edited, no code change: not shipped", u.source);
        }
    }
    for n in &m.notes {
        println!("note: {n}");
    }
}

fn in_file(file: &str) -> String {
    if file.is_empty() {
        String::new()
    } else {
        format!(" ({file})")
    }
}

/// "wrote fix.hpo: replaces 2 functions (price, serve), adds 1 variable
/// (bonus); 3 notes (--explain)".
pub fn summary(m: &Manifest) -> String {
    let names = |v: &[&str]| -> String {
        if v.len() <= 4 {
            v.join(", ")
        } else {
            format!("{}, … ({} more)", v[..3].join(", "), v.len() - 3)
        }
    };
    let replaced: Vec<&str> = m.replaced.iter().map(|r| r.name.as_str()).collect();
    let mut parts = vec![format!(
        "replaces {} ({})",
        count(replaced.len(), "function"),
        names(&replaced)
    )];
    for (list, what) in [(&m.added, "function"), (&m.added_data, "variable")] {
        if !list.is_empty() {
            let v: Vec<&str> = list.iter().map(String::as_str).collect();
            parts.push(format!("adds {} ({})", count(v.len(), what), names(&v)));
        }
    }
    if let Some(s) = &m.signed {
        let shown = format::HP_FINGERPRINT_SHOWN as usize;
        parts.push(format!("signed with key {}", &s.key_fingerprint[..shown]));
    }
    let notes = match m.notes.len() {
        0 => String::new(),
        n => format!("; {} (--explain)", count(n, "note")),
    };
    format!("wrote {}: {}{notes}", m.patch_object, parts.join(", "))
}

/// "1 function", "2 functions".
pub fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// Every refusal: on stdout as JSON (`--json`) or one line each
/// (`--explain`). The error line names the first.
pub fn refused(args: &BuildArgs, all: &[Refused]) {
    if args.json {
        let doc = serde_json::json!({ "refused": all });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("refusals serialise")
        );
    }
    if args.explain {
        for r in all {
            println!("refused: {}: {}", r.unit, r.message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_read_as_english() {
        assert_eq!(count(1, "function"), "1 function");
        assert_eq!(count(0, "function"), "0 functions");
        assert_eq!(count(45, "refusal"), "45 refusals");
    }
}
