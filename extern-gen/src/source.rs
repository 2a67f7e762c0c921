//! Tree-sitter analysis of one C file: its top-level items with names, line
//! spans and byte ranges.
//!
//! hpbuild needs to know, for a patched file, which top-level items a diff
//! touches and what a global's declaration looks like, without running the
//! preprocessor (the build's flags are not always known, and the reviewer
//! should see the code as written).  Tree-sitter gives a best-effort parse of
//! the unpreprocessed text; where real code's macros defeat it we still return
//! what we can and flag the affected items `uncertain` instead of failing.

use std::collections::HashMap;
use std::fmt;
use std::ops::{Range, RangeInclusive};

use tree_sitter::{Node, Parser};

use crate::syntax;

/// What a top-level item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ItemKind {
    /// A function definition (with body).
    Function,
    /// A top-level object declaration: a definition (possibly with
    /// initializer) or an `extern` declaration (see [`Item::is_extern`]).
    /// A declaration with several declarators gives one item per name.
    Variable,
    /// A function declaration without body.
    Prototype,
    /// struct/union/enum definition or typedef.  Tag types are named
    /// `"struct s"`, `"union u"`, `"enum e"`; typedefs by their plain name.
    Type,
    /// `#include`; the name is the path as written, e.g. `<stdio.h>`.
    Include,
    /// Other preprocessor lines: `#define` (named by the macro), `#undef`,
    /// `#pragma`, ... and the lines of conditional groups (see
    /// [`Item::conditional`]).
    Preproc,
    /// Anything else at top level, e.g. a macro invocation `FOO(bar);` or an
    /// unparseable region.
    Other,
}

/// Which line of a conditional group a [`ItemKind::Preproc`] item is.
/// Recorded so that generated sources can keep includes and macros inside
/// the `#if` they were written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Conditional {
    /// `#if`, `#ifdef`, `#ifndef`
    If,
    /// `#elif`, `#elifdef`, `#elifndef`
    Elif,
    /// `#else`
    Else,
    /// `#endif`
    Endif,
}

/// The pieces of a declaration needed to re-declare one of its names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclParts {
    /// Declaration specifiers with storage-class keywords (`static`,
    /// `extern`, `inline`, ...) and macros expanding to them removed, and a
    /// tagged type's body reduced to its tag when it has one.  Whitespace is
    /// collapsed.  Example: `const char` for `static const char *const x[3]`.
    pub specifiers: String,
    /// This name's declarator without initializer, e.g. `*const x[3]` or
    /// `*f(void)`.  Old-style (K&R) parameter lists become `()`.
    pub declarator: String,
    /// Storage keywords that must stay on a re-declaration (`__thread`,
    /// `thread_local`), already included in `specifiers`.
    pub thread_local: bool,
}

/// One top-level item of a C file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub kind: ItemKind,
    /// The declared name; `None` for anonymous types, `#pragma`s, macro
    /// invocations and unparseable regions.
    pub name: Option<String>,
    /// 1-based, inclusive.
    pub start_line: usize,
    /// 1-based, inclusive.
    pub end_line: usize,
    /// Byte range in the file text, trailing whitespace excluded.  Several
    /// items share one range when one declaration declares several names.
    pub byte_range: Range<usize>,
    /// `static`, directly or through an object-like macro of the file
    /// (`#define l_sinline static inline`).
    pub is_static: bool,
    /// The declaration says `extern` (Variable/Prototype).
    pub is_extern: bool,
    /// Tree-sitter reported a syntax error or a missing token within the
    /// item: its name and span are a best guess.
    pub uncertain: bool,
    /// For Preproc items that are lines of a conditional group.
    pub conditional: Option<Conditional>,
    /// For Function, Prototype and Variable items.
    pub decl: Option<DeclParts>,
    /// Whitespace- and comment-insensitive form of the item's own text,
    /// used by [`changed_items`](crate::changed_items).  For one name of a
    /// multi-name declaration: the specifiers plus that name's declarator and
    /// initializer only.
    pub fingerprint: String,
    /// For functions: identifiers used in the body (sorted, deduplicated).
    /// Lets the generator find file-level names a shipped function uses.
    pub references: Vec<String>,
}

impl Item {
    /// Whether the item's line span intersects `lines`.
    pub fn touches(&self, lines: &RangeInclusive<usize>) -> bool {
        self.start_line <= *lines.end() && *lines.start() <= self.end_line
    }

