//! One table of malformed `.hotpatch.meta` sections, run through both
//! readers of patch format v1: the Rust one (`format::read_patch`, which
//! hpctl applies before anything is sent) and the loader's C one
//! (`csrc/patchobj.c`, reached through the public `hotpatch_apply_mem` from
//! `programs/apply_mem.c`, linked with libhotpatch.a). Both must refuse every
//! case, in the same words, and both must accept the good ones. A second
//! table does the same for the structure of the signature section
//! (`.hotpatch.sig`, edits of the good patch signed).
//!
//! Every case is an edit of a real patch (differ + emit, as hpbuild makes
//! it) that replaces `target()` of the running test program. Both readers
//! check the content hash first, so an edit meant for a deeper check is
//! sealed again (`format::seal`, in [`with_meta`]); the hash cases are not.

mod common;

use common::{make_patch, make_signed_patch, Work};
use format::*;
use object::{Object, ObjectSection, ObjectSymbol};
use std::process::Command;

const PROG: &str = include_str!("programs/apply_mem.c");
const FILE: &str = "apply_mem.c";

/// An edit of the good patch.
type Edit = fn(&[u8]) -> Vec<u8>;

/// One malformed patch: an edit of the good one, and a fragment both
/// readers' refusals contain.
struct Case {
    name: &'static str,
    says: &'static str,
    edit: Edit,
}

