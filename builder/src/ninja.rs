//! Link steps of a Ninja build (what CMake's and Meson's Ninja generators
//! write), for a compile database that sits beside a `build.ninja`:
//! `ninja -t commands` prints every command of the build without running
//! any, and the link and archive lines among them are read as
//! `hpbuild capture` would have recorded them (`linkrec`). CMake wraps a
//! link in `: && … && :` and an archive in `rm -f lib.a && ar qc … &&
//! ranlib …`: each part between `&&` is a command of its own.

use crate::linkrec::{self, LinkStep};
use std::path::Path;
use std::process::Command;

/// The link steps of the Ninja build in `dir`, or `None` when there is no
/// `build.ninja`, no `ninja` to ask, or ninja cannot read it.
pub fn link_steps(dir: &Path) -> Option<Vec<LinkStep>> {
    if !dir.join("build.ninja").is_file() {
        return None;
    }
    let out = Command::new("ninja")
        .arg("-C")
        .arg(dir)
        .args(["-t", "commands"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let directory = dir.to_string_lossy();
    let text = String::from_utf8_lossy(&out.stdout);
    Some(
        text.lines()
            .flat_map(|line| line.split("&&"))
            .filter_map(|part| step(&directory, part))
            .collect(),
    )
}

/// One command, if it links or archives.
fn step(directory: &str, command: &str) -> Option<LinkStep> {
    let words = shlex::split(command.trim())?;
    // A compiler launcher (`ccache cc …`) runs the compiler after it.
    let words = match words.first().map(|w| tool_name(w)) {
        Some("ccache" | "sccache" | "distcc") => &words[1..],
        _ => &words[..],
    };
    let (tool, args) = words.split_first()?;
    let name = tool_name(tool);
    if linkrec::is_archiver(name) {
        linkrec::from_ar(directory, args)
    } else if linkrec::is_compiler(name) {
        linkrec::from_cc(directory, args)
    } else {
        None
    }
}

fn tool_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linkrec::Kind;

    #[test]
    fn cmake_and_meson_lines_are_link_steps() {
        let so = step(
            "/b",
            " /usr/bin/cc -fPIC -O2 -shared -Wl,-soname,libscale.so.1 -o libscale.so.1.0 CMakeFiles/scale.dir/scale.c.o ",
        )
        .unwrap();
        assert_eq!(
            (so.kind, so.soname.as_deref()),
            (Kind::Shared, Some("libscale.so.1"))
        );
        assert_eq!(so.inputs, ["CMakeFiles/scale.dir/scale.c.o"]);
        let ar = step(
            "/b",
            " /usr/bin/ar qc libscale.a CMakeFiles/s.dir/scale.c.o",
        )
        .unwrap();
        assert_eq!((ar.kind, ar.output.as_str()), (Kind::Archive, "libscale.a"));
        let meson = step("/b", "gcc-ar csrDT libscale.a libscale.a.p/scale.c.o").unwrap();
        assert_eq!(meson.inputs, ["libscale.a.p/scale.c.o"]);
        let launched = step("/b", "ccache gcc -o prog prog.p/main.c.o").unwrap();
        assert_eq!(launched.kind, Kind::Executable);
        assert!(step("/b", "/usr/bin/ranlib libscale.a").is_none());
        assert!(step("/b", ":").is_none());
        assert!(step("/b", "/usr/bin/cc -O2 -c a.c -o a.o").is_none());
    }
}
