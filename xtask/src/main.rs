//! Project tasks: `cargo xtask demo` (the main job, end to end on a fresh
//! machine) and `cargo xtask test` (everything the CI runs).

mod bench;
mod corpus;
mod demo;
mod fuzz;
mod stress;
mod tools;

use std::process::ExitCode;

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "demo" => demo::run(),
        "bench" => bench::run(),
        "test" => test(),
        "corpus" => corpus::run(&std::env::args().skip(2).collect::<Vec<_>>()),
        "fuzz" => fuzz::run(&std::env::args().skip(2).collect::<Vec<_>>()),
        "stress" => stress::run(&std::env::args().skip(2).collect::<Vec<_>>()),
        _ => {
            eprintln!("usage: cargo xtask <demo|test|corpus|bench|stress|fuzz>\n  demo  build hpbuild, start a program, patch it live, show the change\n  test  install what the tests need, build release binaries, run every test\n  corpus [lua] [sqlite] [nginx]  Debian's security fixes for Lua 5.4, SQLite and nginx (master and workers, under HTTP load), applied live with reproducers\n  bench [build|apply|calls|stop]  costs as ratios measured side by side: build, patched call, apply pause, memory; apply time per patch size; call cost (plain, loader, entry jump, call site); time all threads are parked and EINTR (ptrace vs. signal stop)\n  fuzz [--seconds N] [--seed S] [TARGET...]  the fuzz targets (loader, diff_reader, differ_object, differ_pair, read_patch) for N s each (default 30) from their committed corpora; `fuzz seeds` rewrites the generated seeds\n  {}", stress::USAGE);
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
/// Ends with one plain "tests: N passed, M failed" line summing every test
/// binary (cargo's own last line is that of whichever binary ran last).
fn test() -> Result<(), String> {
    tools::ensure()?;
    tools::cargo(&["build", "--release", "--workspace", "--bins"])?;
    let (passed, failed, ok) =
        tools::cargo_test(&["test", "--release", "--workspace", "--all-targets"])?;
    println!("tests: {passed} passed, {failed} failed");
    if ok && failed == 0 && passed > 0 {
        Ok(())
    } else {
        Err("some tests failed".into())
    }
}