/// Patches both readers must refuse.
const MALFORMED: &[Case] = &[
    // The header.
    Case {
        name: "empty metadata section",
        says: "no HOTPATCH header",
        edit: |p| with_meta(p, |m| m.clear()),
    },
    Case {
        name: "shorter than the header",
        says: "no HOTPATCH header",
        edit: |p| with_meta(p, |m| m.truncate(HP_HDR_SIZE as usize - 1)),
    },
    Case {
        name: "wrong magic",
        says: "no HOTPATCH header",
        edit: |p| with_meta(p, |m| m[0] = b'X'),
    },
    Case {
        name: "format version 2",
        says: "patch format version 2,",
        edit: |p| with_meta(p, |m| m.write32(HP_HDR_VERSION, 2)),
    },
    Case {
        name: "format version 0",
        says: "patch format version 0,",
        edit: |p| with_meta(p, |m| m.write32(HP_HDR_VERSION, 0)),
    },
    // The content hash.
    Case {
        name: "two bytes of the replacement code changed after sealing",
        says: "patch good: content hash does not match (the file was changed after hpbuild \
               wrote it)",
        edit: |p| flip_code(p, 8),
    },
    Case {
        name: "a byte of the stored hash changed",
        says: "patch good: content hash does not match",
        edit: |p| {
            let mut out = p.to_vec();
            out[meta_offset(p) + HP_HDR_SHA256 as usize + 5] ^= 0x40;
            out
        },
    },
    Case {
        name: "a byte appended to the file",
        says: "patch good: content hash does not match",
        edit: |p| [p, &[0]].concat(),
    },
    Case {
        // The id cannot be read: the message names no patch.
        name: "patch id made non-UTF-8 after sealing",
        says: "err content hash does not match",
        edit: |p| {
            let mut out = p.to_vec();
            let meta = meta_offset(p);
            let id = meta
                + (out.read32((meta + HP_HDR_STRTAB_OFF as usize) as u32)
                    + out.read32((meta + HP_HDR_PATCH_ID as usize) as u32))
                    as usize;
            out[id] = 0xff;
            out
        },
    },
    Case {
        name: "no content hash (flag cleared, sealed again)",
        says: "patch good: no content hash (the patch was written by an hpbuild that stores none",
        edit: |p| {
            with_meta(p, |m| {
                m.write32(HP_HDR_FLAGS, m.read32(HP_HDR_FLAGS) & !HP_HDR_F_SHA256)
            })
        },
    },
    Case {
        name: "metadata ends inside the content hash",
        says: "metadata is truncated",
        edit: |p| with_meta(p, |m| m.truncate(HP_HDR_SEALED_SIZE as usize - 1)),
    },
    // The string table.
    Case {
        name: "string table starts past the end",
        says: "metadata string table is out of bounds or unterminated",
        edit: |p| with_meta(p, |m| m.write32(HP_HDR_STRTAB_OFF, m.len() as u32 + 1)),
    },
    Case {
        name: "string table one byte longer than the section",
        says: "metadata string table is out of bounds or unterminated",
        edit: |p| {
            with_meta(p, |m| {
                m.write32(HP_HDR_STRTAB_SIZE, m.read32(HP_HDR_STRTAB_SIZE) + 1)
            })
        },
    },
    Case {
        name: "string table offset + size wraps around 32 bits",
        says: "metadata string table is out of bounds or unterminated",
        edit: |p| {
            with_meta(p, |m| {
                m.write32(HP_HDR_STRTAB_OFF, 0xffff_fff0);
                m.write32(HP_HDR_STRTAB_SIZE, 0x20);
            })
        },
    },
    Case {
        name: "empty string table",
        says: "metadata string table is out of bounds or unterminated",
        edit: |p| with_meta(p, |m| m.write32(HP_HDR_STRTAB_SIZE, 0)),
    },
    Case {
        // Every string used is terminated; the table itself is not. The
        // Rust reader accepted this before.
        name: "string table does not end with NUL",
        says: "metadata string table is out of bounds or unterminated",
        edit: |p| {
            with_meta(p, |m| {
                m.push(b'x');
                m.write32(HP_HDR_STRTAB_SIZE, m.read32(HP_HDR_STRTAB_SIZE) + 1);
            })
        },
    },
    // The function and mask tables.
    Case {
        name: "function table starts past the end",
        says: "metadata is truncated",
        edit: |p| with_meta(p, |m| m.write32(HP_HDR_FUNCS_OFF, m.len() as u32)),
    },
    Case {
        name: "function count past the end",
        says: "metadata is truncated",
        edit: |p| with_meta(p, |m| m.write32(HP_HDR_NFUNCS, u32::MAX)),
    },
    Case {
        name: "mask table starts past the end",
        says: "metadata is truncated",
        edit: |p| with_meta(p, |m| m.write32(HP_HDR_MASKS_OFF, m.len() as u32 + 1)),
    },
    Case {
        name: "mask count past the end",
        says: "metadata is truncated",
        edit: |p| with_meta(p, |m| m.write32(HP_HDR_NMASKS, 0x2000_0000)),
    },
    Case {
        // The Rust reader accepted this before.
        name: "no function records",
        says: "patch replaces no functions",
        edit: |p| with_meta(p, |m| m.write32(HP_HDR_NFUNCS, 0)),
    },
    // Strings.
    Case {
        name: "patch id past the string table",
        says: "metadata string offset",
        edit: |p| {
            with_meta(p, |m| {
                m.write32(HP_HDR_PATCH_ID, m.read32(HP_HDR_STRTAB_SIZE))
            })
        },
    },
    Case {
        name: "base id at offset 0xffffffff",
        says: "metadata string offset 4294967295 out of range",
        edit: |p| with_meta(p, |m| m.write32(HP_HDR_BASE_ID, u32::MAX)),
    },
    Case {
        name: "function name past the string table",
        says: "metadata string offset",
        edit: |p| {
            with_meta(p, |m| {
                m.write32(m.func(HP_FUNC_NAME), m.read32(HP_HDR_STRTAB_SIZE))
            })
        },
    },
    Case {
        name: "function file past the string table",
        says: "metadata string offset",
        edit: |p| {
            with_meta(p, |m| {
                m.write32(m.func(HP_FUNC_FILE), m.read32(HP_HDR_STRTAB_SIZE))
            })
        },
    },
    Case {
        name: "replacement symbol past the string table",
        says: "metadata string offset",
        edit: |p| {
            with_meta(p, |m| {
                m.write32(m.func(HP_FUNC_NEW), m.read32(HP_HDR_STRTAB_SIZE))
            })
        },
    },
    Case {
        // The C reader accepted these three before.
        name: "patch id is not UTF-8 (a lone 0xff)",
        says: "metadata string is not UTF-8",
        edit: |p| with_meta(p, |m| m.overwrite(HP_HDR_PATCH_ID, &[0xff])),
    },
    Case {
        name: "function name is overlong UTF-8 (C0 AF for '/')",
        says: "metadata string is not UTF-8",
        edit: |p| with_meta(p, |m| m.overwrite(m.func(HP_FUNC_NAME), &[0xc0, 0xaf])),
    },
    Case {
        name: "function name holds a UTF-16 surrogate (ED A0 80)",
        says: "metadata string is not UTF-8",
        edit: |p| {
            with_meta(p, |m| {
                m.overwrite(m.func(HP_FUNC_NAME), &[0xed, 0xa0, 0x80])
            })
        },
    },
    Case {
        // F0 9D 84, then the NUL: the C reader must stop there.
        name: "base id ends inside a 4-byte sequence",
        says: "metadata string is not UTF-8",
        edit: |p| with_decoded(p, |m| m.base_id.push_str(" \u{1d11e}"), &[0]),
    },
    // The target library (HP_HDR_F_TARGET).
    Case {
        name: "target flag with an empty target name",
        says: "patch names an empty target library",
        edit: |p| {
            with_meta(p, |m| {
                m.write32(HP_HDR_FLAGS, m.read32(HP_HDR_FLAGS) | HP_HDR_F_TARGET);
                m.write32(HP_HDR_TARGET, 0);
            })
        },
    },
    Case {
        name: "target name offset out of range",
        says: "metadata string offset 16777215 out of range",
        edit: |p| {
            with_meta(p, |m| {
                m.write32(HP_HDR_FLAGS, m.read32(HP_HDR_FLAGS) | HP_HDR_F_TARGET);
                m.write32(HP_HDR_TARGET, 0xff_ffff);
            })
        },
    },
    // A list of targets (HP_HDR_F_TARGETS): several outputs of the build.
    Case {
        name: "both a target and a target list",
        says: "patch has both a target and a target list",
        edit: |p| {
            with_meta(p, |m| {
                let both = HP_HDR_F_TARGET | HP_HDR_F_TARGETS;
                m.write32(HP_HDR_FLAGS, m.read32(HP_HDR_FLAGS) | both);
            })
        },
    },
    Case {
        name: "a target list longer than the loader takes",
        says: "patch names 17 targets (a list holds 2 to 16)",
        edit: |p| {
            with_meta(p, |m| {
                m.write32(HP_HDR_FLAGS, m.read32(HP_HDR_FLAGS) | HP_HDR_F_TARGETS);
                m.write32(HP_HDR_NTARGETS, 17);
            })
        },
    },
    Case {
        name: "a target list naming one output twice",
        says: "patch names target \"\" twice",
        edit: |p| {
            with_meta(p, |m| {
                m.write32(HP_HDR_FLAGS, m.read32(HP_HDR_FLAGS) | HP_HDR_F_TARGETS);
                m.write32(HP_HDR_NTARGETS, 2);
                m.write32(HP_HDR_TARGETS, 0);
                m.write32(HP_HDR_TARGETS + 4, 0);
            })
        },
    },
    // Function records.
    Case {
        name: "masks run past the mask table",
        says: "function record 0 points past the mask table",
        edit: |p| {
            with_meta(p, |m| {
                m.write32(m.func(HP_FUNC_MASK_FIRST), m.read32(HP_HDR_NMASKS))
            })
        },
    },
    Case {
        name: "mask index + count wraps around 32 bits",
        says: "function record 0 points past the mask table",
        edit: |p| {
            with_meta(p, |m| {
                m.write32(m.func(HP_FUNC_MASK_FIRST), u32::MAX);
                m.write32(m.func(HP_FUNC_MASK_COUNT), 1);
            })
        },
    },
    Case {
        // The Rust reader accepted this and the next before.
        name: "empty function name",
        says: "function record 0 has an empty name",
        edit: |p| with_decoded(p, |m| m.funcs[0].name.clear(), &[]),
    },
    Case {
        name: "empty replacement symbol",
        says: "function record 0 has an empty name",
        edit: |p| with_decoded(p, |m| m.funcs[0].new_symbol.clear(), &[]),
    },
    // The metadata against the object.
    Case {
        name: "replacement symbol not in the object",
        says: "function target names replacement symbol nowhere that the object does not define",
        edit: |p| with_decoded(p, |m| m.funcs[0].new_symbol = "nowhere".into(), &[]),
    },
    Case {
        // The Rust reader accepted this and the next before.
        name: "replacement symbol only referenced (undefined) in the object",
        says: "function target names replacement symbol g_bias that the object does not define",
        edit: |p| with_decoded(p, |m| m.funcs[0].new_symbol = "g_bias".into(), &[]),
    },
    Case {
        name: "replacement symbol is data",
        says: "replacement symbol extra is not in an executable section",
        edit: |p| with_decoded(p, |m| m.funcs[0].new_symbol = "extra".into(), &[]),
    },
    Case {
        // The C reader refused it; the Rust one let it through to the process.
        name: "replacement symbol at its section's end",
        says: "replacement symbol target lies outside its section",
        edit: |p| {
            let end = section_of(p, ".text.target").len() as u64;
            with_symbol_value(p, "target", end)
        },
    },
    Case {
        name: "no metadata section",
        says: "no .hotpatch.meta section",
        edit: rename_meta,
    },
    Case {
        // Before, the Rust reader read the first and the C reader the last.
        name: "a second metadata section",
        says: "patch has more than one .hotpatch.meta section",
        edit: |p| {
            let bad = with_meta(p, |m| m.write32(HP_HDR_NFUNCS, 0));
            add_meta_section(p, meta_of(&bad))
        },
    },
];

