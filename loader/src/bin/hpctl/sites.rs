//! Call sites for `--redirect call-site`: every direct call/jmp/jcc with a
//! rel32 that targets a replaced function, in the running executable
//! (decoded from its file over its symbols' bounds by the `callsites`
//! crate) and in earlier patches' code (read from the process's memory).
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

/// Sites in the executable: link-time addresses shifted by the load bias.
fn in_executable(pid: u32, t: &Targets) -> Result<Vec<SiteLine>, String> {
    let path = format!("/proc/{pid}/exe");
    let elf = std::fs::read(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let link: Vec<u64> = t.funcs.iter().map(|a| a.wrapping_sub(t.bias)).collect();
    let found = callsites::in_elf(&elf, &link).map_err(|e| format!("{path}: {e}"))?;
    Ok(found
        .sites
        .into_iter()
        .map(|s| line(s.addr.wrapping_add(t.bias), s.target, s.bytes))
        .collect())
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
    let mut sites = in_executable(pid, t)?;
    sites.extend(in_patches(pid, t)?);
    Ok(sites)
}
