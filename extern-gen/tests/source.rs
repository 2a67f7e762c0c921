//! Item extraction: names, kinds, spans, static-ness, uncertainty.

use extern_gen::{parse, CFile, Item, ItemKind};

fn one<'a>(f: &'a CFile, kind: ItemKind, name: &str) -> &'a Item {
    let found: Vec<&Item> = f.find(kind, name);
    assert_eq!(found.len(), 1, "{kind:?} {name}: {:#?}", f.items);
    found[0]
}

const TRICKY: &str = r#"#include <stdio.h>
#include "local.h"
#define N 3
#define MAX(a, b) ((a) > (b) ? (a) : (b))
static char *strfn(void) { return 0; }
int (*getfp(int x))(int) { return 0; }
int (*fp)(int);
static const char *const names[N] = {"a", "b", "c"};
int arr[] = {1, 2}, *parr = &arr[0];
int __attribute__((noinline)) attributed(int x) { return x; }
int kr(a, b)
    int a;
    char *b;
{
    return a + *b;
}
extern int ext_var;
int proto(int, char **);
typedef struct { int x; } T;
struct s { int a; } gs;
enum e { A, B };
__thread int tls;
FOO(bar);
"#;

#[test]
fn names_and_kinds_of_tricky_declarators() {
    let f = parse(TRICKY).unwrap();
    assert_eq!(one(&f, ItemKind::Include, "<stdio.h>").start_line, 1);
    assert_eq!(one(&f, ItemKind::Include, "\"local.h\"").start_line, 2);
    one(&f, ItemKind::Preproc, "N");
    one(&f, ItemKind::Preproc, "MAX");

    let strfn = one(&f, ItemKind::Function, "strfn");
    assert!(strfn.is_static && !strfn.uncertain);
    assert_eq!(
        strfn.extern_declaration().unwrap(),
        "extern char *strfn(void);"
    );

    let g = one(&f, ItemKind::Function, "getfp");
    assert!(!g.is_static);
    assert_eq!(
        g.extern_declaration().unwrap(),
        "extern int (*getfp(int x))(int);"
    );

    // A pointer to function is an object, not a prototype.
    assert_eq!(
        one(&f, ItemKind::Variable, "fp")
            .extern_declaration()
            .unwrap(),
        "extern int (*fp)(int);"
    );

    let names = one(&f, ItemKind::Variable, "names");
    assert!(names.is_static);
    assert_eq!(
        names.extern_declaration().unwrap(),
        "extern const char *const names[N];"
    );

    assert_eq!(
        one(&f, ItemKind::Variable, "arr")
            .extern_declaration()
            .unwrap(),
        "extern int arr[];"
    );
    assert_eq!(
        one(&f, ItemKind::Variable, "parr")
            .extern_declaration()
            .unwrap(),
        "extern int *parr;"
    );
    one(&f, ItemKind::Function, "attributed");

    let kr = one(&f, ItemKind::Function, "kr");
    assert_eq!((kr.start_line, kr.end_line), (11, 16));
    assert_eq!(kr.extern_declaration().unwrap(), "extern int kr();");

    let ev = one(&f, ItemKind::Variable, "ext_var");
    assert!(ev.is_extern);
    assert_eq!(
        one(&f, ItemKind::Prototype, "proto").prototype().unwrap(),
        "int proto(int, char **);"
    );
    one(&f, ItemKind::Type, "T");
    one(&f, ItemKind::Type, "struct s");
    assert_eq!(
        one(&f, ItemKind::Variable, "gs")
            .extern_declaration()
            .unwrap(),
        "extern struct s gs;"
    );
    one(&f, ItemKind::Type, "enum e");
    assert_eq!(
        one(&f, ItemKind::Variable, "tls")
            .extern_declaration()
            .unwrap(),
        "extern __thread int tls;"
    );
    let other: Vec<_> = f
        .items
        .iter()
        .filter(|i| i.kind == ItemKind::Other)
        .collect();
    assert_eq!(other.len(), 1);
    assert_eq!(f.item_text(TRICKY, other[0]), "FOO(bar);");
    assert!(f.items.iter().all(|i| !i.uncertain), "{:#?}", f.items);
}

