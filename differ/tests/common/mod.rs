//! Helpers for the differ tests: compile C snippets with the real GCC and
//! inspect the resulting objects independently of the differ (through the
//! `object` crate's generic API), so the tests check the differ against the
//! objects themselves rather than against its own model.
#![allow(dead_code)]

use differ::{Change, FunctionVerdict, Route, UnitDiff};
use object::{Object, ObjectSection, ObjectSymbol, RelocationFlags, RelocationTarget, SymbolKind};
use std::path::Path;
use std::process::Command;

/// Compiles `src` (as `main.c`, so the STT_FILE name is "main.c") with the
/// flags hpbuild uses for diffing.
pub fn compile(dir: &Path, tag: &str, src: &str, opt: &str) -> Vec<u8> {
    let sub = dir.join(tag);
    std::fs::create_dir_all(&sub).unwrap();
    let c = sub.join("main.c");
    let o = sub.join("main.o");
    std::fs::write(&c, src).unwrap();
    let out = Command::new("gcc")
        .args([
            opt,
            "-g",
            "-c",
            "-ffunction-sections",
            "-fdata-sections",
            "-o",
        ])
        .arg(&o)
        .arg(&c)
        .output()
        .expect("gcc runs");
    assert!(
        out.status.success(),
        "gcc failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&o).unwrap()
}

pub struct Case {
    pub orig: Vec<u8>,
    pub pat: Vec<u8>,
    pub diff: UnitDiff,
    _dir: tempfile::TempDir,
}

/// Compiles both versions and compares them.
pub fn diff(original: &str, patched: &str, opt: &str) -> Case {
    let dir = tempfile::tempdir().unwrap();
    let orig = compile(dir.path(), "orig", original, opt);
    let pat = compile(dir.path(), "patched", patched, opt);
    let diff = differ::compare(&orig, &pat).expect("compare succeeds");
    Case {
        orig,
        pat,
        diff,
        _dir: dir,
    }
}

impl Case {
    pub fn verdict(&self, name: &str) -> &FunctionVerdict {
        self.diff
            .functions
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no verdict for {name}: {:#?}", self.diff.functions))
    }

    pub fn change(&self, name: &str) -> Change {
        self.verdict(name).change
    }

    pub fn reasons(&self, name: &str) -> String {
        self.verdict(name).reasons.join("; ")
    }

    /// Whether the patched section defining `symbol` ships.
    pub fn ships(&self, symbol: &str) -> bool {
        let sec = symbol_section(&self.pat, symbol).unwrap_or_else(|| panic!("no symbol {symbol}"));
        self.diff.ship_sections.contains(&sec)
    }

    /// The route of every patched symbol index named `name`; section symbols
    /// of the section holding `name` count too.
    pub fn routes_to(&self, name: &str) -> Vec<Route> {
        let file = object::File::parse(&*self.pat).unwrap();
        let sec = symbol_section(&self.pat, name);
        let mut out = Vec::new();
        for s in file.symbols() {
            let is_it = s.name() == Ok(name)
                || (s.kind() == SymbolKind::Section
                    && sec.is_some()
                    && s.section_index().map(|i| i.0) == sec);
            if is_it {
                if let Some(r) = self.diff.routes.get(&s.index().0) {
                    out.push(r.clone());
                }
            }
        }
        out
    }

    pub fn refusal_for(&self, symbol: &str) -> Option<&differ::Refusal> {
        self.diff.refusals.iter().find(|r| r.symbol == symbol)
    }
}

pub fn symbol_index(obj: &[u8], name: &str) -> Option<usize> {
    let file = object::File::parse(obj).unwrap();
    let found = file
        .symbols()
        .find(|s| s.name() == Ok(name))
        .map(|s| s.index().0);
    found
}

pub fn symbol_section(obj: &[u8], name: &str) -> Option<usize> {
    let file = object::File::parse(obj).unwrap();
    let found = file
        .symbols()
        .find(|s| s.name() == Ok(name))
        .and_then(|s| s.section_index())
        .map(|i| i.0);
    found
}

pub fn has_symbol(obj: &[u8], name: &str) -> bool {
    symbol_index(obj, name).is_some()
}

/// Relocations of the section defining function `name`:
/// (offset, r_type, target symbol name or section name, addend).
pub fn relocations_of(obj: &[u8], name: &str) -> Vec<(u64, u32, String, i64)> {
    let file = object::File::parse(obj).unwrap();
    let sym = file.symbols().find(|s| s.name() == Ok(name)).unwrap();
    let sec = file.section_by_index(sym.section_index().unwrap()).unwrap();
    sec.relocations()
        .map(|(off, r)| {
            let RelocationFlags::Elf { r_type } = r.flags() else {
                panic!("not ELF")
            };
            let target = match r.target() {
                RelocationTarget::Symbol(i) => {
                    let t = file.symbol_by_index(i).unwrap();
                    if t.kind() == SymbolKind::Section {
                        file.section_by_index(t.section_index().unwrap())
                            .unwrap()
                            .name()
                            .unwrap()
                            .to_string()
                    } else {
                        t.name().unwrap().to_string()
                    }
                }
                _ => String::new(),
            };
            (off, r_type, target, r.addend())
        })
        .collect()
}

/// The name of the static object a function references through its
/// relocations whose name starts with `base.` (GCC's `calls.N`).
pub fn static_local_used_by(obj: &[u8], function: &str, base: &str) -> String {
    let file = object::File::parse(obj).unwrap();
    for (_, _, target, _) in relocations_of(obj, function) {
        // Section symbols come back as the section name (`.bss.calls.1`);
        // the object in it is what we want.
        let sec = file.sections().find(|s| s.name() == Ok(target.as_str()));
        let name = match sec {
            Some(sec) => file
                .symbols()
                .find(|s| s.section_index() == Some(sec.index()) && s.kind() == SymbolKind::Data)
                .map(|s| s.name().unwrap().to_string()),
            None => Some(target.clone()),
        };
        if let Some(n) = name.filter(|n| n.starts_with(&format!("{base}."))) {
            return n;
        }
    }
    panic!("{function} uses no static local {base}");
}

/// Recomputes a replacement's masks and fingerprint from the original
/// object, independently of the differ's code.
pub fn expected_fingerprint(obj: &[u8], function: &str) -> (u64, Vec<(u32, u32)>, u64) {
    let file = object::File::parse(obj).unwrap();
    let sym = file.symbols().find(|s| s.name() == Ok(function)).unwrap();
    let sec = file.section_by_index(sym.section_index().unwrap()).unwrap();
    let size = sym.size();
    let data = sec.data().unwrap();
    let code = &data[sym.address() as usize..(sym.address() + size) as usize];
    let mut masks = Vec::new();
    for (off, r) in sec.relocations() {
        let RelocationFlags::Elf { r_type } = r.flags() else {
            panic!()
        };
        let off = (off - sym.address()) as u32;
        match r_type {
            object::elf::R_X86_64_64 | object::elf::R_X86_64_PC64 => masks.push((off, 8)),
            object::elf::R_X86_64_GOTPCRELX
            | object::elf::R_X86_64_REX_GOTPCRELX
            | object::elf::R_X86_64_GOTTPOFF => masks.push((off - 3, 7)),
            _ => masks.push((off, 4)),
        }
    }
    masks.sort();
    (size, masks.clone(), format::fingerprint(code, &masks))
}
