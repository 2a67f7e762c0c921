//! Hand-written assembly with every encoding the finder must accept or refuse, data that
//! looks like a call, aliases, overlapping and broken symbol bounds. Each expected site is
//! a label in the source, looked up in the linked executable's symbol table.

mod common;

use callsites::{Kind, WarningKind};
use common::*;

const ASM: &str = r#"
    .text
    .globl f
    .type f, @function
f:  ret
    .size f, .-f

    .globl tricky
    .type tricky, @function
tricky:
site_call:                                  # call f
    .byte 0xe8
    .long f - . - 4
pattern_in_imm:                             # movabs $imm64, %rax whose bytes read "e8 <rel32 to f>"
    .byte 0x48, 0xb8, 0xe8
    .long f - . - 4
    .byte 0, 0, 0
site_bnd:                                   # bnd jmp f
    .byte 0xf2, 0xe9
    .long f - . - 4
site_hint:                                  # ds (taken hint) je f
    .byte 0x3e, 0x0f, 0x84
    .long f - . - 4
site_rex:                                   # rex.W call f
    .byte 0x48, 0xe8
    .long f - . - 4
data16_call:                                # 66 e8: rel32 on Intel, rel16 on AMD: refused
    .byte 0x66, 0xe8
    .long f - . - 4
indirect:                                   # call *0(%rip): indirect, refused
    .byte 0xff, 0x15
    .long 0
rel8_jmp:                                   # jmp f (rel8): refused
    .byte 0xeb
    .byte f - . - 1
rel8_jcc:                                   # jne f (rel8): refused
    .byte 0x75
    .byte f - . - 1
off_target:                                 # call f+1: not a target
    .byte 0xe8
    .long f + 1 - . - 4
    ret
bad:                                        # invalid in 64-bit mode (push %es): decoding stops
    .byte 0x06
after_bad:                                  # looks like a call to f, but lies after undecodable bytes
    .byte 0xe8
    .long f - . - 4
    ret
    .size tricky, .-tricky

    .globl alias1, alias2
    .type alias1, @function
    .type alias2, @function
alias1:
alias2:
site_alias:
    .byte 0xe8
    .long f - . - 4
    ret
    .size alias1, .-alias1
    .size alias2, .-alias2

    .type outer, @function
outer:                                      # movabs again, and a FUNC symbol inside its immediate
    .byte 0x48, 0xb8
inner:
    .byte 0xe8
    .long f - . - 4
    .byte 0, 0, 0
    ret
    .size outer, .-outer
    .type inner, @function
    .size inner, 5

    .type outer2, @function
outer2:                                     # a nested symbol on an instruction boundary: agrees
    nop
inner2:
site_nested:
    .byte 0xe8
    .long f - . - 4
    ret
    .size outer2, .-outer2
    .type inner2, @function
    .size inner2, 6

    .type cut, @function
cut:                                        # bounds end inside the call
    .byte 0xe8
    .long f - . - 4
    .size cut, 3

    .type empty, @function
empty:
    .size empty, 0

    .type toolong, @function
toolong:                                    # bounds far past the end of .text
    ret
    .size toolong, 0x10000000
"#;

#[test]
fn encodings_data_and_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("sites.s"), ASM).unwrap();
    std::fs::write(d.join("main.c"), "int main(void) { return 0; }\n").unwrap();
    cc(d, "gcc", &["main.c", "sites.s", "-o", "prog"]);
    let elf = std::fs::read(d.join("prog")).unwrap();
    let at = |name: &str| func(&elf, name).0;
    let f = at("f");
    // A target that is nowhere, then f: indices must point into this slice.
    let targets = [0x1234_5678, f, f];
    let found = callsites::in_elf(&elf, &targets).unwrap();

    let got: Vec<(u64, Kind, u8, usize)> = found
        .sites
        .iter()
        .map(|s| (s.addr, s.kind, s.len, s.target))
        .collect();
    let want = vec![
        (at("site_call"), Kind::Call, 5, 1),
        (at("site_bnd"), Kind::Jmp, 6, 1),
        (at("site_hint"), Kind::Jcc, 7, 1),
        (at("site_rex"), Kind::Call, 6, 1),
        (at("site_alias"), Kind::Call, 5, 1),
        (at("site_nested"), Kind::Call, 5, 1),
    ];
    assert_eq!(got, want, "sites (addr, kind, len, target)");
    for s in &found.sites {
        assert_eq!(s.bytes, code_at(&elf, s.addr, s.len as usize));
        let rel = i32::from_le_bytes(s.bytes[s.rel32_at as usize..].try_into().unwrap());
        assert_eq!(s.next_ip().wrapping_add(rel as i64 as u64), f);
    }

    let mut warnings: Vec<(String, WarningKind)> = found
        .warnings
        .iter()
        .map(|w| (w.function.clone(), w.kind.clone()))
        .collect();
    warnings.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want_w = vec![
        (
            "tricky".to_string(),
            WarningKind::Undecodable { at: at("bad") },
        ),
        (
            "inner".to_string(),
            WarningKind::Ambiguous { site: at("inner") },
        ),
        (
            "cut".to_string(),
            WarningKind::Undecodable { at: at("cut") },
        ),
        ("empty".to_string(), WarningKind::Empty),
        (
            "toolong".to_string(),
            WarningKind::OutOfSection { size: 0x1000_0000 },
        ),
    ];
    want_w.sort_by(|a, b| a.0.cmp(&b.0));
    // crt files contribute size-0 helpers (_init, _fini, ...): those are expected too.
    warnings.retain(|(name, kind)| !(kind == &WarningKind::Empty && name != "empty"));
    assert_eq!(warnings, want_w);
    for w in &found.warnings {
        assert!(!w.to_string().is_empty());
    }
}
