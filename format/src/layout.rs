// Patch format v1: the byte layout of the `.hotpatch.meta` section.
//
// This file is the single definition of the layout. It is `include!`d by
// `format.rs` (the Rust reader and writer, used by hpbuild and hpctl) and by
// `build.rs`, which turns every constant below into a `#define` in the
// generated C header `hp_format.h` that the in-process loader reads. Change a
// number here and both sides change together.
//
// All integers are little-endian. "str" fields are byte offsets into the
// section's string table; offset 0 is always the empty string.

/// First eight bytes of the metadata section.
pub const HP_MAGIC: &[u8; 8] = b"HOTPATCH";
/// Version of this layout; the loader refuses any other.
pub const HP_FORMAT_VERSION: u32 = 1;
/// Name of the non-allocated ELF section carrying the metadata.
pub const HP_META_SECTION: &str = ".hotpatch.meta";
/// An undefined symbol named `FILE::NAME` in a patch object refers to the
/// local (static) symbol NAME that follows the STT_FILE entry FILE in the
/// running program's symbol table. Any other undefined name is global.
pub const HP_LOCAL_SEP: &str = "::";

/// Sections of callback pointers a patch may carry (`HOTPATCH_PRE_APPLY(fn)`
/// and friends in hotpatch.h put `int (*)(void)` pointers there): pre-apply
/// callbacks run before the switch and a non-zero return cancels the apply;
/// post-apply ones right after it; pre-revert (non-zero cancels) and
/// post-revert ones around a revert.
pub const HP_CB_PRE_APPLY_SECTION: &str = ".hotpatch.pre_apply";
pub const HP_CB_POST_APPLY_SECTION: &str = ".hotpatch.post_apply";
pub const HP_CB_PRE_REVERT_SECTION: &str = ".hotpatch.pre_revert";
pub const HP_CB_POST_REVERT_SECTION: &str = ".hotpatch.post_revert";

// Header, at offset 0 of the section.
pub const HP_HDR_SIZE: u32 = 48;
pub const HP_HDR_MAGIC: u32 = 0; // [u8; 8]
pub const HP_HDR_VERSION: u32 = 8; // u32
pub const HP_HDR_FLAGS: u32 = 12; // u32, HP_HDR_F_*
pub const HP_HDR_PATCH_ID: u32 = 16; // str
pub const HP_HDR_NFUNCS: u32 = 20; // u32, number of function records
pub const HP_HDR_FUNCS_OFF: u32 = 24; // u32, section offset of the first record
pub const HP_HDR_NMASKS: u32 = 28; // u32, number of mask records
pub const HP_HDR_MASKS_OFF: u32 = 32; // u32, section offset of the first mask
pub const HP_HDR_STRTAB_OFF: u32 = 36; // u32, section offset of the string table
pub const HP_HDR_STRTAB_SIZE: u32 = 40; // u32, its size in bytes
pub const HP_HDR_BASE_ID: u32 = 44; // str, human-readable base description

/// The builder asks for call-site redirects by default (`hpbuild --redirect
/// call-site`); `hpctl apply --redirect` overrides it.
pub const HP_HDR_F_CALL_SITES: u32 = 1;
/// The header is followed by the patch's content hash (HP_HDR_SHA256).
/// Every writer sets it; the readers refuse a patch without it (one written
/// before content hashes). Older loaders ignore it and the hash, and read
/// the tables where the header's offsets say, after the hash.
pub const HP_HDR_F_SHA256: u32 = 2;

// Content hash, right after the header: SHA-256 of the whole patch file
// (every byte of the ELF object) with these 32 bytes read as zero. The
// writer stores it as its last step; both readers check it before they look
// at anything else in the patch, so a file changed after hpbuild wrote it is
// refused as such.
pub const HP_HDR_SHA256: u32 = 48; // [u8; 32]
pub const HP_SHA256_SIZE: u32 = 32;
/// Header and content hash: where the tables may start.
pub const HP_HDR_SEALED_SIZE: u32 = 80;

/// The patch is for a shared library the process loaded, not for the
/// executable: HP_HDR_TARGET names it, and the tables start at
/// HP_HDR_TARGETED_SIZE or later. The loader finds the library by that
/// name (its path, file name or soname), looks the patch's functions and
/// statics up in the library's symbol table and places the patch within
/// reach of it.
pub const HP_HDR_F_TARGET: u32 = 4;
pub const HP_HDR_TARGET: u32 = 80; // str, the library (with HP_HDR_F_TARGET)
pub const HP_HDR_TARGETED_SIZE: u32 = 88;

/// The patch is for several outputs of the build that its units are linked
/// into (the same objects in a program and in a shared library, say):
/// HP_HDR_NTARGETS names, "" for the executable, at HP_HDR_TARGETS; the
/// tables start after them. The loader applies the patch, in one switch, to
/// each of them the process has: a library it has loaded by that name, the
/// executable when it defines the patch's first function. Not with
/// HP_HDR_F_TARGET.
pub const HP_HDR_F_TARGETS: u32 = 8;
pub const HP_HDR_NTARGETS: u32 = 84; // u32, 2..=HP_MAX_TARGETS (with HP_HDR_F_TARGETS)
pub const HP_HDR_TARGETS: u32 = 88; // [str; NTARGETS] (with HP_HDR_F_TARGETS)
pub const HP_MAX_TARGETS: u32 = 16;

// Function record: one per function of the running program that the patch
// replaces.
pub const HP_FUNC_SIZE: u32 = 48;
pub const HP_FUNC_NAME: u32 = 0; // str, symbol name in the running program
pub const HP_FUNC_FILE: u32 = 4; // str, STT_FILE name for a static, "" for a global
pub const HP_FUNC_NEW: u32 = 8; // str, defined symbol in this object holding the new code
pub const HP_FUNC_REDIRECT: u32 = 12; // u32, one of HP_REDIRECT_*
pub const HP_FUNC_OLD_SIZE: u32 = 16; // u64, st_size of the original function
pub const HP_FUNC_FINGERPRINT: u32 = 24; // u64, see `fingerprint` in format.rs
pub const HP_FUNC_MASK_FIRST: u32 = 32; // u32, index of its first mask record
pub const HP_FUNC_MASK_COUNT: u32 = 36; // u32, number of its mask records
pub const HP_FUNC_FLAGS: u32 = 40; // u32, HP_FUNC_F_*
pub const HP_FUNC_RESERVED: u32 = 44; // u32, 0

/// Redirect the old function by writing a jump at its entry.
pub const HP_REDIRECT_ENTRY_JUMP: u32 = 1;
/// Reserved for call-site rewriting (not produced by format v1 builders).
pub const HP_REDIRECT_CALL_SITES: u32 = 2;

/// The function is static (resolved by FILE + NAME).
pub const HP_FUNC_F_LOCAL: u32 = 1;

// Mask record: a byte range of the original function whose value depends on
// where things were linked (a relocated field, or an instruction the linker may
// relax). These bytes are treated as zero when fingerprinting.
pub const HP_MASK_SIZE: u32 = 8;
pub const HP_MASK_OFFSET: u32 = 0; // u32, offset from the function's start
pub const HP_MASK_LEN: u32 = 4; // u32, length in bytes

// Fingerprint: FNV-1a, 64-bit, over the function's bytes with masked ranges
// read as zero.
pub const HP_FNV_OFFSET_BASIS: u64 = 0xcbf29ce484222325;
pub const HP_FNV_PRIME: u64 = 0x100000001b3;
