//! `cargo xtask corpus`: Debian's own security fixes for real programs,
//! applied live. For each package: fetch the Debian source, walk its patch
//! `series` in order on one tree (so a fix's base is upstream plus every
//! earlier patch that changes the program), and at each fix of the corpus:
//! build the tree with the project's own build system under
//! `hpbuild capture` with the loader linked in, start the program and give
//! it some state, build the patch with `hpbuild --base TREE --diff FIX`,
//! check the reproducer misbehaves, apply live with `hpctl`, check the
//! reproducer now behaves and the state is still there. Prints a table.
//! A fix hpbuild must refuse may have a hand adaptation for a running
//! program next to it (`Project::adaptations`, kept in
//! `fixtures/corpus/<pkg>/`), built and applied on the same tree.
//!
//! nginx, a forking server, runs its own walk (`nginx.rs`): a live fix there
//! goes to the master and every worker under HTTP load.
//!
//! `cargo xtask corpus [lua|sqlite|nginx] [--cache DIR]` (default: lua and
//! sqlite, cache target/corpus). `lua` runs two builds: the executable and
//! the shared library (`lua.rs`); `sqlite` two: from `src/*.c` and as the
//! amalgamation (`amalgamation.rs`, also alone as `sqlite-amalgamation`).

mod amalgamation;
mod fetch;
mod http;
mod lua;
mod mp4;
mod nginx;
mod report;
mod session;
mod sqlite;

