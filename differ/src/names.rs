//! What a symbol's name says about where the compiler got it: the numbers
//! GCC appends (`calls.0`, `foo.isra.0`), its clones of a function
//! (`.constprop`, `.isra`, `.part`, `.cold`, …) and static locals (GCC's
//! `calls.0`, clang's `count.calls`).
//!
//! One module for every reading of such names; the differ and the builder
//! both use it. The readings are deliberately different and each has its own
//! function:
//!
//! | name              | [`strip_numeric`] | [`clone_of`]          | [`clone_source`] | [`source_function`] |
//! |-------------------|-------------------|-----------------------|------------------|---------------------|
//! | `f.constprop.0`   | `f.constprop`     | `(f, constprop)`      | `f`              | `f`                 |
//! | `f.part.0.cold`   | `f.part.cold`     | `(f, part)`           | `f`              | `f`                 |
//! | `x.1234`, `calls.0` | `x`, `calls`    | none                  | itself           | `x`, `calls`        |
//! | `f.lto_priv.0`    | `f.lto_priv`      | none                  | itself           | `f`                 |
//!
//! Only names: nothing here looks at an object (whether a symbol is data or
//! a function is the caller's knowledge).

/// Name components GCC gives to the functions it derives from X.
const CLONE_KINDS: [&str; 6] = ["constprop", "isra", "part", "cold", "clone", "localalias"];

/// `name` without its numeric dot-components (the first component always
/// stays): `foo.isra.0` → `foo.isra`, `calls.12` → `calls`,
/// `foo.part.0.cold` → `foo.part.cold`. What stays the same when GCC
/// renumbers clones and static locals after an edit elsewhere in the file.
pub fn strip_numeric(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, part) in name.split('.').enumerate() {
        if i > 0 && !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if i > 0 {
            out.push('.');
        }
        out.push_str(part);
    }
    out
}

/// The name has a numeric dot-component: compiler-numbered.
pub fn is_numbered(name: &str) -> bool {
    strip_numeric(name) != name
}

/// A `.cold` part split off a function by GCC (`foo.cold`,
/// `foo.part.0.cold`, and GCC 8's `foo.cold.0`).
pub fn is_cold(name: &str) -> bool {
    strip_numeric(name).ends_with(".cold")
}

/// The function a cold part was split from: everything before the last
/// `.cold` (`foo.part.0.cold` → `foo.part.0`, `foo.cold.0` → `foo`).
pub fn cold_parent(name: &str) -> &str {
    name.rsplit_once(".cold").map_or(name, |(p, _)| p)
}

/// `name` less a trailing `.cold`, else `name` itself: `foo.cold` → `foo`,
/// `foo.part.0.cold` → `foo.part.0`, but `foo.cold.0` stays (unlike
/// [`cold_parent`]).
pub fn without_cold_suffix(name: &str) -> &str {
    name.strip_suffix(".cold").unwrap_or(name)
}

/// `Some((X, kind))` when `name` is a compiler-made clone of function X: a
/// dot-component names a clone kind, the first one found is the kind
/// (`f.part.0.cold` → `(f, part)`). A mere number (`x.1234`) is no clone.
pub fn clone_of(name: &str) -> Option<(&str, &str)> {
    let mut parts = name.split('.');
    let parent = parts.next()?;
    parts
        .find(|p| CLONE_KINDS.contains(p))
        .map(|kind| (parent, kind))
        .filter(|_| !parent.is_empty())
}

/// The function a clone was made from, or `name` itself when it is not a
/// clone by [`clone_of`] (`x.1234` stays `x.1234`).
pub fn clone_source(name: &str) -> &str {
    clone_of(name).map_or(name, |(p, _)| p)
}

/// The source function a function symbol's code comes from: the text before
/// the first dot, since a C identifier has none and every dotted suffix is
/// the compiler's (`f.part.0`, `f.cold`, `x.1234`, `f.lto_priv.0` → `f`/`x`).
pub fn source_function(symbol: &str) -> &str {
    symbol.split('.').next().unwrap_or(symbol)
}

/// The source name of a static local: `calls` for GCC's `calls.3` and for
/// clang's `count.calls`.
pub fn static_local_base(name: &str) -> String {
    let n = strip_numeric(name);
    n.split_once('.').map_or(n.clone(), |(_, b)| b.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_components() {
        assert_eq!(strip_numeric("foo.isra.0"), "foo.isra");
        assert_eq!(strip_numeric("calls.12"), "calls");
        assert_eq!(strip_numeric("foo.part.0.cold"), "foo.part.cold");
        assert_eq!(strip_numeric("main"), "main");
        assert_eq!(strip_numeric("v2.0x"), "v2.0x");
        assert_eq!(strip_numeric("7.1"), "7");
        assert!(is_numbered("CSWTCH.11"));
        assert!(!is_numbered("count.calls"));
    }

    #[test]
    fn cold_parts() {
        assert!(is_cold("foo.part.0.cold"));
        assert!(is_cold("foo.cold.0"));
        assert!(!is_cold("cold"));
        assert!(!is_cold("foo.coldest"));
        assert_eq!(cold_parent("foo.part.0.cold"), "foo.part.0");
        assert_eq!(cold_parent("foo.cold.0"), "foo");
        assert_eq!(without_cold_suffix("foo.part.0.cold"), "foo.part.0");
        assert_eq!(without_cold_suffix("foo.cold.0"), "foo.cold.0");
    }

    #[test]
    fn clones() {
        assert_eq!(clone_of("f.constprop.0"), Some(("f", "constprop")));
        assert_eq!(clone_of("f.part.0.cold"), Some(("f", "part")));
        assert_eq!(clone_of("f.cold"), Some(("f", "cold")));
        assert_eq!(clone_of("f.localalias"), Some(("f", "localalias")));
        assert_eq!(clone_of("calls.0"), None);
        assert_eq!(clone_of("main"), None);
        assert_eq!(clone_of(".part.0"), None);
        assert_eq!(clone_source("f.isra.0"), "f");
        assert_eq!(clone_source("x.1234"), "x.1234");
    }

    #[test]
    fn source_functions() {
        assert_eq!(source_function("luaV_concat.part.0"), "luaV_concat");
        assert_eq!(source_function("f.constprop.0.isra.0"), "f");
        assert_eq!(source_function("f.cold"), "f");
        assert_eq!(source_function("x.1234"), "x");
        assert_eq!(source_function("f"), "f");
    }

    #[test]
    fn static_locals() {
        assert_eq!(static_local_base("calls.3"), "calls");
        assert_eq!(static_local_base("count.calls"), "calls");
        assert_eq!(static_local_base("calls"), "calls");
    }
}
