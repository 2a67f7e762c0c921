//! hpbuild: turns a base tree and a unified diff into a live patch.
//!
//! Stages (one module or crate each): read the diff (`diff`), make the two
//! trees (`tree`), compile the affected translation units (`compdb`,
//! `compile`), compare the objects (crate `differ`), write the reviewable
//! source (crate `extern-gen`), and emit the patch object and its manifest
//! (`emit`, `manifest`). `pipeline` runs them in order.

mod compdb;
mod compile;
mod diff;
mod emit;
mod error;
mod manifest;
mod pipeline;
mod progress;
mod review;
mod tree;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "hpbuild",
    version,
    about = "Build a live patch for a running C program from a unified diff",
    args_conflicts_with_subcommands = true
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
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// Arguments of the default action: build a patch.
#[derive(Args)]
pub struct BuildArgs {
    /// The deployed source: a directory, or a git revision of the repository
    /// in the current directory.
    #[arg(long, value_name = "DIR|GIT-REV")]
    pub base: Option<String>,
    /// The fix, as a unified diff against the base.
    #[arg(long, value_name = "FILE")]
    pub diff: Option<PathBuf>,
    /// Output patch object; the manifest goes beside it as OUT.json and the
    /// reviewable source as OUT.c.
    #[arg(short = 'o', long = "output", value_name = "OUT.hpo")]
    pub output: Option<PathBuf>,
    /// compile_commands.json to use instead of the one in the base directory.
    #[arg(long, value_name = "FILE")]
    pub compile_db: Option<PathBuf>,
    /// Print each shipped function and why it ships.
    #[arg(long)]
    pub explain: bool,
    /// Print the manifest as JSON on stdout (for tools).
    #[arg(long)]
    pub json: bool,
    /// Report progress on stderr even when it is not a terminal.
    #[arg(long, short)]
    pub verbose: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Loader { out }) => write_loader(&out),
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
    hotpatch::write_loader(out).map_err(|e| {
        error::Error::new(format!(
            "cannot write the loader into {}: {e}",
            out.display()
        ))
    })
}
