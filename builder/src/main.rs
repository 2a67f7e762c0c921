//! hpbuild: turns a base tree and a unified diff into a live patch.
//!
//! Stages (one module or crate each): read the diff (`diff`), make the two
//! trees (`tree`), compile the affected translation units (`compdb`,
//! `compile`), compare the objects (crate `differ`), write the reviewable
//! source (crate `extern-gen`), and write the patch object (crate `emit`) and
//! its manifest (`manifest`). `pipeline` runs them in order.

mod cache;
mod capture;
mod ccwrap;
mod compdb;
mod compile;
mod deps;
mod diff;
mod edits;
mod entries;
mod error;
mod hook;
mod layout;
mod linkrec;
mod links;
mod manifest;
mod ninja;
mod parsed;
mod pipeline;
mod progress;
mod report;
mod review;
mod shape;
mod target;
mod tree;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "hpbuild",
    version,
    about = "Build a live patch for a running C program from a unified diff",
    args_conflicts_with_subcommands = true,
    // `--base`, `--diff` and `-o` are required for a build, not for
    // `hpbuild loader` and the other subcommands.
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    build: BuildArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Write libhotpatch.a and hotpatch.h (the in-process loader) into a directory.
    Loader {
        /// Where libhotpatch.a and hotpatch.h are written (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Run the project's own build and record each unit's exact compile
    /// command in DIR/compile_commands.json (for builds that write none), and
    /// its link and archive steps in DIR/link_commands.json.
    Capture {
        /// Where compile_commands.json is written (the base directory).
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
        /// The build command, after `--`: e.g. `-- make linux`.
        #[arg(last = true, required = true, value_name = "BUILD-COMMAND")]
        command: Vec<String>,
    },
    /// The compiler shim used by `capture` (runs the real compiler).
    #[command(hide = true)]
    CcWrap {
        /// The compiler command line the build ran, compiler first.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Git integration: a post-commit hook that builds a patch per commit.
    Hook {
        #[command(subcommand)]
        action: HookAction,
    },
}

#[derive(Subcommand)]
enum HookAction {
    /// Install .git/hooks/post-commit: each commit gets <patchdir>/<sha>.hpo
    /// built against the deployed base.
    Install {
        /// The commit the running program was built from (default HEAD);
        /// stored as git config hpbuild.deployed.
        #[arg(long, value_name = "REV")]
        deployed: Option<String>,
        /// Patch directory (git config hpbuild.patchdir; default
        /// .git/hpbuild/patches).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// What the installed hook runs after each commit: build
    /// <patchdir>/<HEAD>.hpo against git config hpbuild.deployed (or write
    /// <HEAD>.error with the reason). Run it by hand to rebuild HEAD's patch.
    Run,
}

/// Arguments of the default action: build a patch.
#[derive(Args)]
pub struct BuildArgs {
    /// The deployed source: a directory, or a git revision of the repository
    /// in the current directory.
    #[arg(long, value_name = "DIR|GIT-REV", required = true)]
    pub base: Option<String>,
    /// The fix, as a unified diff against the base.
    #[arg(long, value_name = "FILE", required = true)]
    pub diff: Option<PathBuf>,
    /// Output patch object; the manifest goes beside it as OUT.json and the
    /// reviewable source as OUT.c.
    #[arg(short = 'o', long = "output", value_name = "OUT.hpo", required = true)]
    pub output: Option<PathBuf>,
    /// compile_commands.json to use instead of the one in the base directory.
    #[arg(long, value_name = "FILE")]
    pub compile_db: Option<PathBuf>,
    /// How the patch redirects calls by default when applied: `entry` (a
    /// jump at each replaced function's entry) or `call-site` (also every
    /// direct call rewritten to the new code); `hpctl apply --redirect`
    /// overrides it. Recorded in the patch and its manifest.
    #[arg(long, value_name = "KIND", default_value = "entry",
          value_parser = ["entry", "call-site"])]
    pub redirect: String,
    /// The program or shared library the patch is for, as the build names
    /// it (a library by its soname or file name, e.g. `liblua5.4.so.0`; a
    /// program by its file name). With the link steps `hpbuild capture`
    /// records (link_commands.json), or a Ninja build's (`ninja -t
    /// commands`), it is inferred: the outputs the changed units are linked
    /// into (several, when a library and a program share the objects: each
    /// one a process has is patched). It also picks, among a source's
    /// entries, the one linked into that output. Recorded in the patch; for
    /// a library, the loader patches that library's code.
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,
    /// A source compiled into several programs has several entries in the
    /// compile database (a server and its CLI, each with its own flags):
    /// use the one whose object path ends with this (e.g. `server/net.o`).
    /// Without it (and without --target and link steps) hpbuild uses the
    /// first and says which.
    #[arg(long, value_name = "OBJECT")]
    pub unit_output: Option<String>,
    /// Sign the patch with this ed25519 private key (PEM PKCS#8, as
    /// `openssl genpkey -algorithm ed25519 -out key.pem` writes it). A
    /// process configured with the public half (HOTPATCH_PUBKEY or
    /// trusted.pub) applies only patches signed with it. Recorded in the
    /// manifest.
    #[arg(long, value_name = "KEYFILE")]
    pub sign: Option<PathBuf>,
    /// Print each shipped function and why it ships.
    #[arg(long)]
    pub explain: bool,
    /// Print the manifest as JSON on stdout (for tools).
    #[arg(long)]
    pub json: bool,
    /// Report progress on stderr even when it is not a terminal.
    #[arg(long, short)]
    pub verbose: bool,
    /// Set by `hpbuild hook run`: messages name git config keys, not options.
    #[arg(skip)]
    pub from_hook: bool,
}

fn main() -> ExitCode {
    // The compiler shim must not go through clap: compiler arguments are
    // arbitrary and its exit status must be the compiler's.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("cc-wrap") {
        return ExitCode::from(ccwrap::run(&argv[2..]).clamp(0, 255) as u8);
    }
    // Likewise the assembler shim GCC runs for the deployed shape (shape.rs).
    if argv.get(1).map(String::as_str) == Some("as-wrap") {
        return ExitCode::from(shape::as_wrap(&argv[2..]).clamp(0, 255) as u8);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Loader { out }) => write_loader(&out),
        Some(Command::Capture { dir, command }) => capture::run(&dir, &command),
        Some(Command::CcWrap { args }) => std::process::exit(ccwrap::run(&args)),
        Some(Command::Hook {
            action: HookAction::Install { deployed, out },
        }) => hook::install(deployed.as_deref(), out.as_deref()),
        Some(Command::Hook {
            action: HookAction::Run,
        }) => hook::run(),
        None => pipeline::run(&cli.build),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hpbuild: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_loader(out: &std::path::Path) -> Result<(), error::Error> {
    loader::write_loader(out).map_err(|e| {
        error::Error::new(format!(
            "cannot write the loader into {}: {e}",
            out.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every option, argument and subcommand explains itself in `--help`
    /// (clap's own --help/--version excepted), and `hook run` is listed.
    #[test]
    fn every_argument_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if a.get_help().is_none() && !matches!(id, "help" | "version") {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{path} {}", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let cmd = Cli::command();
        let mut missing = Vec::new();
        walk(&cmd, "hpbuild", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
        let hook = cmd.find_subcommand("hook").expect("hook subcommand");
        let run = hook.find_subcommand("run").expect("hook run");
        assert!(!run.is_hide_set(), "`hpbuild hook run` is listed in --help");
    }
}