/// Signature sections both readers must refuse for their structure (the
/// signature is only verified where a process has a key, `signing.rs`):
/// edits of the good patch signed, sealed again.
const SIG_MALFORMED: &[Case] = &[
    Case {
        name: "signature section with the wrong magic",
        says: "patch good: signature section .hotpatch.sig has no HPSIGNED header",
        edit: |p| with_sig(p, |s| s[3] = b'X'),
    },
    Case {
        name: "signature algorithm 7",
        says: "patch good: signature algorithm 7 is unknown (this reader verifies ed25519, 1)",
        edit: |p| with_sig(p, |s| s.write32(HP_SIG_ALG, 7)),
    },
    Case {
        name: "signature flags set",
        says: "patch good: signature section .hotpatch.sig has unknown flags 0x4",
        edit: |p| with_sig(p, |s| s.write32(HP_SIG_FLAGS, 4)),
    },
    Case {
        name: "signature section one byte short",
        says: "patch good: signature section .hotpatch.sig is 111 bytes, not 112",
        edit: |p| with_sig_header(p, |h| h.size -= 1),
    },
    Case {
        name: "signature section one byte long",
        says: "patch good: signature section .hotpatch.sig is 113 bytes, not 112",
        edit: |p| with_sig_header(p, |h| h.size += 1),
    },
    Case {
        name: "signature section empty",
        says: "patch good: signature section .hotpatch.sig is 0 bytes, not 112",
        edit: |p| with_sig_header(p, |h| h.size = 0),
    },
    Case {
        name: "signature section is NOBITS",
        says: ".hotpatch.sig has no contents",
        edit: |p| with_sig_header(p, |h| h.kind = object::elf::SHT_NOBITS),
    },
    Case {
        name: "signature section past the end of the file",
        says: ".hotpatch.sig lies outside the file (truncated patch?)",
        edit: |p| with_sig_header(p, |h| h.offset = 1 << 40),
    },
    Case {
        name: "signature section offset + size wraps around 64 bits",
        says: ".hotpatch.sig lies outside the file (truncated patch?)",
        edit: |p| with_sig_header(p, |h| h.offset = u64::MAX - 8),
    },
    Case {
        name: "a second signature section",
        says: "patch has more than one .hotpatch.sig section",
        edit: |p| {
            let mut out = add_section_copy(p, HP_SIG_SECTION, section_of(p, HP_SIG_SECTION));
            let _ = seal(&mut out);
            out
        },
    },
];

