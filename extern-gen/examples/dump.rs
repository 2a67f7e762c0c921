//! Debugging aid: print tree-sitter's top-level parse of a C file and the
//! items `extern_gen::source` extracts from it.
//!
//! `cargo run -p extern-gen --example dump -- FILE.c`
fn main() {
    let path = std::env::args().nth(1).expect("usage: dump FILE.c");
    let text = std::fs::read_to_string(&path).expect("read file");
    let mut parser = tree_sitter::Parser::new();
    parser
        .set_language(&tree_sitter_c::LANGUAGE.into())
        .expect("load C grammar");
    let tree = parser.parse(&text, None).expect("parse");
    let root = tree.root_node();
    let mut cursor = root.walk();
    for child in root.children(&mut cursor) {
        println!(
            "{}-{} {}",
            child.start_position().row + 1,
            child.end_position().row + 1,
            child.to_sexp()
        );
    }
    println!();
    for it in extern_gen::parse(&text).expect("parse").items {
        println!(
            "{:?} {:?} {}-{} static={} extern={} uncertain={} cond={:?} decl={:?}",
            it.kind,
            it.name,
            it.start_line,
            it.end_line,
            it.is_static,
            it.is_extern,
            it.uncertain,
            it.conditional,
            it.extern_declaration()
        );
    }
}
