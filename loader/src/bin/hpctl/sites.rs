//! Call sites for `--redirect call-site`: every direct call/jmp/jcc with a
//! rel32 that targets a replaced function, in the object it is in (the
//! running executable, or the shared library a patch is for: decoded from
//! its file over its symbols' bounds by the `callsites` crate) and in
//! earlier patches' code (read from the process's memory).
//! The loader checks each site's bytes before it rewrites one.

use format::protocol::{SiteLine, Targets};
use std::os::unix::fs::FileExt;

fn line(addr: u64, target: usize, bytes: Vec<u8>) -> SiteLine {
    SiteLine {
        addr,
        func: target as u32,
        bytes,
    }
}

/// Sites in the object the functions are in (the executable, or a shared
/// library): link-time addresses shifted by the load bias.
fn in_object(pid: u32, t: &Targets) -> Result<Vec<SiteLine>, String> {
    let path = t
        .funcs
        .first()
        .and_then(|&f| mapped_file(pid, f))
        .unwrap_or_else(|| format!("/proc/{pid}/exe"));
    let elf = std::fs::read(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let link: Vec<u64> = t.funcs.iter().map(|a| a.wrapping_sub(t.bias)).collect();
    let found = callsites::in_elf(&elf, &link).map_err(|e| format!("{path}: {e}"))?;
    Ok(found
        .sites
        .into_iter()
        .map(|s| line(s.addr.wrapping_add(t.bias), s.target, s.bytes))
        .collect())
}

/// The file mapped at `addr` in the process (`/proc/PID/maps`): a shared
/// library's path, or `/proc/PID/exe` for the executable's own mappings
/// (its path may have been replaced since it started).
fn mapped_file(pid: u32, addr: u64) -> Option<String> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    maps.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        let (lo, hi) = w.next()?.split_once('-')?;
        let (lo, hi) = (
            u64::from_str_radix(lo, 16).ok()?,
            u64::from_str_radix(hi, 16).ok()?,
        );
        let path = w.nth(4)?;
        if !(lo..hi).contains(&addr) || !path.starts_with('/') {
            return None;
        }
        let is_exe = exe
            .as_deref()
            .is_some_and(|e| e == std::path::Path::new(path));
        Some(if is_exe {
            format!("/proc/{pid}/exe")
        } else {
            format!("/proc/{pid}/root{path}")
        })
    })
}

/// Sites in earlier patches' code, read through /proc/PID/mem.
fn in_patches(pid: u32, t: &Targets) -> Result<Vec<SiteLine>, String> {
    if t.code.is_empty() {
        return Ok(Vec::new());
    }
    let path = format!("/proc/{pid}/mem");
    let mem = std::fs::File::open(&path).map_err(|e| format!("cannot open {path}: {e}"))?;
    let mut out = Vec::new();
    for &(lo, hi) in &t.code {
        let mut code = vec![0u8; hi.saturating_sub(lo).min(64 << 20) as usize];
        mem.read_exact_at(&mut code, lo)
            .map_err(|e| format!("cannot read patch code at {lo:#x}: {e}"))?;
        let found = callsites::in_code(&code, lo, &t.funcs);
        out.extend(
            found
                .sites
                .into_iter()
                .map(|s| line(s.addr, s.target, s.bytes)),
        );
    }
    Ok(out)
}

pub fn find(pid: u32, t: &Targets) -> Result<Vec<SiteLine>, String> {
    let mut sites = in_object(pid, t)?;
    sites.extend(in_patches(pid, t)?);
    Ok(sites)
}
