//! Small helpers over tree-sitter-c nodes, kept apart from the item walk so
//! the walk reads as a list of cases.

use std::ops::Range;

use tree_sitter::Node;

/// Storage-class keywords that must not appear on a generated re-declaration
/// (`extern` is added back by the generator where it belongs).
pub(crate) fn is_dropped_storage(word: &str) -> bool {
    matches!(
        word,
        "static"
            | "extern"
            | "auto"
            | "register"
            | "inline"
            | "__inline"
            | "__inline__"
            | "__forceinline"
    )
}

/// Byte ranges of ERROR and MISSING nodes.  Only subtrees that report an
/// error are visited.
pub(crate) fn collect_errors(n: Node, out: &mut Vec<Range<usize>>) {
    if n.is_error() || n.is_missing() {
        out.push(n.byte_range());
        return;
    }
    if !n.has_error() {
        return;
    }
    let mut c = n.walk();
    for ch in n.children(&mut c) {
        collect_errors(ch, out);
    }
}

/// Collapse runs of whitespace to one space and trim.
pub(crate) fn normalize_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The tokens of `nodes` joined by single spaces, comments left out.  Two
/// texts differing only in layout or comments get the same fingerprint;
/// string and character contents are single tokens and so compare exactly.
pub(crate) fn fingerprint(text: &str, nodes: &[Node]) -> String {
    let mut out = String::new();
    for n in nodes {
        leaves(text, *n, &mut out);
    }
    out
}

fn leaves(text: &str, n: Node, out: &mut String) {
    if n.kind() == "comment" {
        return;
    }
    if n.child_count() == 0 {
        let t = &text[n.byte_range()];
        // Macro bodies (preproc_arg) are one token holding free text.
        let t = if n.kind() == "preproc_arg" {
            normalize_ws(t)
        } else {
            t.trim().to_string()
        };
        if !t.is_empty() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&t);
        }
        return;
    }
    let mut c = n.walk();
    for ch in n.children(&mut c) {
        leaves(text, ch, out);
    }
}

/// `struct s` for a struct/union/enum specifier with a tag.
pub(crate) fn tag_name(text: &str, spec: Node) -> Option<String> {
    let kw = spec.kind().strip_suffix("_specifier")?;
    let name = spec.child_by_field_name("name")?;
    Some(format!("{kw} {}", &text[name.byte_range()]))
}

/// The name a declarator declares, and whether that name is a function.
///
/// The name's own type is given by the declarator operator applied closest
/// to the identifier: `char *f(void)` is a function (the call binds
/// tighter than `*`), `int (*fp)(int)` is a pointer, `int (*g(int))(int)` a
/// function returning a function pointer.  So we descend to the identifier
/// and remember the innermost pointer/array/function operator.
pub(crate) fn declarator_name(text: &str, decl: Node) -> (Option<String>, bool) {
    let mut n = decl;
    let mut innermost_is_fn = false;
    loop {
        match n.kind() {
            "identifier" | "type_identifier" | "field_identifier" | "primitive_type" => {
                if n.is_missing() {
                    return (None, innermost_is_fn);
                }
                return (Some(text[n.byte_range()].to_string()), innermost_is_fn);
            }
            "parenthesized_declarator" | "attributed_declarator" => {
                let mut c = n.walk();
                let next = n.named_children(&mut c).find(|ch| {
                    !matches!(
                        ch.kind(),
                        "attribute_declaration" | "comment" | "ms_call_modifier"
                    )
                });
                match next {
                    Some(x) => n = x,
                    None => return (None, innermost_is_fn),
                }
                continue;
            }
            "function_declarator" => innermost_is_fn = true,
            "pointer_declarator" | "array_declarator" => innermost_is_fn = false,
            _ => {}
        }
        match n.child_by_field_name("declarator") {
            Some(x) => n = x,
            None => return (None, innermost_is_fn),
        }
    }
}

/// A declarator's text fit for a declaration: whitespace collapsed, and an
/// old-style (K&R) identifier list replaced by `()`, since `int f(a, b);`
/// is not a valid declaration while `int f();` declares the same function.
pub(crate) fn prototype_declarator(text: &str, decl: Node) -> String {
    let range = decl.byte_range();
    let mut kr_params: Option<Range<usize>> = None;
    find_kr_params(decl, &mut kr_params);
    let s = match kr_params {
        Some(p) => format!(
            "{}(){}",
            &text[range.start..p.start],
            &text[p.end..range.end]
        ),
        None => text[range].to_string(),
    };
    normalize_ws(&s)
}

fn find_kr_params(n: Node, out: &mut Option<Range<usize>>) {
    if n.kind() == "function_declarator" {
        if let Some(p) = n.child_by_field_name("parameters") {
            let mut c = p.walk();
            let kr = p.named_children(&mut c).any(|ch| ch.kind() == "identifier");
            if kr {
                *out = Some(p.byte_range());
                return;
            }
        }
    }
    if let Some(d) = n.child_by_field_name("declarator") {
        find_kr_params(d, out);
    } else if n.kind() == "parenthesized_declarator" {
        if let Some(d) = n.named_child(0) {
            find_kr_params(d, out);
        }
    }
}

/// Identifiers occurring under `n` (not field names, labels or type names),
/// sorted and deduplicated.
pub(crate) fn identifiers(text: &str, n: Node) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![n];
    while let Some(x) = stack.pop() {
        if x.kind() == "identifier" && !x.is_missing() {
            out.push(text[x.byte_range()].to_string());
        }
        let mut c = x.walk();
        stack.extend(x.children(&mut c));
    }
    out.sort();
    out.dedup();
    out
}
