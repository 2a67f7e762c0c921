//! End-to-end harness for hpbuild.
//!
//! A *fixture* is a directory under `fixtures/` holding a small C program,
//! `fix.patch` and `fixture.json` (schema: `fixtures/README.md`). The harness
//!
//! 1. copies the fixture into a temporary directory, writes
//!    `compile_commands.json` there and compiles every translation unit with
//!    exactly the recorded commands, links `libhotpatch.a` (from
//!    `hpbuild loader --out`), and starts the program;
//! 2. runs `hpbuild --base <tempdir> --diff <fix.patch> -o <out>.hpo`
//!    (the diff lives outside the base; the base must stay unmodified);
//! 3. drives the program over stdin/stdout line by line, applying, listing
//!    and reverting the patch with `hpctl` as the fixture's steps say.
//!
//! Every wait is bounded (a line: [`LINE_TIMEOUT`]; a tool run:
//! [`HPBUILD_TIMEOUT`], [`HPCTL_TIMEOUT`]); every child process is killed
//! when dropped. A failure reports the step, the program's conversation so
//! far, its stderr, the loader log and the tool's output.
//!
//! [`check_consistency`] validates a fixture without any of the tools: the
//! original program must give the pre-patch answers and the program rebuilt
//! from the patched source must give the post-patch answers.

mod checks;
mod consistency;
mod driver;
mod fixture;
mod matrix;
mod program;
mod run;
mod step;
mod steps;
mod tools;
mod tree;

pub use checks::*;
pub use consistency::*;
pub use driver::*;
pub use fixture::*;
pub use matrix::*;
pub use program::*;
pub use run::*;
pub use step::{Step, Version};
pub use steps::*;
pub use tools::*;
pub use tree::*;

use std::time::Duration;

/// How long the harness waits for one answer line from a fixture program.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one `hpbuild` run may take (it compiles every touched file twice).
pub const HPBUILD_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one `hpctl` run may take.
pub const HPCTL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one compiler or `patch` run may take.
pub const CC_TIMEOUT: Duration = Duration::from_secs(60);

/// Result type of the harness: the error is a complete, human-readable report.
pub type Res<T> = Result<T, String>;