    /// An `extern` declaration of this item's name, e.g.
    /// `extern const char *const names[3];` — `None` unless the item is a
    /// Function, Prototype or Variable.  For functions `extern` is left out
    /// when the specifiers did not parse cleanly: it is optional there, and a
    /// macro of unknown expansion may already contain a storage class.
    pub fn extern_declaration(&self) -> Option<String> {
        let d = self.decl.as_ref()?;
        let ext = match self.kind {
            ItemKind::Variable => true,
            ItemKind::Function | ItemKind::Prototype => !self.uncertain,
            _ => return None,
        };
        Some(format!(
            "{}{} {};",
            if ext { "extern " } else { "" },
            d.specifiers,
            d.declarator
        ))
    }

    /// A forward declaration keeping the item's linkage: `static int f(int);`
    /// for a static function, `int f(int);` otherwise.  Functions and
    /// prototypes only.
    pub fn prototype(&self) -> Option<String> {
        let d = self.decl.as_ref()?;
        if !matches!(self.kind, ItemKind::Function | ItemKind::Prototype) {
            return None;
        }
        Some(format!(
            "{}{} {};",
            if self.is_static { "static " } else { "" },
            d.specifiers,
            d.declarator
        ))
    }
}

/// A parsed C file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CFile {
    /// Top-level items in file order; items inside `#if` groups included.
    pub items: Vec<Item>,
    /// Byte ranges tree-sitter reported as errors or missing tokens.
    pub error_ranges: Vec<Range<usize>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceError {
    /// The C grammar could not be loaded (tree-sitter ABI mismatch).
    Language(String),
    /// Tree-sitter returned no tree (only on cancellation/timeout).
    Parse,
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceError::Language(e) => write!(f, "cannot load the tree-sitter C grammar: {e}"),
            SourceError::Parse => write!(f, "tree-sitter returned no parse tree"),
        }
    }
}

impl std::error::Error for SourceError {}

/// Parse one file's text into its top-level items.
pub fn parse(text: &str) -> Result<CFile, SourceError> {
    let mut parser = Parser::new();
    parser
        .set_language(&tree_sitter_c::LANGUAGE.into())
        .map_err(|e| SourceError::Language(e.to_string()))?;
    let tree = parser.parse(text, None).ok_or(SourceError::Parse)?;
    let root = tree.root_node();

    let mut ctx = Ctx {
        text,
        line_starts: line_starts(text),
        storage_macros: storage_macros(text),
        items: Vec::new(),
    };
    let mut errors = Vec::new();
    syntax::collect_errors(root, &mut errors);
    ctx.walk(root, &[]);

    let mut items = ctx.items;
    for item in &mut items {
        item.uncertain |= errors.iter().any(|e| overlaps(e, &item.byte_range));
    }
    Ok(CFile {
        items,
        error_ranges: errors,
    })
}

impl CFile {
    /// Items whose line span intersects any of `lines` (1-based, inclusive).
    pub fn items_touching(&self, lines: &[RangeInclusive<usize>]) -> Vec<&Item> {
        self.items
            .iter()
            .filter(|it| lines.iter().any(|r| it.touches(r)))
            .collect()
    }

    /// The item's text as written.  `text` must be the text that was parsed.
    pub fn item_text<'t>(&self, text: &'t str, item: &Item) -> &'t str {
        &text[item.byte_range.clone()]
    }

    /// Items of `kind` named `name`, in file order (several when the name is
    /// defined in alternative `#if` branches, or declared more than once).
    pub fn find(&self, kind: ItemKind, name: &str) -> Vec<&Item> {
        self.items
            .iter()
            .filter(|it| it.kind == kind && it.name.as_deref() == Some(name))
            .collect()
    }
}

/// Zero-width ranges (missing tokens) count as overlapping when they sit
/// inside or at the edge of the item.
fn overlaps(e: &Range<usize>, r: &Range<usize>) -> bool {
    if e.start == e.end {
        r.start <= e.start && e.start <= r.end
    } else {
        e.start < r.end && r.start < e.end
    }
}

fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

/// Object-like macros of the file whose expansion contains a storage-class
/// keyword, mapped to whether it is `static`.  A plain line scan: these
/// macros are written `#define NAME static inline` in practice, and knowing
/// them lets us tell that `NAME int f(void)` is static and drop `NAME` when
/// re-declaring `f`.
fn storage_macros(text: &str) -> HashMap<String, bool> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.trim_start().strip_prefix('#') else {
            continue;
        };
        let Some(rest) = rest.trim_start().strip_prefix("define") else {
            continue;
        };
        if !rest.starts_with([' ', '\t']) {
            continue;
        }
        let rest = rest.trim_start();
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if name_len == 0 || rest[name_len..].starts_with('(') {
            continue; // function-like macro
        }
        let words: Vec<&str> = rest[name_len..]
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .collect();
        if words.iter().any(|w| syntax::is_dropped_storage(w)) {
            out.insert(rest[..name_len].to_string(), words.contains(&"static"));
        }
    }
    out
}

