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
use crate::parsed::{self, Source};
use crate::tree::Trees;
use extern_gen::{Change, ItemKind};

pub fn refuse_layout_changes(diff: &Diff, trees: &Trees) -> Result<()> {
    for f in diff
        .files
        .iter()
        .filter(|f| f.is_c() && !f.added && !f.deleted)
    {
        let (Some(old), Some(new)) =
            parsed::load_pair(&trees.orig.join(&f.path), &trees.patched.join(&f.path))
        else {
            continue;
        };
        if let Some(what) = changed_aggregate(&old, &new) {
            bail!(
                "{}: {what}; objects of the old layout may be live in the running process, and a live patch cannot convert them — keep the layout (e.g. add new state in a separate variable) or restart the program",
                f.path
            );
        }
    }
    Ok(())
}

/// The first struct/union definition whose members differ, described as
/// "struct A changes its members (`int col`)" — each struct declared inside
/// it (`struct B { ... } *p;`) named on its own.
fn changed_aggregate(old: &Source, new: &Source) -> Option<String> {
    let (old_file, new_file) = (old.file.as_ref()?, new.file.as_ref()?);
    let (old, new) = (old.text.as_str(), new.text.as_str());
    for item in extern_gen::changed::compare(old_file, new_file) {
        if item.kind != ItemKind::Type || item.change != Change::Modified {
            continue;
        }
        let name = item.name?;
        let body = |file: &extern_gen::CFile, text: &str| {
            file.find(ItemKind::Type, &name)
                .first()
                .map(|i| file.item_text(text, i).to_string())
        };
        let (Some(before), Some(after)) = (body(old_file, old), body(new_file, new)) else {
            continue;
        };
        let is_aggregate = |t: &str| {
            (t.contains("struct") || t.contains("union")) && t.contains('{') && !t.contains("enum")
        };
        if !is_aggregate(&before) {
            continue;
        }
        let (old_structs, new_structs) = (
            struct_members(&name, &before),
            struct_members(&name, &after),
        );
        let described: Vec<String> = new_structs
            .iter()
            .filter_map(|(tag, m_new)| {
                let m_old = old_structs
                    .iter()
                    .find(|(t, _)| t == tag)
                    .map(|(_, m)| m.as_slice())
                    .unwrap_or(&[]);
                describe(tag, m_old, m_new)
            })
            .collect();
        if !described.is_empty() {
            return Some(described.join("; "));
        }
    }
    None
}

/// Each struct/union of a definition's text with its member declarations
/// (comments dropped, whitespace folded): first the outer one as `outer`,
/// then every tagged struct/union declared inside its body under its own
/// name (`struct X { ... } *p;` is member `struct X *p` of the outer one).
/// Members of an untagged nested body belong to the enclosing struct.
fn struct_members(outer: &str, text: &str) -> Vec<(String, Vec<String>)> {
    let text = strip_comments(text);
    let Some(open) = text.find('{') else {
        return Vec::new();
    };
    let close = text.rfind('}').unwrap_or(text.len()).max(open + 1);
    let mut out = vec![(outer.to_string(), Vec::new())];
    body_members(&text[open + 1..close], 0, &mut out);
    out
}

/// Members of `body` into `out[at]`; nested tagged bodies get their own entry.
fn body_members(body: &str, at: usize, out: &mut Vec<(String, Vec<String>)>) {
    let (mut depth, mut start, mut nested_open) = (0usize, 0usize, None);
    let mut member = String::new();
    for (i, c) in body.char_indices() {
        match c {
            '{' => {
                if depth == 0 {
                    member.push_str(&body[start..i]);
                    nested_open = Some(i);
                }
                depth += 1;
            }
            '}' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    let inner = &body[nested_open.unwrap_or(i) + 1..i];
                    let words: Vec<&str> = member.split_whitespace().collect();
                    match words.as_slice() {
                        [.., kw @ ("struct" | "union"), tag] => {
                            out.push((format!("{kw} {tag}"), Vec::new()));
                            let idx = out.len() - 1;
                            body_members(inner, idx, out);
                        }
                        _ => body_members(inner, at, out),
                    }
                    start = i + 1;
                }
            }
            ';' if depth == 0 => {
                member.push_str(&body[start..i]);
                let m = member.split_whitespace().collect::<Vec<_>>().join(" ");
                let anonymous = matches!(m.as_str(), "struct" | "union");
                if !m.is_empty() && !anonymous {
                    out[at].1.push(m);
                }
                member.clear();
                start = i + 1;
            }
            _ => {}
        }
    }
}

/// "TAG changes its members (...)" naming up to three new or changed
/// members (or removed ones when nothing was added), or None if equal.
fn describe(tag: &str, m_old: &[String], m_new: &[String]) -> Option<String> {
    if m_old == m_new {
        return None;
    }
    let changed: Vec<&String> = m_new.iter().filter(|m| !m_old.contains(m)).collect();
    let shown: Vec<String> = if changed.is_empty() {
        let removed = m_old.iter().filter(|m| !m_new.contains(m));
        removed.take(3).map(|m| format!("removed `{m}`")).collect()
    } else {
        changed.iter().take(3).map(|m| format!("`{m}`")).collect()
    };
    Some(format!("{tag} changes its members ({})", shown.join(", ")))
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

    fn aggregate(old: &str, new: &str) -> Option<String> {
        let src = |t: &str| Source {
            text: t.to_string(),
            file: extern_gen::parse(t).ok(),
        };
        changed_aggregate(&src(old), &src(new))
    }

    #[test]
    fn member_type_change_is_named() {
        let old = "struct A {\n  int n; /* count */\n  short col;\n};\nint f(void){return 0;}\n";
        let new = "struct A {\n  int n; /* count */\n  int col;\n};\nint f(void){return 0;}\n";
        let what = aggregate(old, new).unwrap();
        assert!(what.starts_with("struct A changes its members"), "{what}");
        assert!(what.contains("int col"), "{what}");
    }

    #[test]
    fn comment_only_and_function_changes_pass() {
        let old = "struct A { int n; /* a */ };\nint f(void){return 0;}\n";
        let new = "struct A { int n; /* b */ };\nint f(void){return 1;}\n";
        assert!(aggregate(old, new).is_none());
    }

    #[test]
    fn nested_struct_members_are_named_under_their_own_struct() {
        let old = "struct AggInfo {\n  u8 a;\n  int nSortingColumn;\n  struct AggInfo_col {\n    int iTable;\n    i16 iColumn;\n  } *aCol;\n};\n";
        let new = "struct AggInfo {\n  u8 a;\n  u32 nSortingColumn;\n  struct AggInfo_col {\n    int iTable;\n    int iColumn;\n  } *aCol;\n};\n";
        let what = aggregate(old, new).unwrap();
        assert_eq!(
            what,
            "struct AggInfo changes its members (`u32 nSortingColumn`); struct AggInfo_col changes its members (`int iColumn`)"
        );
    }
}
