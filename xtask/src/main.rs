//! Project tasks: `cargo xtask demo` (the main job, end to end on a fresh
//! machine) and `cargo xtask test` (everything the CI runs).

mod demo;
mod tools;

use std::process::ExitCode;

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "demo" => demo::run(),
        "test" => test(),
        _ => {
            eprintln!("usage: cargo xtask <demo|test>\n  demo  build hpbuild, start a program, patch it live, show the change\n  test  install what the tests need, build release binaries, run every test");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The end-to-end tests drive the release binaries, so build them first.
fn test() -> Result<(), String> {
    tools::ensure()?;
    tools::cargo(&["build", "--release", "--workspace", "--bins"])?;
    tools::cargo(&["test", "--release", "--workspace"])
}
