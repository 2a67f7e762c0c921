//! Refusing struct and union layout changes. Objects of the old layout may be
//! alive in the running process (on the heap, in globals, on stacks), and
//! replaced functions would read them with the new offsets. Nothing converts
//! them, so a diff that edits a struct's or union's members is refused,
//! naming the type and the members — checked on the source before anything
//! is compiled, because a header change would otherwise recompile every unit
//! only to ship code that misreads memory.

use crate::bail;
use crate::diff::Diff;
use crate::error::Result;
use crate::tree::Trees;
use extern_gen::{Change, ItemKind};

pub fn refuse_layout_changes(diff: &Diff, trees: &Trees) -> Result<()> {
    for f in diff.files.iter().filter(|f| f.is_c() && !f.added && !f.deleted) {
        let (Ok(old), Ok(new)) = (
            std::fs::read_to_string(trees.orig.join(&f.path)),
            std::fs::read_to_string(trees.patched.join(&f.path)),
        ) else {
            continue;
        };
        if let Some((name, members)) = changed_aggregate(&old, &new) {
            bail!(
                "{}: {name} changes its members ({members}); objects of the old layout may be live in the running process, and a live patch cannot convert them — keep the layout (e.g. add new state in a separate variable) or restart the program",
                f.path
            );
        }
    }
    Ok(())
}

/// The first struct/union definition whose members differ, with the members
/// that are new or changed on the patched side.
fn changed_aggregate(old: &str, new: &str) -> Option<(String, String)> {
    let (old_file, new_file) = (extern_gen::parse(old).ok()?, extern_gen::parse(new).ok()?);
    for item in extern_gen::changed_items(old, new).ok()? {
        if item.kind != ItemKind::Type || item.change != Change::Modified {
            continue;
        }
        let name = item.name?;
        let body = |file: &extern_gen::CFile, text: &str| {
            file.find(ItemKind::Type, &name)
                .first()
                .map(|i| file.item_text(text, i).to_string())
        };
        let (Some(before), Some(after)) = (body(&old_file, old), body(&new_file, new)) else {
            continue;
        };
        let is_aggregate = |t: &str| {
            (t.contains("struct") || t.contains("union")) && t.contains('{') && !t.contains("enum")
        };
        if !is_aggregate(&before) {
            continue;
        }
        let (m_old, m_new) = (members(&before), members(&after));
        if m_old == m_new {
            continue;
        }
        let changed: Vec<&String> = m_new.iter().filter(|m| !m_old.contains(m)).collect();
        let removed: Vec<&String> = m_old.iter().filter(|m| !m_new.contains(m)).collect();
        let shown: Vec<String> = if changed.is_empty() {
            removed.iter().take(3).map(|m| format!("removed `{m}`")).collect()
        } else {
            changed.iter().take(3).map(|m| format!("`{m}`")).collect()
        };
        return Some((name, shown.join(", ")));
    }
    None
}

/// Member declarations of a struct/union text, comments dropped and
/// whitespace folded, in order.
fn members(text: &str) -> Vec<String> {
    let Some(open) = text.find('{') else {
        return Vec::new();
    };
    let close = text.rfind('}').unwrap_or(text.len());
    let body = strip_comments(&text[open + 1..close.max(open + 1)]);
    body.split(';')
        .map(|m| m.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|m| !m.is_empty())
        .collect()
}

fn strip_comments(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("/*") {
            rest = r.find("*/").map_or("", |i| &r[i + 2..]);
            out.push(' ');
        } else if let Some(r) = rest.strip_prefix("//") {
            rest = r.find('\n').map_or("", |i| &r[i..]);
        } else {
            let c = rest.chars().next().expect("non-empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_type_change_is_named() {
        let old = "struct A {\n  int n; /* count */\n  short col;\n};\nint f(void){return 0;}\n";
        let new = "struct A {\n  int n; /* count */\n  int col;\n};\nint f(void){return 0;}\n";
        let (name, members) = changed_aggregate(old, new).unwrap();
        assert_eq!(name, "struct A");
        assert!(members.contains("int col"), "{members}");
    }

    #[test]
    fn comment_only_and_function_changes_pass() {
        let old = "struct A { int n; /* a */ };\nint f(void){return 0;}\n";
        let new = "struct A { int n; /* b */ };\nint f(void){return 1;}\n";
        assert!(changed_aggregate(old, new).is_none());
    }
}
