//! Test-only helpers: build C programs linked with libhotpatch.a, make patch
//! objects (a tiny stand-in for hpbuild), and drive the programs line by line.
#![allow(dead_code)]

use format::{FuncRecord, Meta, HP_META_SECTION, HP_REDIRECT_ENTRY_JUMP};
use object::elf;
use object::write::{self, Object as WObject, Relocation as WReloc, SymbolId, SymbolSection};
use object::{
    Object, ObjectSection, ObjectSymbol, RelocationFlags, RelocationTarget, SectionFlags,
    SectionIndex, SectionKind, SymbolKind, SymbolScope,
};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Flags the test programs and their patches are compiled with.
pub const CFLAGS: &[&str] = &[
    "-O2",
    "-g0",
    "-ffunction-sections",
    "-fdata-sections",
    "-fno-common",
];

/// A fresh scratch directory (removed on drop unless HOTPATCH_KEEP is set).
pub struct Work {
    pub dir: PathBuf,
}

impl Work {
    pub fn new(tag: &str) -> Work {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "hotpatch-test-{}-{}-{}",
            tag,
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        hotpatch::write_loader(&dir.join("loader")).unwrap();
        Work { dir }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        if std::env::var_os("HOTPATCH_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

thread_local! {
    /// The C compiler of this test (each test runs on its own thread).
    static CC: std::cell::Cell<&'static str> = const { std::cell::Cell::new("gcc") };
    /// Whether make_patch copies the new object's .eh_frame into the patch.
    static EH_FRAME: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Compiles programs and patches of the calling test with `cc` (gcc, clang).
pub fn set_cc(cc: &'static str) {
    CC.with(|c| c.set(cc));
}

/// Makes make_patch carry the new code's unwind information (.eh_frame).
pub fn set_eh_frame(on: bool) {
    EH_FRAME.with(|c| c.set(on));
}

fn gcc(args: &[&str], cwd: &Path) {
    let cc = CC.with(|c| c.get());
    let out = Command::new(cc)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run gcc");
    assert!(
        out.status.success(),
        "{cc} {:?} failed:\n{}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Compiles `src` as `<sub>/<file>` into `<sub>/<file>.o`, returns the object path.
pub fn compile(work: &Work, sub: &str, file: &str, src: &str, extra: &[&str]) -> PathBuf {
    let dir = work.path(sub);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(file), src).unwrap();
    let obj = format!("{file}.o");
    let inc = format!("-I{}", work.path("loader").display());
    let mut args: Vec<&str> = vec!["-c"];
    args.extend_from_slice(CFLAGS);
    args.extend_from_slice(extra);
    args.extend_from_slice(&[inc.as_str(), file, "-o", obj.as_str()]);
    gcc(&args, &dir);
    dir.join(obj)
}

/// Builds a program from `src` (saved as `file`) linked with libhotpatch.a.
pub fn build_program(work: &Work, file: &str, src: &str, extra: &[&str]) -> PathBuf {
    let obj = compile(work, "prog", file, src, extra);
    let exe = work.path("prog/prog");
    let lib = work.path("loader/libhotpatch.a");
    let (o, e, l) = (
        obj.to_str().unwrap(),
        exe.to_str().unwrap(),
        lib.to_str().unwrap(),
    );
    // The compile flags go to the link too: -no-pie must reach the linker.
    let mut args = vec![o, "-o", e];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "-Wl,--whole-archive",
        l,
        "-Wl,--no-whole-archive",
        "-lpthread",
    ]);
    gcc(&args, &work.dir);
    exe
}

/// Masks for the original function: every relocated field, widened over the
/// opcode bytes the linker may rewrite when it relaxes GOTPCRELX loads/calls.
fn masks_for(relocs: &[(u64, u32)], start: u64, size: u64) -> Vec<(u32, u32)> {
    let mut masks = Vec::new();
    for &(off, r_type) in relocs {
        if off < start || off >= start + size {
            continue;
        }
        let rel = off - start;
        let field: u64 = match r_type {
            elf::R_X86_64_64 | elf::R_X86_64_PC64 => 8,
            _ => 4,
        };
        let back: u64 = match r_type {
            elf::R_X86_64_GOTPCRELX => 2,
            // The linker relaxes initial-exec TLS loads in an executable
            // (`mov x@gottpoff(%rip),%reg` → `mov $tpoff,%reg`): REX, opcode, ModRM.
            elf::R_X86_64_REX_GOTPCRELX | elf::R_X86_64_GOTTPOFF => 3,
            _ => 0,
        };
        let begin = rel.saturating_sub(back);
        masks.push((begin as u32, (rel + field - begin) as u32));
    }
    masks
}

fn reloc_type(flags: RelocationFlags) -> u32 {
    match flags {
        RelocationFlags::Elf { r_type } => r_type,
        other => panic!("not an ELF relocation: {other:?}"),
    }
}

/// Makes a patch object replacing `funcs` of a program built from `orig_src`
/// with the versions in `new_src` (both compiled as `file`). Everything the new
/// functions reference outside themselves and read-only data (other
/// functions, globals, statics) becomes an undefined symbol resolved in the
/// running program; statics are named `file::name`.
pub fn make_patch(
    work: &Work,
    id: &str,
    file: &str,
    orig_src: &str,
    new_src: &str,
    funcs: &[&str],
    extra: &[&str],
) -> Vec<u8> {
    let sub_o = format!("patch-{id}/orig");
    let sub_n = format!("patch-{id}/new");
    let orig_obj = std::fs::read(compile(work, &sub_o, file, orig_src, extra)).unwrap();
    let new_obj = std::fs::read(compile(work, &sub_n, file, new_src, extra)).unwrap();
    let orig = object::File::parse(&*orig_obj).unwrap();
    let new = object::File::parse(&*new_obj).unwrap();

    // Records from the original.
    let mut records = Vec::new();
    for &name in funcs {
        let sym = orig
            .symbols()
            .find(|s| s.name() == Ok(name) && s.kind() == SymbolKind::Text)
            .unwrap_or_else(|| panic!("{name} not in the original object"));
        let sec = orig.section_by_index(sym.section_index().unwrap()).unwrap();
        let data = sec.data().unwrap();
        let start = sym.address() - sec.address();
        let code = &data[start as usize..(start + sym.size()) as usize];
        let relocs: Vec<(u64, u32)> = sec
            .relocations()
            .map(|(off, r)| (off, reloc_type(r.flags())))
            .collect();
        let masks = masks_for(&relocs, start, sym.size());
        records.push(FuncRecord {
            name: name.to_string(),
            file: if sym.is_local() {
                file.to_string()
            } else {
                String::new()
            },
            new_symbol: name.to_string(),
            redirect: HP_REDIRECT_ENTRY_JUMP,
            old_size: sym.size(),
            fingerprint: format::fingerprint(code, &masks),
            masks,
        });
    }

    // Sections to copy: the new functions' sections, plus read-only data they
    // reference (transitively).
    let mut include: Vec<SectionIndex> = Vec::new();
    for &name in funcs {
        let sym = new
            .symbols()
            .find(|s| s.name() == Ok(name) && s.kind() == SymbolKind::Text)
            .unwrap_or_else(|| panic!("{name} not in the new object"));
        include.push(sym.section_index().unwrap());
    }
    // Unwind information: FDEs of functions not in the patch end up pointing
    // at the running program's copies and are ignored by the loader.
    if EH_FRAME.with(|c| c.get()) {
        if let Some(eh) = new.section_by_name(".eh_frame") {
            include.push(eh.index());
        }
    }
    let mut i = 0;
    while i < include.len() {
        let sec = new.section_by_index(include[i]).unwrap();
        for (_, r) in sec.relocations() {
            if let RelocationTarget::Symbol(si) = r.target() {
                let s = new.symbol_by_index(si).unwrap();
                if let Some(ti) = s.section_index() {
                    let t = new.section_by_index(ti).unwrap();
                    let ro = matches!(
                        t.kind(),
                        SectionKind::ReadOnlyData | SectionKind::ReadOnlyString
                    );
                    if ro && !include.contains(&ti) {
                        include.push(ti);
                    }
                }
            }
        }
        i += 1;
    }

    let mut out = WObject::new(
        object::BinaryFormat::Elf,
        object::Architecture::X86_64,
        object::Endianness::Little,
    );
    let mut sec_map = HashMap::new();
    for &si in &include {
        let s = new.section_by_index(si).unwrap();
        let id = out.add_section(Vec::new(), s.name().unwrap().as_bytes().to_vec(), s.kind());
        out.set_section_data(id, s.data().unwrap().to_vec(), s.align());
        if let SectionFlags::Elf { sh_flags } = s.flags() {
            out.section_mut(id).flags = SectionFlags::Elf { sh_flags };
        }
        sec_map.insert(si, id);
    }
    // Symbols defined in the copied sections.
    let mut sym_map: HashMap<object::SymbolIndex, SymbolId> = HashMap::new();
    for s in new.symbols() {
        let Some(si) = s.section_index() else {
            continue;
        };
        let Some(&sid) = sec_map.get(&si) else {
            continue;
        };
        if s.kind() == SymbolKind::Section || s.name().unwrap_or("").is_empty() {
            continue;
        }
        let id = out.add_symbol(write::Symbol {
            name: s.name().unwrap().as_bytes().to_vec(),
            value: s.address(),
            size: s.size(),
            kind: if s.kind() == SymbolKind::Unknown {
                SymbolKind::Data
            } else {
                s.kind()
            },
            scope: if s.is_local() {
                SymbolScope::Compilation
            } else {
                SymbolScope::Linkage
            },
            weak: false,
            section: SymbolSection::Section(sid),
            flags: object::SymbolFlags::None,
        });
        sym_map.insert(s.index(), id);
    }
    let mut undef: HashMap<String, SymbolId> = HashMap::new();
    let mut undefined = |out: &mut WObject, name: String| -> SymbolId {
        *undef.entry(name.clone()).or_insert_with(|| {
            out.add_symbol(write::Symbol {
                name: name.into_bytes(),
                value: 0,
                size: 0,
                kind: SymbolKind::Unknown,
                scope: SymbolScope::Linkage,
                weak: false,
                section: SymbolSection::Undefined,
                flags: object::SymbolFlags::None,
            })
        })
    };
    let external_name = |s: &object::Symbol| -> String {
        let n = s.name().unwrap().to_string();
        if s.is_local() {
            format::local_symbol_name(file, &n)
        } else {
            n
        }
    };
    for &si in &include {
        let sec = new.section_by_index(si).unwrap();
        let out_sec = sec_map[&si];
        for (off, r) in sec.relocations() {
            let RelocationTarget::Symbol(ti) = r.target() else {
                panic!("odd relocation")
            };
            let t = new.symbol_by_index(ti).unwrap();
            let (symbol, addend) = if let Some(&id) = sym_map.get(&ti) {
                (id, r.addend())
            } else if t.kind() == SymbolKind::Section {
                let tsec = t.section_index().unwrap();
                if let Some(&sid) = sec_map.get(&tsec) {
                    (out.section_symbol(sid), r.addend())
                } else {
                    // A section of its own (-ffunction/-fdata-sections): name
                    // the object at offset 0 of it.
                    let named = new
                        .symbols()
                        .find(|s| {
                            s.section_index() == Some(tsec)
                                && s.kind() != SymbolKind::Section
                                && s.address() == 0
                                && !s.name().unwrap_or("").is_empty()
                        })
                        .unwrap_or_else(|| panic!("no symbol for section {tsec:?}"));
                    (undefined(&mut out, external_name(&named)), r.addend())
                }
            } else if t.is_undefined() {
                (
                    undefined(&mut out, t.name().unwrap().to_string()),
                    r.addend(),
                )
            } else {
                (undefined(&mut out, external_name(&t)), r.addend())
            };
            out.add_relocation(
                out_sec,
                WReloc {
                    offset: off,
                    symbol,
                    addend,
                    flags: r.flags(),
                },
            )
            .unwrap();
        }
    }
    let meta = Meta {
        patch_id: id.to_string(),
        base_id: "test".into(),
        funcs: records,
    };
    let msec = out.add_section(
        Vec::new(),
        HP_META_SECTION.as_bytes().to_vec(),
        SectionKind::Other,
    );
    out.set_section_data(msec, meta.encode(), 8);
    out.section_mut(msec).flags = SectionFlags::Elf { sh_flags: 0 };
    let bytes = out.write().unwrap();
    format::read_patch(&bytes).expect("made an invalid patch");
    let path = work.path(&format!("{id}.hpo"));
    std::fs::write(&path, &bytes).unwrap();
    bytes
}

/// A running test program, driven by lines on stdin/stdout.
pub struct Proc {
    pub child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pub log: PathBuf,
}

impl Proc {
    pub fn start(exe: &Path, work: &Work) -> Proc {
        let log = work.path("hotpatch.log");
        let mut child = Command::new(exe)
            .env("HOTPATCH_LOG", &log)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut p = Proc {
            child,
            stdin,
            stdout,
            log,
        };
        let ready = p.read_line();
        assert!(ready.starts_with("ready"), "program said {ready:?}");
        // The listener thread starts from a constructor; wait for its socket.
        for _ in 0..200 {
            let bound = std::fs::read_to_string("/proc/net/unix")
                .unwrap()
                .contains(&format!("@{}", format::protocol::socket_name(p.pid())));
            if bound {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        p
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn read_line(&mut self) -> String {
        let mut s = String::new();
        self.stdout.read_line(&mut s).unwrap();
        assert!(!s.is_empty(), "program exited; log:\n{}", self.log_text());
        s.trim_end().to_string()
    }

    /// Sends a command line and returns the reply line.
    pub fn ask(&mut self, cmd: &str) -> String {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        self.read_line()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs hpctl; returns (success, stdout, stderr).
pub fn hpctl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hpctl"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

/// The names of the relocation types in a patch object (x86-64 TLS and the
/// common ones; others as numbers), for asserting what a test exercises.
pub fn reloc_types(obj: &[u8]) -> Vec<String> {
    let f = object::File::parse(obj).unwrap();
    let mut out = Vec::new();
    for s in f.sections() {
        for (_, r) in s.relocations() {
            let t = reloc_type(r.flags());
            let name = match t {
                elf::R_X86_64_PC32 => "R_X86_64_PC32".to_string(),
                elf::R_X86_64_PLT32 => "R_X86_64_PLT32".to_string(),
                elf::R_X86_64_32 => "R_X86_64_32".to_string(),
                elf::R_X86_64_32S => "R_X86_64_32S".to_string(),
                elf::R_X86_64_GOTTPOFF => "R_X86_64_GOTTPOFF".to_string(),
                elf::R_X86_64_TPOFF32 => "R_X86_64_TPOFF32".to_string(),
                elf::R_X86_64_TLSGD => "R_X86_64_TLSGD".to_string(),
                elf::R_X86_64_TLSLD => "R_X86_64_TLSLD".to_string(),
                elf::R_X86_64_DTPOFF32 => "R_X86_64_DTPOFF32".to_string(),
                other => format!("type {other}"),
            };
            if !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}