/// Patches both readers must accept.
const GOOD: &[(&str, Edit)] = &[
    ("as emitted", |p| p.to_vec()),
    ("UTF-8 beyond ASCII in the ids", |p| {
        with_decoded(
            p,
            |m| {
                m.patch_id.push_str("-\u{e9}");
                m.base_id = "v1 \u{2014} na\u{ef}ve \u{1d11e}".into();
            },
            &[],
        )
    }),
    ("bytes after the string table", |p| {
        with_meta(p, |m| m.extend_from_slice(&[0xff; 8]))
    }),
    ("code changed, then sealed again", |p| {
        let mut out = flip_code(p, 0);
        seal(&mut out).unwrap();
        out
    }),
];

/// Little-endian fields of a metadata section (methods, so an edit can
/// read and write one in the same call).
trait Fields {
    fn read32(&self, at: u32) -> u32;
    fn write32(&mut self, at: u32, v: u32);
    /// Where `field` of the first function record is.
    fn func(&self, field: u32) -> u32;
    /// Overwrites the start of the string whose offset is at `field`.
    fn overwrite(&mut self, field: u32, bytes: &[u8]);
}

impl Fields for Vec<u8> {
    fn read32(&self, at: u32) -> u32 {
        u32::from_le_bytes(self[at as usize..at as usize + 4].try_into().unwrap())
    }

