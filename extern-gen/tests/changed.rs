//! changed_items: which top-level items an edit changes.

use extern_gen::{changed_items, Change, ItemKind};

const OLD: &str = r#"#include <stdio.h>
struct point { int x; int y; };
static int counter = 0;
int limit = 10, other = 5;

static int helper(int v)
{
    return v * 2;
}

int compute(int v)
{
    /* double it */
    return helper(v) + counter;
}
"#;

fn changes(new: &str) -> Vec<(ItemKind, Option<String>, Change)> {
    changed_items(OLD, new)
        .unwrap()
        .into_iter()
        .map(|c| (c.kind, c.name, c.change))
        .collect()
}

fn named(kind: ItemKind, name: &str, change: Change) -> (ItemKind, Option<String>, Change) {
    (kind, Some(name.to_string()), change)
}

#[test]
fn identical_and_layout_or_comment_only_edits_change_nothing() {
    assert!(changes(OLD).is_empty());
    let relaid = OLD
        .replace("return v * 2;", "return   v*2 ;")
        .replace("/* double it */", "/* twice */");
    assert!(changes(&relaid).is_empty());
}

#[test]
fn body_edit_modifies_only_that_function() {
    let new = OLD.replace("return v * 2;", "return v * 3;");
    assert_eq!(
        changes(&new),
        [named(ItemKind::Function, "helper", Change::Modified)]
    );
}

#[test]
fn string_contents_are_compared_exactly() {
    let old = "const char *m = \"a b\";\n";
    let new = "const char *m = \"a  b\";\n";
    let c = changed_items(old, new).unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].change, Change::Modified);
}

#[test]
fn global_initializer_edit() {
    let new = OLD.replace("static int counter = 0;", "static int counter = 1;");
    assert_eq!(
        changes(&new),
        [named(ItemKind::Variable, "counter", Change::Modified)]
    );
    // Only the edited name of a multi-name declaration.
    let new = OLD.replace("limit = 10", "limit = 11");
    assert_eq!(
        changes(&new),
        [named(ItemKind::Variable, "limit", Change::Modified)]
    );
}

#[test]
fn struct_field_edit() {
    let new = OLD.replace("int y; };", "int y; int z; };");
    assert_eq!(
        changes(&new),
        [named(ItemKind::Type, "struct point", Change::Modified)]
    );
}

#[test]
fn added_and_removed_functions() {
    let new = format!("{OLD}\nint added(void)\n{{\n    return 1;\n}}\n");
    let c = changed_items(OLD, &new).unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0].kind, c[0].name.as_deref(), c[0].change),
        (ItemKind::Function, Some("added"), Change::Added)
    );
    assert_eq!(c[0].new_lines, Some(17..=20));
    assert_eq!(c[0].old_lines, None);

    let c = changed_items(&new, OLD).unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0].name.as_deref(), c[0].change),
        (Some("added"), Change::Removed)
    );
}

#[test]
fn edit_and_move_reports_old_and_new_lines() {
    let new = OLD
        .replace(
            "#include <stdio.h>\n",
            "#include <stdio.h>\n#include <stdlib.h>\n\n",
        )
        .replace("+ counter", "- counter");
    let c = changed_items(OLD, &new).unwrap();
    let kinds: Vec<_> = c
        .iter()
        .map(|c| (c.kind, c.name.clone(), c.change))
        .collect();
    assert_eq!(
        kinds,
        [
            named(ItemKind::Include, "<stdlib.h>", Change::Added),
            named(ItemKind::Function, "compute", Change::Modified),
        ]
    );
    assert_eq!(c[1].old_lines, Some(11..=15));
    assert_eq!(c[1].new_lines, Some(13..=17));
}
