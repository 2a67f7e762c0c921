//! The corpus sources: Debian bookworm source packages fetched with
//! `apt-get source --download-only` into a cache directory (downloaded once),
//! unpacked into the upstream tree and its `debian/` directory.

use crate::tools;
use std::path::{Path, PathBuf};
use std::process::Command;

/// An unpacked source package.
pub struct Package {
    /// The upstream tree, as released (never modified).
    pub upstream: PathBuf,
    /// `debian/patches`, with `series` giving the order.
    pub patches: PathBuf,
}

impl Package {
    /// Patch file names in `series` order.
    pub fn series(&self) -> Result<Vec<String>, String> {
        let text = std::fs::read_to_string(self.patches.join("series"))
            .map_err(|e| format!("cannot read {}/series: {e}", self.patches.display()))?;
        Ok(text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .map(|l| l.split_whitespace().next().unwrap_or(l).to_string())
            .collect())
    }
}

const DEB_SRC: &str = "/etc/apt/sources.list.d/hpbuild-deb-src.sources";

/// `apt-get source --download-only SPEC` into `downloads` (SPEC: `pkg`, or
/// `pkg=version` for a pinned one), deb-src enabled first.
pub fn download_source(downloads: &Path, spec: &str) -> Result<(), String> {
    enable_deb_src()?;
    tools::run(
        Command::new("apt-get")
            .args([
                "source",
                "--download-only",
                "-qq",
                "-o",
                "Acquire::Retries=3",
                spec,
            ])
            .current_dir(downloads),
    )
}

/// Downloads (once) and unpacks `pkg` under `cache`.
pub fn package(cache: &Path, pkg: &str) -> Result<Package, String> {
    let downloads = cache.join("downloads");
    std::fs::create_dir_all(&downloads).map_err(|e| e.to_string())?;
    if find(&downloads, &format!("{pkg}_"), ".dsc").is_none() {
        download_source(&downloads, pkg)?;
    }
    let root = cache.join("src").join(pkg);
    let upstream = root.join("upstream");
    if !upstream.is_dir() {
        let _ = std::fs::remove_dir_all(&root);
        let orig = find(&downloads, &format!("{pkg}_"), ".orig.tar.gz")
            .or_else(|| find(&downloads, &format!("{pkg}_"), ".orig.tar.xz"))
            .ok_or(format!(
                "no upstream tarball of {pkg} in {}",
                downloads.display()
            ))?;
        let deb = find(&downloads, &format!("{pkg}_"), ".debian.tar.xz").ok_or(format!(
            "no debian tarball of {pkg} in {}",
            downloads.display()
        ))?;
        let tmp = root.join("unpack");
        std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
        tools::run(
            Command::new("tar")
                .arg("-xf")
                .arg(&orig)
                .arg("-C")
                .arg(&tmp),
        )?;
        tools::run(
            Command::new("tar")
                .arg("-xf")
                .arg(&deb)
                .arg("-C")
                .arg(&root),
        )?;
        // The tarball holds one top directory (lua-5.4.4/, sqlite3-3.40.1/).
        let top = std::fs::read_dir(&tmp)
            .map_err(|e| e.to_string())?
            .flatten()
            .find(|e| e.path().is_dir())
            .ok_or(format!("{} is empty", orig.display()))?;
        std::fs::rename(top.path(), &upstream).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(Package {
        upstream,
        patches: root.join("debian/patches"),
    })
}

fn find(dir: &Path, prefix: &str, suffix: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with(prefix) && n.ends_with(suffix) && !n.contains("orig-www")
        })
}

/// `apt-get source` needs deb-src entries: copy the deb822 sources with
/// `Types: deb-src` (FIELD-NOTES) and update, once.
pub(super) fn enable_deb_src() -> Result<(), String> {
    let has_src = |p: &Path| {
        std::fs::read_to_string(p).is_ok_and(|t| {
            t.lines().any(|l| {
                l.starts_with("deb-src ") || (l.starts_with("Types:") && l.contains("deb-src"))
            })
        })
    };
    let dir = Path::new("/etc/apt/sources.list.d");
    let already = has_src(Path::new("/etc/apt/sources.list"))
        || std::fs::read_dir(dir)
            .map(|rd| rd.flatten().any(|e| has_src(&e.path())))
            .unwrap_or(false);
    if already {
        return Ok(());
    }
    let template = std::fs::read_to_string(dir.join("debian.sources")).map_err(|e| {
        format!("cannot enable deb-src: {e} reading /etc/apt/sources.list.d/debian.sources (add deb-src lines for bookworm yourself)")
    })?;
    let text: String = template
        .lines()
        .map(|l| {
            if l.starts_with("Types:") {
                "Types: deb-src".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(DEB_SRC, text + "\n")
        .map_err(|e| format!("cannot write {DEB_SRC} (run as root): {e}"))?;
    tools::run(Command::new("apt-get").args(["update", "-qq"]))
}