use crate::tools::{self, workspace};
use report::Row;
use session::Session;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How a fix is shown to work (or why it must not be applied).
pub enum Check {
    /// `fixtures/corpus/<pkg>/<file>` prints `verdict: buggy` before the
    /// patch and `verdict: fixed` after, in the same process.
    Verdict(&'static str),
    /// The reproducer crashes the unpatched program: shown on a throwaway
    /// process of the same build; the live process is patched first and
    /// must then print `verdict: fixed`. (No current case needs it.)
    #[allow(dead_code)]
    CrashBefore(&'static str),
    /// hpbuild must refuse, with a reason containing this text.
    Refused(&'static str),
    /// Built and applied; the fixed code cannot be reached from the
    /// program's input (the reason is printed). (No current case needs it.)
    #[allow(dead_code)]
    ApplyOnly(&'static str),
}

pub struct Case {
    pub patch: &'static str,
    pub check: Check,
    /// The long-running processes the patch is applied to, each started
    /// from the case's base build and given state before the patch exists.
    /// The reproducer runs in the first.
    pub drivers: &'static [&'static dyn Driver],
}

/// What differs between the corpus programs.
pub trait Project {
    /// The Debian source package (fetched once, shared by its builds).
    fn package(&self) -> &'static str;
    /// How the table names this build, and its work directory: the package,
    /// or the package and the kind of build (`lua5.4-shared`).
    fn name(&self) -> &'static str {
        self.package()
    }
    /// What the fixes' patches are for, as the manifest names them: a
    /// shared library by its soname, "" the executable; none: the
    /// executable. hpbuild is not told: it must infer them from the link
    /// steps capture recorded, and the row fails when the manifest differs.
    fn targets(&self) -> &'static [&'static str] {
        &[]
    }
    fn cases(&self) -> Vec<Case>;
    /// Generated files Debian's build would add (before the first build).
    fn prepare(&self, _tree: &Path) -> Result<(), String> {
        Ok(())
    }
    /// Builds (or rebuilds after a patch) every driver's executable with the
    /// project's own build under `hpbuild capture`.
    fn build(&self, tree: &Path, env: &Env) -> Result<(), String>;
    /// Hand adaptations of series patches for a running program, kept in
    /// `fixtures/corpus/<pkg>/`: `(series patch, case)`, where the case's
    /// `patch` names the adaptation's diff. Each is built on the same tree as
    /// the series patch it adapts, right after that patch's own case.
    fn adaptations(&self) -> Vec<(&'static str, Case)> {
        Vec::new()
    }
    /// The diff hpbuild gets for `fix` on the built `tree`: the fix itself,
    /// or, for a build whose sources are generated from the patched files
    /// (an amalgamation), the change the fix makes to the generated ones.
    fn diff_for(&self, _tree: &Path, fix: &Path, _env: &Env) -> Result<PathBuf, String> {
        Ok(fix.to_path_buf())
    }
}

/// A long-running process of the built tree that takes requests on stdin
/// (the Lua driver script, the sqlite3 shell, the changeset driver).
pub trait Driver {
    /// How the table names it.
    fn name(&self) -> &'static str;
    /// Starts its executable of the built `tree`.
    fn start(&self, tree: &Path, env: &Env) -> Result<Session, String>;
    /// `script` framed as one request.
    fn request(&self, script: &str) -> String;
    /// A request that stores `token` in the process, and one that prints it
    /// as `state: <token>`.
    fn set_state(&self, token: &str) -> String;
    fn get_state(&self) -> String;
}

/// Paths shared by every case.
pub struct Env {
    pub hpbuild: PathBuf,
    pub hpctl: PathBuf,
    pub loader: PathBuf,
    pub work: PathBuf,
    pub fixtures: PathBuf,
    pub jobs: usize,
}

pub fn run(args: &[String]) -> Result<(), String> {
    let mut which: Vec<&str> = Vec::new();
    let mut cache = workspace().join("target/corpus");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "lua" | "sqlite" | "sqlite-amalgamation" | "nginx" => which.push(a),
            "--cache" => cache = PathBuf::from(it.next().ok_or("--cache needs a directory")?),
            other => {
                return Err(format!(
                "unknown argument {other}: use `cargo xtask corpus [lua] [sqlite] [sqlite-amalgamation] [nginx] [--cache DIR]`"
            ))
            }
        }
    }
    if which.is_empty() {
        which = vec!["lua", "sqlite"];
    }
    tools::release_binaries()?;
    // Where cargo just built them: CARGO_TARGET_DIR when it is set.
    let bin = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace().join("target"), PathBuf::from)
        .join("release");
    let work = cache.join("work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let env = Env {
        hpbuild: bin.join("hpbuild"),
        hpctl: bin.join("hpctl"),
        loader: work.join("loader"),
        work: work.clone(),
        fixtures: workspace().join("fixtures/corpus"),
        jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    tools::run(
        Command::new(&env.hpbuild)
            .args(["loader", "--out"])
            .arg(&env.loader),
    )?;
    // Lua is built twice: the interpreter with the library linked in, and
    // the interpreter linked to liblua5.4.so.0 (the fixes go to the library);
    // SQLite twice: from src/*.c and as the amalgamation.
    let projects: Vec<Box<dyn Project>> = which
        .iter()
        .flat_map(|w| -> Vec<Box<dyn Project>> {
            match *w {
                "lua" => vec![Box::new(lua::Lua), Box::new(lua::LuaShared)],
                "sqlite" => vec![
                    Box::new(sqlite::Sqlite),
                    Box::new(amalgamation::Amalgamation),
                ],
                "sqlite-amalgamation" => vec![Box::new(amalgamation::Amalgamation)],
                _ => Vec::new(),
            }
        })
        .collect();
    let mut rows = Vec::new();
    for p in &projects {
        match run_package(p.as_ref(), &cache, &env) {
            Ok(mut r) => rows.append(&mut r),
            Err(e) => rows.push(Row::failed(p.name(), "(package)", &e)),
        }
    }
    if which.contains(&"nginx") {
        match nginx::run(&cache, &env) {
            Ok(mut r) => rows.append(&mut r),
            Err(e) => rows.push(Row::failed("nginx", "(package)", &e)),
        }
    }
    report::print(&rows);
    let failed = rows.iter().filter(|r| !r.ok).count();
    if failed > 0 {
        return Err(format!("{failed} corpus case(s) failed"));
    }
    Ok(())
}