struct Ctx<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
    storage_macros: HashMap<String, bool>,
    items: Vec<Item>,
}

impl<'a> Ctx<'a> {
    fn t(&self, n: Node) -> &'a str {
        &self.text[n.byte_range()]
    }

    fn line_of(&self, byte: usize) -> usize {
        match self.line_starts.binary_search(&byte) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }

    fn line_end(&self, byte: usize) -> usize {
        self.text[byte..]
            .find('\n')
            .map_or(self.text.len(), |i| byte + i)
    }

    /// A new item over `range` (trailing whitespace trimmed).
    fn push(
        &mut self,
        kind: ItemKind,
        name: Option<String>,
        range: Range<usize>,
        fingerprint: String,
    ) -> &mut Item {
        let end = range.start + self.text[range.clone()].trim_end().len();
        let range = range.start..end.max(range.start);
        self.items.push(Item {
            kind,
            name: name.filter(|n| !n.is_empty()),
            start_line: self.line_of(range.start),
            end_line: self.line_of(range.end.saturating_sub(1).max(range.start)),
            byte_range: range,
            is_static: false,
            is_extern: false,
            uncertain: false,
            conditional: None,
            decl: None,
            fingerprint,
            references: Vec::new(),
        });
        self.items.last_mut().unwrap()
    }

    /// Walk the item-level children of `parent` (the translation unit, a
    /// conditional group, an `extern "C" {}` block or an ERROR node), skipping
    /// those in `skip` (a group's condition and alternative).
    fn walk(&mut self, parent: Node, skip: &[usize]) {
        let children: Vec<Node> = {
            let mut c = parent.walk();
            parent.children(&mut c).collect()
        };
        let in_error = parent.is_error();
        let before = self.items.len();
        let mut i = 0;
        while i < children.len() {
            let n = children[i];
            i += 1;
            if skip.contains(&n.id()) {
                continue;
            }
            match n.kind() {
                "function_definition" => self.function(n),
                "declaration" => self.declaration(n),
                "type_definition" => self.typedef(n),
                "struct_specifier" | "union_specifier" | "enum_specifier" => {
                    // `struct s {...};` comes as the specifier and a sibling ';'.
                    let mut end = n.end_byte();
                    if children.get(i).is_some_and(|s| s.kind() == ";") {
                        end = children[i].end_byte();
                        i += 1;
                    }
                    let fp = syntax::fingerprint(self.text, &[n]);
                    let name = syntax::tag_name(self.text, n);
                    self.push(ItemKind::Type, name, n.start_byte()..end, fp);
                }
                "linkage_specification" => {
                    if let Some(body) = n.child_by_field_name("body") {
                        match body.kind() {
                            "function_definition" => self.function(body),
                            "declaration" => self.declaration(body),
                            _ => self.walk(body, &[]),
                        }
                    }
                }
                "preproc_include" => {
                    let name = n.child_by_field_name("path").map(|p| self.t(p).to_string());
                    let fp = syntax::fingerprint(self.text, &[n]);
                    self.push(ItemKind::Include, name, n.byte_range(), fp);
                }
                "preproc_def" | "preproc_function_def" => {
                    let name = n.child_by_field_name("name").map(|p| self.t(p).to_string());
                    let fp = syntax::fingerprint(self.text, &[n]);
                    self.push(ItemKind::Preproc, name, n.byte_range(), fp);
                }
                "preproc_call" => {
                    let fp = syntax::fingerprint(self.text, &[n]);
                    self.push(ItemKind::Preproc, None, n.byte_range(), fp);
                }
                "preproc_if" | "preproc_ifdef" => self.conditional(n, Conditional::If),
                "ERROR" => self.walk(n, &[]),
                "comment" | ";" => {}
                _ if in_error => {} // fragments of a broken region: covered below
                _ if n.is_named() => {
                    let fp = syntax::fingerprint(self.text, &[n]);
                    self.push(ItemKind::Other, None, n.byte_range(), fp);
                }
                _ => {}
            }
        }
        if in_error && self.items.len() == before {
            // Nothing recognisable: report the region itself so that a diff
            // touching it still names something.
            let fp = syntax::fingerprint(self.text, &[parent]);
            self.push(ItemKind::Other, None, parent.byte_range(), fp);
        }
    }

    /// A conditional group (or one of its `#elif`/`#else` alternatives):
    /// its directive line as an item, its contents, then its alternative and,
    /// for the group itself, the `#endif` line.
    fn conditional(&mut self, n: Node, which: Conditional) {
        let head_end = n
            .child_by_field_name("condition")
            .or_else(|| n.child_by_field_name("name"))
            .map_or(n.start_byte(), |c| c.end_byte());
        let head = n.start_byte()..self.line_end(head_end);
        let fp = syntax::normalize_ws(&self.text[head.clone()]);
        self.push(ItemKind::Preproc, None, head, fp).conditional = Some(which);

        let mut skip = Vec::new();
        skip.extend(n.child_by_field_name("condition").map(|c| c.id()));
        skip.extend(n.child_by_field_name("name").map(|c| c.id()));
        let alt = n.child_by_field_name("alternative");
        skip.extend(alt.map(|c| c.id()));
        self.walk(n, &skip);

        if let Some(alt) = alt {
            let w = if alt.kind() == "preproc_else" {
                Conditional::Else
            } else {
                Conditional::Elif
            };
            self.conditional(alt, w);
        }
        if which == Conditional::If {
            let last = n.child(n.child_count().saturating_sub(1));
            if let Some(end) = last.filter(|l| l.kind().starts_with("#endif")) {
                let r = end.start_byte()..self.line_end(end.start_byte());
                let fp = syntax::normalize_ws(&self.text[r.clone()]);
                self.push(ItemKind::Preproc, None, r, fp).conditional = Some(Conditional::Endif);
            }
        }
    }

    /// Declaration specifiers: the children of a declaration or definition
    /// before its first declarator.
    fn specifiers<'b>(&self, n: Node<'b>, first_decl_start: usize) -> Specs<'b> {
        self.specifiers_from(n, 0, first_decl_start)
    }

    /// Specifiers starting at byte `from` (see `function` for why).
    fn specifiers_from<'b>(&self, n: Node<'b>, from: usize, first_decl_start: usize) -> Specs<'b> {
        let mut specs = Specs::default();
        let mut c = n.walk();
        for ch in n.children(&mut c) {
            if ch.start_byte() >= first_decl_start {
                break;
            }
            if ch.start_byte() < from {
                continue;
            }
            specs.nodes.push(ch);
            let t = self.t(ch);
            match ch.kind() {
                "storage_class_specifier" => {
                    if t == "static" {
                        specs.is_static = true;
                    }
                    if t == "extern" {
                        specs.is_extern = true;
                    }
                    if syntax::is_dropped_storage(t) {
                        continue;
                    }
                    specs.thread_local = true;
                }
                "type_identifier" | "identifier" if self.storage_macros.contains_key(t) => {
                    specs.is_static |= self.storage_macros[t];
                    continue;
                }
                "struct_specifier" | "union_specifier" | "enum_specifier"
                    // Refer to a named tag instead of repeating its body; the
                    // body is a Type item of its own.
                    if ch.child_by_field_name("body").is_some() => {
                        if let Some(tag) = syntax::tag_name(self.text, ch) {
                            specs.has_tag_body = Some(ch);
                            specs.words.push(tag);
                            continue;
                        }
                    }
                "ERROR" => {
                    // e.g. `l_sinline int f`: `int` lands in an ERROR once the
                    // macro was taken for the type.
                    let mut cc = ch.walk();
                    for part in ch.children(&mut cc) {
                        let pt = self.t(part);
                        if let Some(st) = self.storage_macros.get(pt) {
                            specs.is_static |= *st;
                        } else {
                            specs.words.push(syntax::normalize_ws(pt));
                        }
                    }
                    continue;
                }
                "comment" => continue,
                _ => {}
            }
            specs.words.push(syntax::normalize_ws(t));
        }
        specs
    }

    fn function(&mut self, n: Node) {
        let Some(decl) = n.child_by_field_name("declarator") else {
            let fp = syntax::fingerprint(self.text, &[n]);
            self.push(ItemKind::Other, None, n.byte_range(), fp);
            return;
        };
        let mut specs = self.specifiers(n, decl.start_byte());
        let (name, _) = syntax::declarator_name(self.text, decl);
        let mut range = n.byte_range();
        // `EXPORT_SYMBOL(g)` on the line before `int h(void) {` parses as a
        // macro type specifier of `h`.  A macro invocation ending on an
        // earlier line than the rest of the head is taken as an item of its
        // own, so `h`'s span starts where its own text does.
        if let Some(k) = specs
            .nodes
            .iter()
            .position(|s| s.kind() == "macro_type_specifier")
        {
            let m = specs.nodes[k];
            let next = specs.nodes.get(k + 1).copied().unwrap_or(decl);
            if next.start_position().row > m.end_position().row {
                let fp = syntax::fingerprint(self.text, &specs.nodes[..=k]);
                self.push(ItemKind::Other, None, n.start_byte()..m.end_byte(), fp);
                range.start = next.start_byte();
                specs = self.specifiers_from(n, next.start_byte(), decl.start_byte());
            }
        }
        let fp = syntax::fingerprint(self.text, &[n]);
        let references = n
            .child_by_field_name("body")
            .map(|b| syntax::identifiers(self.text, b))
            .unwrap_or_default();
        let declarator = syntax::prototype_declarator(self.text, decl);
        let item = self.push(ItemKind::Function, name, range, fp);
        item.is_static = specs.is_static;
        item.references = references;
        item.decl = Some(DeclParts {
            specifiers: specs.words.join(" "),
            declarator,
            thread_local: false,
        });
    }

    fn declaration(&mut self, n: Node) {
        let decls: Vec<Node> = {
            let mut c = n.walk();
            n.children_by_field_name("declarator", &mut c).collect()
        };
        let Some(first) = decls.first() else {
            let fp = syntax::fingerprint(self.text, &[n]);
            self.push(ItemKind::Other, None, n.byte_range(), fp);
            return;
        };
        let specs = self.specifiers(n, first.start_byte());
        if let Some(tag) = specs.has_tag_body {
            // `struct s {...} g;` defines the type as well as `g`.
            let fp = syntax::fingerprint(self.text, &[tag]);
            let name = syntax::tag_name(self.text, tag);
            self.push(ItemKind::Type, name, tag.byte_range(), fp);
        }
        for d in &decls {
            let inner = if d.kind() == "init_declarator" {
                d.child_by_field_name("declarator").unwrap_or(*d)
            } else {
                *d
            };
            let (mut name, is_fn) = syntax::declarator_name(self.text, inner);
            if name.as_deref().is_none_or(str::is_empty) {
                // `unsigned long x __attribute__((...))` parses with `x` as
                // the type name and a missing declarator.
                name = specs
                    .nodes
                    .iter()
                    .filter(|s| s.kind() == "sized_type_specifier")
                    .find_map(|s| s.child_by_field_name("type"))
                    .filter(|t| t.kind() == "type_identifier")
                    .map(|t| self.t(t).to_string());
            }
            let fp = if decls.len() == 1 {
                syntax::fingerprint(self.text, &[n])
            } else {
                let mut parts = specs.nodes.clone();
                parts.push(*d);
                syntax::fingerprint(self.text, &parts)
            };
            let kind = if is_fn {
                ItemKind::Prototype
            } else {
                ItemKind::Variable
            };
            let declarator = syntax::prototype_declarator(self.text, inner);
            let item = self.push(kind, name, n.byte_range(), fp);
            item.is_static = specs.is_static;
            item.is_extern = specs.is_extern;
            item.decl = Some(DeclParts {
                specifiers: specs.words.join(" "),
                declarator,
                thread_local: specs.thread_local,
            });
        }
    }

    fn typedef(&mut self, n: Node) {
        let fp = syntax::fingerprint(self.text, &[n]);
        if let Some(ty) = n.child_by_field_name("type") {
            if ty.child_by_field_name("body").is_some() {
                if let Some(tag) = syntax::tag_name(self.text, ty) {
                    self.push(ItemKind::Type, Some(tag), n.byte_range(), fp.clone());
                }
            }
        }
        let mut c = n.walk();
        let decls: Vec<Node> = n.children_by_field_name("declarator", &mut c).collect();
        if decls.is_empty() {
            self.push(ItemKind::Type, None, n.byte_range(), fp);
            return;
        }
        for d in decls {
            let (name, _) = syntax::declarator_name(self.text, d);
            self.push(ItemKind::Type, name, n.byte_range(), fp.clone());
        }
    }
}

#[derive(Default)]
struct Specs<'t> {
    nodes: Vec<Node<'t>>,
    words: Vec<String>,
    is_static: bool,
    is_extern: bool,
    thread_local: bool,
    has_tag_body: Option<Node<'t>>,
}
