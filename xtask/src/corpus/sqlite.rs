//! SQLite 3.40.1 (Debian sqlite3): built with upstream's `main.mk`, which
//! compiles every `src/*.c` as its own unit (the Debian fixes are written
//! against those files, not the amalgamation). Two long-running programs of
//! that build: the sqlite3 shell reading SQL from a pipe (line-buffered with
//! stdbuf), and, for the sessions extension's changeset reader that the
//! shell never calls, fixtures/corpus/sqlite3/changeset_driver.c (built by
//! `driver.mk` next to it, read by make after main.mk: compiled with the
//! same TCCX, linked like the shell against libsqlite3.a and the loader).
//! Every unit is compiled with the loader's directory on the include path,
//! for a fix written against `hotpatch.h` (the adaptation of 42).

use super::{Case, Check, Driver, Env, Project};
use crate::corpus::session::Session;
use crate::tools;
use std::path::Path;
use std::process::Command;

pub struct Sqlite;

/// `bld/sqlite3 :memory:`.
pub struct Shell;

/// `bld/changeset_driver`: iterates changesets given in hex, keeps a token
/// in memory, in a table and in a session's changeset.
pub struct ChangesetDriver;

/// Debian's feature set for what the fixes touch (sessions, FTS5), release
/// build (`NDEBUG`), with -g like dpkg-buildflags.
pub const TCC: &str = "gcc -O2 -g -DSQLITE_OS_UNIX=1 -DSQLITE_THREADSAFE=1 -DNDEBUG -DSQLITE_ENABLE_SESSION -DSQLITE_ENABLE_PREUPDATE_HOOK -DSQLITE_ENABLE_FTS5";

impl Project for Sqlite {
    fn package(&self) -> &'static str {
        "sqlite3"
    }

    fn cases(&self) -> Vec<Case> {
        vec![
            Case {
                patch: "41-fix_a_bug_in_the_NOT_NULL-IS_NULL_optimization.patch",
                check: Check::Verdict("41-not-null-is-null.sql"),
                drivers: &[&Shell],
            },
            Case {
                patch: "42-CVE-2025-6965.patch",
                check: Check::Refused("struct AggInfo changes its members"),
                drivers: &[&Shell],
            },
            Case {
                patch: "0001-Fix-a-buffer-overread-in-the-sessions-extension-that.patch",
                // sessionReadRecord runs only when a changeset is read
                // (sqlite3changeset_start/next, _apply, _invert, _concat,
                // changegroup, rebaser): the shell's .session only records
                // and writes changesets, so the reproducer runs in the
                // changeset driver; the shell, which links the same
                // sqlite3session.o, is patched alongside and keeps its state.
                check: Check::Verdict("0001-changeset-overread.txt"),
                drivers: &[&ChangesetDriver, &Shell],
            },
            Case {
                patch: "0002-Avoid-a-stack-overflow-that-could-be-caused-by-a-rec.patch",
                check: Check::Verdict("0002-window-after-error.sql"),
                drivers: &[&Shell],
            },
            Case {
                patch: "0003-Fix-a-technically-undefined-signed-integer-overflow-.patch",
                // main.mk builds FTS5 as one unit, fts5.c, that its mkfts5c.tcl
                // writes by concatenating ext/fts5/*.c (no #include, no #line).
                check: Check::Refused(
                    "ext/fts5/fts5_index.c is changed by the diff but no unit in compile_commands.json compiles or #includes it",
                ),
                drivers: &[&Shell],
            },
        ]
    }

    fn adaptations(&self) -> Vec<(&'static str, Case)> {
        vec![(
            "42-CVE-2025-6965.patch",
            Case {
                // The same fix with struct AggInfo unchanged: the widened
                // sorter column in a shadow variable per AggInfo, freed with
                // it and by a post-revert callback (the diff's header says
                // how it maps to Debian's patch).
                patch: "42-CVE-2025-6965-shadow.patch",
                check: Check::Verdict("42-aggregate-terms.sql"),
                drivers: &[&Shell],
            },
        )]
    }

    fn build(&self, tree: &Path, env: &Env) -> Result<(), String> {
        let bld = tree.join("bld");
        std::fs::create_dir_all(&bld).map_err(|e| e.to_string())?;
        let libs = format!("THREADLIB={} -lm -ldl", loader::link_flags(&env.loader));
        tools::run(
            Command::new(&env.hpbuild)
                .args(["capture", "--dir"])
                .arg(tree)
                .args(["--", "make", "-s", "-C"])
                .arg(&bld)
                .arg(format!("-j{}", env.jobs))
                .args(["-f", "../main.mk", "-f"])
                .arg(env.fixtures.join("sqlite3/driver.mk"))
                .args(["TOP=..", "BCC=gcc -O2"])
                .arg(format!("TCC={TCC} -I{}", env.loader.display()))
                .args([
                    "TLIBS=",
                    "EXE=",
                    "AR=ar cr",
                    "RANLIB=ranlib",
                    "TCLOBJ=",
                    &libs,
                    "sqlite3",
                    "changeset_driver",
                ]),
        )
    }
}

impl Driver for Shell {
    fn name(&self) -> &'static str {
        "sqlite3 shell"
    }

    fn start(&self, tree: &Path, env: &Env) -> Result<Session, String> {
        let mut cmd = Command::new("sh");
        // Reproducers may write scratch files (the shell's `.log FILE`): they
        // land in the work directory.
        cmd.args(["-c", "exec stdbuf -oL -eL \"$0\" :memory: 2>&1"])
            .arg(tree.join("bld/sqlite3"))
            .current_dir(env.work.join("sqlite3"))
            .env("HOTPATCH_LOG", env.work.join("sqlite3/loader.log"));
        Session::start(cmd, "==done==")
    }

    fn request(&self, script: &str) -> String {
        format!("{script}\n.print ==done==\n")
    }

    /// State of three kinds: a table of the main (in-memory) database, a
    /// temp table and a shell parameter (`.parameter set`, bound by name).
    fn set_state(&self, token: &str) -> String {
        self.request(&format!(
            "CREATE TABLE kept(v); INSERT INTO kept VALUES('{token}');\n\
             CREATE TEMP TABLE kept_temp AS SELECT v FROM kept;\n\
             .parameter set @kept '{token}'\n\
             {}",
            Self::STATE
        ))
    }

    fn get_state(&self) -> String {
        self.request(Self::STATE)
    }
}

impl Shell {
    /// `state: TOKEN` only if the table, the temp table and the parameter all
    /// still hold it.
    const STATE: &'static str =
        "SELECT 'state: ' || k.v FROM kept AS k JOIN temp.kept_temp AS t ON t.v = k.v WHERE @kept = k.v;";
}

impl Driver for ChangesetDriver {
    fn name(&self) -> &'static str {
        "changeset driver"
    }

    fn start(&self, tree: &Path, env: &Env) -> Result<Session, String> {
        let mut cmd = Command::new(tree.join("bld/changeset_driver"));
        cmd.current_dir(env.work.join("sqlite3")).env(
            "HOTPATCH_LOG",
            env.work.join("sqlite3/loader-changeset.log"),
        );
        Session::start(cmd, "==done==")
    }

    fn request(&self, script: &str) -> String {
        format!("{script}\n==done==\n")
    }

    /// The token in a global, in a table of an in-memory database and in
    /// the changeset a session recorded of it; `state` prints it only if all
    /// three agree (the changeset is read back through sqlite3changeset_*).
    fn set_state(&self, token: &str) -> String {
        self.request(&format!("set {token}\nstate"))
    }

    fn get_state(&self) -> String {
        self.request("state")
    }
}