/// Walks the package's series on one tree, running each corpus case at its
/// place in the series.
fn run_package(p: &dyn Project, cache: &Path, env: &Env) -> Result<Vec<Row>, String> {
    let pkg = fetch::package(cache, p.package())?;
    let tree = env.work.join(p.name()).join("tree");
    copy_tree(&pkg.upstream, &tree)?;
    p.prepare(&tree)?;
    let cases = p.cases();
    let adaptations = p.adaptations();
    let mut rows = Vec::new();
    let mut built = false;
    let mut dirty = true;
    for name in pkg.series()? {
        let file = pkg.patches.join(&name);
        let own = env.fixtures.join(p.package());
        let here = cases
            .iter()
            .filter(|c| c.patch == name)
            .map(|c| (c, file.clone()))
            .chain(
                adaptations
                    .iter()
                    .filter(|(of, _)| *of == name)
                    .map(|(_, c)| (c, own.join(c.patch))),
            );
        for (case, diff) in here {
            // A refusal needs the tree and its compile database, not a
            // fresh executable: the rebuild waits for the next running case.
            let runs = !matches!(case.check, Check::Refused(_));
            if dirty && (runs || !built) {
                say(&format!("{}: building the base of {name}", p.name()));
                p.build(&tree, env)?;
                built = true;
                dirty = false;
            }
            let row = run_case(p, case, &tree, &diff, env)
                .unwrap_or_else(|e| Row::failed(p.name(), case.patch, &e));
            rows.push(row);
        }
        if changes_program(&file) {
            tools::run(
                Command::new("patch")
                    .args(["-p1", "--batch", "--quiet", "--no-backup-if-mismatch", "-d"])
                    .arg(&tree)
                    .arg("-i")
                    .arg(&file),
            )
            .map_err(|e| format!("{name} does not apply in series order: {e}"))?;
            say(&format!("{}: {name} applied to the tree", p.name()));
            dirty = true;
        } else {
            say(&format!(
                "{}: {name} not applied: it changes only the build system or build tools (the corpus builds with upstream's own build)",
                p.name()
            ));
        }
    }
    let missing: Vec<&str> = cases
        .iter()
        .map(|c| (c.patch, c.patch))
        .chain(adaptations.iter().map(|(of, c)| (c.patch, *of)))
        .filter(|(row, _)| !rows.iter().any(|r| r.fix == *row))
        .map(|(_, of)| of)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "not in debian/patches/series: {}",
            missing.join(", ")
        ));
    }
    Ok(rows)
}

/// Whether a Debian patch changes the program: a C source or header outside
/// the build tools (`tool/`). Build-system patches (Makefiles, configure,
/// libtool) and build-tool patches belong to Debian's packaging build.
fn changes_program(patch: &Path) -> bool {
    let text = std::fs::read_to_string(patch).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.strip_prefix("+++ "))
        .map(|p| p.split_whitespace().next().unwrap_or(""))
        .any(|p| (p.ends_with(".c") || p.ends_with(".h")) && !p.contains("/tool/"))
}