    fn write32(&mut self, at: u32, v: u32) {
        self[at as usize..at as usize + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn func(&self, field: u32) -> u32 {
        self.read32(HP_HDR_FUNCS_OFF) + field
    }

    fn overwrite(&mut self, field: u32, bytes: &[u8]) {
        let at = (self.read32(HP_HDR_STRTAB_OFF) + self.read32(field)) as usize;
        self[at..at + bytes.len()].copy_from_slice(bytes);
    }
}

/// The file offset of the metadata section's header (ELF64: `e_shoff` at
/// 0x28, 64-byte headers).
fn meta_header(patch: &[u8]) -> usize {
    section_header(patch, HP_META_SECTION)
}

/// The file offset of the metadata section's contents.
fn meta_offset(patch: &[u8]) -> usize {
    let file = object::File::parse(patch).unwrap();
    let section = file.section_by_name(HP_META_SECTION).unwrap();
    section.file_range().unwrap().0 as usize
}

/// `patch` with two bytes of `target`'s new code inverted, `at` bytes in.
fn flip_code(patch: &[u8], at: usize) -> Vec<u8> {
    let file = object::File::parse(patch).unwrap();
    let (off, size) = file
        .section_by_name(".text.target")
        .unwrap()
        .file_range()
        .unwrap();
    assert!(at + 2 <= size as usize);
    let mut out = patch.to_vec();
    out[off as usize + at] ^= 0xff;
    out[off as usize + at + 1] ^= 0xff;
    out
}

fn meta_of(patch: &[u8]) -> Vec<u8> {
    section_of(patch, HP_META_SECTION)
}

fn section_of(patch: &[u8], name: &str) -> Vec<u8> {
    let file = object::File::parse(patch).unwrap();
    let data = file.section_by_name(name).unwrap().data();
    data.unwrap().to_vec()
}

/// The file offset of the header of section `name` (ELF64: `e_shoff` at
/// 0x28, 64-byte headers).
fn section_header(patch: &[u8], name: &str) -> usize {
    let file = object::File::parse(patch).unwrap();
    let index = file.section_by_name(name).unwrap().index().0;
    let shoff = u64::from_le_bytes(patch[0x28..0x30].try_into().unwrap()) as usize;
    shoff + index * 64
}

/// `patch` with the signature section's contents edited in place by `f`,
/// sealed again.
fn with_sig(patch: &[u8], f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let file = object::File::parse(patch).unwrap();
    let (at, size) = file
        .section_by_name(HP_SIG_SECTION)
        .unwrap()
        .file_range()
        .unwrap();
    let mut sig = patch[at as usize..(at + size) as usize].to_vec();
    f(&mut sig);
    let mut out = patch.to_vec();
    out[at as usize..(at + size) as usize].copy_from_slice(&sig);
    seal(&mut out).unwrap();
    out
}

/// The fields of a section header a signature case edits.
struct Header {
    kind: u32,
    offset: u64,
    size: u64,
}

/// `patch` with the signature section's header edited by `f`, sealed again.
fn with_sig_header(patch: &[u8], f: impl FnOnce(&mut Header)) -> Vec<u8> {
    let at = section_header(patch, HP_SIG_SECTION);
    let mut out = patch.to_vec();
    let u64_at = |o: usize| u64::from_le_bytes(out[at + o..at + o + 8].try_into().unwrap());
    let mut h = Header {
        kind: out.read32((at + 4) as u32),
        offset: u64_at(24),
        size: u64_at(32),
    };
    f(&mut h);
    out.write32((at + 4) as u32, h.kind);
    out[at + 24..at + 32].copy_from_slice(&h.offset.to_le_bytes());
    out[at + 32..at + 40].copy_from_slice(&h.size.to_le_bytes());
    seal(&mut out).unwrap();
    out
}

/// `patch` with symbol `name`'s st_value set to `value`, sealed again.
fn with_symbol_value(patch: &[u8], name: &str, value: u64) -> Vec<u8> {
    let file = object::File::parse(patch).unwrap();
    let index = file
        .symbols()
        .find(|s| s.name() == Ok(name))
        .unwrap()
        .index()
        .0;
    let (symtab, _) = file
        .section_by_name(".symtab")
        .unwrap()
        .file_range()
        .unwrap();
    let at = symtab as usize + index * 24 + 8; // Elf64_Sym.st_value
    let mut out = patch.to_vec();
    out[at..at + 8].copy_from_slice(&value.to_le_bytes());
    seal(&mut out).unwrap();
    out
}

/// Appends `data` to the file, 8-aligned; returns its offset.
fn append(patch: &mut Vec<u8>, data: &[u8]) -> u64 {
    patch.resize(patch.len().next_multiple_of(8), 0);
    let at = patch.len() as u64;
    patch.extend_from_slice(data);
    at
}

/// `patch` with its metadata section's contents edited by `f` (the new
/// contents are appended and the section header re-pointed at them), sealed
/// again where the edit leaves room for a content hash, so the edit reaches
/// the check it is meant for.
fn with_meta(patch: &[u8], f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut meta = meta_of(patch);
    f(&mut meta);
    let hdr = meta_header(patch);
    let mut out = patch.to_vec();
    let at = append(&mut out, &meta);
    out[hdr + 24..hdr + 32].copy_from_slice(&at.to_le_bytes());
    out[hdr + 32..hdr + 40].copy_from_slice(&(meta.len() as u64).to_le_bytes());
    let _ = seal(&mut out);
    out
}

/// `patch` with its metadata decoded, edited by `f` and re-encoded; then
/// the bytes of `tail` replace the end of the base id (before its NUL).
fn with_decoded(patch: &[u8], f: impl FnOnce(&mut Meta), tail: &[u8]) -> Vec<u8> {
    let mut meta = Meta::decode(&meta_of(patch)).unwrap();
    f(&mut meta);
    with_meta(patch, |m| {
        *m = meta.encode();
        let end =
            (m.read32(HP_HDR_STRTAB_OFF) + m.read32(HP_HDR_BASE_ID)) as usize + meta.base_id.len();
        m[end - tail.len()..end].copy_from_slice(tail);
    })
}

/// `.hotpatch.meta` renamed `.hotpatch.mota`.
fn rename_meta(patch: &[u8]) -> Vec<u8> {
    let hdr = meta_header(patch);
    let shoff = u64::from_le_bytes(patch[0x28..0x30].try_into().unwrap()) as usize;
    let shstrndx = u16::from_le_bytes(patch[0x3e..0x40].try_into().unwrap()) as usize;
    let shstr = shoff + shstrndx * 64;
    let strtab = u64::from_le_bytes(patch[shstr + 24..shstr + 32].try_into().unwrap()) as usize;
    let mut out = patch.to_vec();
    let name = strtab + out.read32(hdr as u32) as usize;
    assert_eq!(
        &out[name..name + HP_META_SECTION.len()],
        HP_META_SECTION.as_bytes()
    );
    out[name + ".hotpatch.m".len()] = b'o';
    out
}

/// `patch` with one more section header: a copy of the metadata section's,
/// holding `data`. The header table moves to the end of the file.
fn add_meta_section(patch: &[u8], data: Vec<u8>) -> Vec<u8> {
    add_section_copy(patch, HP_META_SECTION, data)
}

/// `patch` with one more section header: a copy of section `name`'s,
/// holding `data`. The header table moves to the end of the file.
fn add_section_copy(patch: &[u8], name: &str, data: Vec<u8>) -> Vec<u8> {
    let hdr = section_header(patch, name);
    let shoff = u64::from_le_bytes(patch[0x28..0x30].try_into().unwrap()) as usize;
    let shnum = u16::from_le_bytes(patch[0x3c..0x3e].try_into().unwrap()) as usize;
    let mut out = patch.to_vec();
    let at = append(&mut out, &data);
    let mut extra = patch[hdr..hdr + 64].to_vec();
    extra[24..32].copy_from_slice(&at.to_le_bytes());
    extra[32..40].copy_from_slice(&(data.len() as u64).to_le_bytes());
    let mut table = patch[shoff..shoff + shnum * 64].to_vec();
    table.extend_from_slice(&extra);
    let new_shoff = append(&mut out, &table);
    out[0x28..0x30].copy_from_slice(&new_shoff.to_le_bytes());
    out[0x3c..0x3e].copy_from_slice(&(shnum as u16 + 1).to_le_bytes());
    out
}

/// Runs every patch through the C reader, in one process: one reply line
/// each ("ok ..." or "err ...").
fn c_reader(work: &Work, exe: &std::path::Path, patches: &[Vec<u8>]) -> Vec<String> {
    let dir = work.path("cases");
    std::fs::create_dir_all(&dir).unwrap();
    let paths: Vec<_> = patches
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let path = dir.join(format!("{i:03}.hpo"));
            std::fs::write(&path, p).unwrap();
            path
        })
        .collect();
    let out = Command::new(exe)
        .args(&paths)
        .env("HOTPATCH_DISABLE", "1")
        .env("HOTPATCH_LOG", work.path("hotpatch.log"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    assert_eq!(lines.len(), patches.len() + 1, "{text}");
    assert_eq!(
        lines[patches.len()],
        "target(1) = 3",
        "the program's own code again"
    );
    lines[..patches.len()].to_vec()
}

#[test]
fn both_readers_refuse_the_same_malformed_metadata() {
    let work = Work::new("malformed");
    let exe = common::build_program(&work, FILE, PROG, &[]);
    let new = format!("#define NEW\n{PROG}");
    let good = make_patch(&work, "good", FILE, PROG, &new, &["target"], &[]);
    let key = SigningKey::from_bytes(&[3; 32]);
    let signed = make_signed_patch(
        &work,
        "good",
        FILE,
        PROG,
        &new,
        &["target"],
        &[],
        Some(&key),
    );

    // The table, then the metadata cut short at every length.
    let mut cases: Vec<(String, &str, Vec<u8>)> = MALFORMED
        .iter()
        .map(|c| (c.name.to_string(), c.says, (c.edit)(&good)))
        .collect();
    cases.extend(
        SIG_MALFORMED
            .iter()
            .map(|c| (c.name.to_string(), c.says, (c.edit)(&signed))),
    );
    let meta = meta_of(&good);
    for len in 0..meta.len() {
        let cut = with_meta(&good, |m| m.truncate(len));
        cases.push((format!("metadata cut to {len} bytes"), "", cut));
    }
    let mut goods: Vec<Vec<u8>> = GOOD.iter().map(|(_, edit)| edit(&good)).collect();
    goods.push(signed.clone());

    let mut all: Vec<Vec<u8>> = cases.iter().map(|c| c.2.clone()).collect();
    all.extend(goods.iter().cloned());
    let c = c_reader(&work, &exe, &all);

    let mut disagree = Vec::new();
    for ((name, says, patch), c) in cases.iter().zip(&c) {
        let rust = match read_patch(patch) {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("err {e}"),
        };
        let refused = |r: &str| r.starts_with("err ") && r.contains(says);
        if !refused(&rust) || !refused(c) {
            disagree.push(format!(
                "{name}: wanted both to refuse with {says:?}\n  rust: {rust}\n  C:    {c}"
            ));
        }
    }
    let names = GOOD
        .iter()
        .map(|(name, _)| *name)
        .chain(["signed, as emitted"]);
    for (name, (patch, c)) in names.zip(goods.iter().zip(&c[cases.len()..])) {
        let rust = read_patch(patch);
        if rust.is_err() || !c.starts_with("ok applied") {
            disagree.push(format!(
                "{name}: wanted both to accept\n  rust: {rust:?}\n  C:    {c}"
            ));
        }
    }
    assert!(disagree.is_empty(), "{}", disagree.join("\n"));
}