#[test]
fn item_text_and_spans() {
    let f = parse(TRICKY).unwrap();
    let g = one(&f, ItemKind::Function, "strfn");
    assert_eq!(
        f.item_text(TRICKY, g),
        "static char *strfn(void) { return 0; }"
    );
    // Preprocessor items end at their line, not at the newline after it.
    let n = one(&f, ItemKind::Preproc, "N");
    assert_eq!((n.start_line, n.end_line), (3, 3));
    assert_eq!(f.item_text(TRICKY, n), "#define N 3");
}

#[test]
fn items_touching_line_ranges() {
    let f = parse(TRICKY).unwrap();
    let names = |v: Vec<&Item>| {
        v.iter()
            .map(|i| i.name.clone().unwrap_or_default())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(f.items_touching(&[5..=5])), ["strfn"]);
    // Line 13 is inside kr's K&R parameter declarations.
    assert_eq!(names(f.items_touching(&[13..=13])), ["kr"]);
    assert_eq!(
        names(f.items_touching(&[6..=7, 16..=16])),
        ["getfp", "fp", "kr"]
    );
    // One declaration, two names.
    assert_eq!(names(f.items_touching(&[9..=9])), ["arr", "parr"]);
    assert!(f.items_touching(&[100..=200]).is_empty());
}

#[test]
fn items_inside_conditional_groups() {
    let text = "#ifdef X\nint a;\n#else\nlong a;\n#endif\nint b;\n";
    let f = parse(text).unwrap();
    let a: Vec<_> = f
        .find(ItemKind::Variable, "a")
        .iter()
        .map(|i| i.start_line)
        .collect();
    assert_eq!(a, [2, 4]);
    let conds: Vec<_> = f
        .items
        .iter()
        .filter_map(|i| i.conditional.map(|c| (c, i.start_line)))
        .collect();
    use extern_gen::Conditional::*;
    assert_eq!(conds, [(If, 1), (Else, 3), (Endif, 5)]);
    assert_eq!(one(&f, ItemKind::Variable, "b").start_line, 6);
}

#[test]
fn macro_storage_class_is_seen_through() {
    let text = "#define l_sinline static inline\n\nl_sinline int f(int x) {\n  return x;\n}\nint g(void) { return 1; }\n";
    let f = parse(text).unwrap();
    let it = one(&f, ItemKind::Function, "f");
    assert_eq!((it.start_line, it.end_line), (3, 5));
    assert!(it.is_static);
    // tree-sitter takes the macro for the type: flagged, name still right.
    assert!(it.uncertain);
    assert_eq!(it.prototype().unwrap(), "static int f(int x);");
    let g = one(&f, ItemKind::Function, "g");
    assert!(!g.uncertain && !g.is_static);
}

#[test]
fn computed_goto_keeps_the_function() {
    let text = "int run(int op) {\n  static void *t[] = { &&l0, &&l1 };\n  goto *t[op];\nl0:\n  return 0;\nl1:\n  return 1;\n}\nint after(void) { return 2; }\n";
    let f = parse(text).unwrap();
    let run = one(&f, ItemKind::Function, "run");
    assert_eq!((run.start_line, run.end_line), (1, 8));
    let after = one(&f, ItemKind::Function, "after");
    assert_eq!((after.start_line, after.end_line), (9, 9));
    assert!(!after.uncertain);
    // If tree-sitter could not parse `goto *`, the function must say so.
    if !f.error_ranges.is_empty() {
        assert!(run.uncertain);
    }
}

#[test]
fn macro_invocation_line_before_function_is_not_part_of_it() {
    let text = "int g(void) { return 0; }\nEXPORT_SYMBOL(g)\nint h(void)\n{\n  return 1;\n}\n";
    let f = parse(text).unwrap();
    let h = one(&f, ItemKind::Function, "h");
    assert_eq!((h.start_line, h.end_line), (3, 6));
    assert!(f.item_text(text, h).starts_with("int h(void)"));
    assert_eq!(
        f.items_touching(&[2..=2])
            .iter()
            .map(|i| i.kind)
            .collect::<Vec<_>>(),
        [ItemKind::Other]
    );
}

#[test]
fn unparseable_region_is_reported_and_neighbours_survive() {
    let text = "int a(void) { return 0; }\n@@@ garbage ))) {\nint b(void) { return 1; }\n";
    let f = parse(text).unwrap();
    assert!(!f.error_ranges.is_empty());
    assert!(!f.find(ItemKind::Function, "a").is_empty());
    let touching = f.items_touching(&[2..=2]);
    assert!(!touching.is_empty());
    assert!(touching.iter().all(|i| i.uncertain), "{touching:#?}");
}