fn run_case(
    p: &dyn Project,
    case: &Case,
    tree: &Path,
    fix: &Path,
    env: &Env,
) -> Result<Row, String> {
    let mut row = Row::new(p.name(), case.patch);
    say(&format!("{}: {}", p.name(), case.patch));
    let reproducer = |file: &str| -> Result<String, String> {
        let path = env.fixtures.join(p.package()).join(file);
        std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let timeout = Duration::from_secs(20);
    let first = *case.drivers.first().ok_or("the case names no driver")?;

    // The programs run and hold state before the patch exists.
    let mut live: Vec<(&dyn Driver, Session)> = Vec::new();
    if !matches!(case.check, Check::Refused(_)) {
        for d in case.drivers {
            live.push((*d, d.start(tree, env)?));
        }
    }
    let token = format!("kept-{}", std::process::id());
    for (d, s) in live.iter_mut() {
        let out = s.request(&d.set_state(&token), timeout)?;
        expect_line(
            &out,
            &format!("state: {token}"),
            &format!("setting the state of the {}", d.name()),
        )?;
    }
    match case.check {
        Check::Verdict(file) => {
            let out = live[0]
                .1
                .request(&first.request(&reproducer(file)?), timeout)?;
            row.before = verdict(&out);
        }
        Check::CrashBefore(file) => {
            let mut throwaway = first.start(tree, env)?;
            row.before = match throwaway.request(&first.request(&reproducer(file)?), timeout) {
                Err(e) if e.contains("died") => {
                    format!("crashes ({})", e.split(';').next().unwrap_or(&e))
                }
                Err(e) => format!("unexpected: {e}"),
                Ok(out) => format!("unexpected: no crash: {}", verdict(&out)),
            };
        }
        _ => {}
    }

    let hpo = env
        .work
        .join(p.name())
        .join(case.patch.replace(".patch", ".hpo"));
    let diff = p.diff_for(tree, fix, env)?;
    let started = Instant::now();
    let built = Command::new(&env.hpbuild)
        .arg("--base")
        .arg(tree)
        .arg("--diff")
        .arg(&diff)
        .arg("-o")
        .arg(&hpo)
        .output()
        .map_err(|e| format!("cannot run hpbuild: {e}"))?;
    row.build_secs = started.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&built.stderr).trim().to_string();
    // A crash of hpbuild is never a refusal, whatever its message quotes.
    let crashed = err.contains("panicked at");
    let err = if crashed { crash_summary(&err) } else { err };
    if let Check::Refused(reason) = case.check {
        row.apply = if built.status.success() {
            "built (expected a refusal)".into()
        } else if crashed {
            err.clone()
        } else {
            format!("refused: {}", err.trim_start_matches("hpbuild: "))
        };
        row.ok = !built.status.success() && !crashed && err.contains(reason);
        return Ok(row);
    }
    if !built.status.success() {
        return Err(format!("hpbuild failed: {err}"));
    }
    row.shipped = report::shipped(&hpo.with_extension("json"))?;
    let targets = report::targets(&hpo.with_extension("json"))?;
    if targets != p.targets() {
        row.apply = format!(
            "FAILED: built for {targets:?}, expected {:?} (\"\": the executable)",
            p.targets()
        );
        return Ok(row);
    }

    // The same patch goes into every live process.
    for (d, s) in live.iter() {
        let applied = Command::new(&env.hpctl)
            .arg("apply")
            .arg(s.pid().to_string())
            .arg(&hpo)
            .output()
            .map_err(|e| format!("cannot run hpctl: {e}"))?;
        let text = String::from_utf8_lossy(&applied.stdout).trim().to_string()
            + String::from_utf8_lossy(&applied.stderr).trim();
        if !applied.status.success() {
            row.apply = format!(
                "FAILED on the {}: {}",
                d.name(),
                text.lines().last().unwrap_or("")
            );
            return Ok(row);
        }
    }
    let names: Vec<&str> = live.iter().map(|(d, _)| d.name()).collect();
    row.apply = format!("applied ({})", names.join(", "));
    let after_ok = match case.check {
        Check::Verdict(file) | Check::CrashBefore(file) => {
            let out = live[0]
                .1
                .request(&first.request(&reproducer(file)?), timeout)?;
            row.after = verdict(&out);
            row.after.starts_with("fixed")
        }
        Check::ApplyOnly(why) => {
            row.after = format!("n/a: {why}");
            true
        }
        Check::Refused(_) => unreachable!(),
    };
    let mut lost = Vec::new();
    for (d, s) in live.iter_mut() {
        let out = s.request(&d.get_state(), timeout)?;
        if !out.iter().any(|l| l.trim() == format!("state: {token}")) {
            lost.push(format!("LOST in the {}: {out:?}", d.name()));
        }
    }
    row.state = if lost.is_empty() {
        "kept".into()
    } else {
        lost.join("; ")
    };
    let before_ok = match case.check {
        Check::Verdict(_) => row.before.starts_with("buggy"),
        Check::CrashBefore(_) => row.before.starts_with("crashes"),
        _ => true,
    };
    row.ok = before_ok && after_ok && row.state == "kept";
    Ok(row)
}

/// One line for a Rust panic: where and the message's first line, without
/// the backtrace or the input the message may quote.
fn crash_summary(stderr: &str) -> String {
    let mut lines = stderr.lines();
    let at = lines
        .find_map(|l| {
            l.split_once("panicked at ")
                .map(|(_, at)| at.trim_end_matches(':').to_string())
        })
        .unwrap_or_default();
    let msg = lines.next().unwrap_or("").trim();
    format!("CRASH: hpbuild panicked at {at}: {msg}")
}

/// "buggy (...)" / "fixed (...)" from a reproducer's `verdict:` line.
fn verdict(out: &[String]) -> String {
    out.iter()
        .find_map(|l| l.trim().strip_prefix("verdict: ").map(str::to_string))
        .unwrap_or_else(|| format!("no verdict: {}", out.join(" | ")))
}

fn expect_line(out: &[String], want: &str, what: &str) -> Result<(), String> {
    if out.iter().any(|l| l.trim() == want) {
        Ok(())
    } else {
        Err(format!("{what}: expected `{want}`, got {out:?}"))
    }
}

fn say(msg: &str) {
    eprintln!("corpus: {msg}");
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to.parent().expect("has parent")).map_err(|e| e.to_string())?;
    tools::run(Command::new("cp").arg("-a").arg(from).arg(to))
}
