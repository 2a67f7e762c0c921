//! `cargo xtask fuzz [--seconds N] [--seed S] [TARGET...]`: the fuzz
//! targets, each run for N seconds (default 30) from its committed corpus,
//! with libFuzzer's random seed S (default: a new one each run; CI fixes
//! it); `cargo xtask fuzz seeds` rewrites the generated seeds.
//!
//! Targets:
//! * `loader` — libFuzzer harness over the loader's C patch reader and
//!   linker (`loader/fuzz/fuzz_patch.c`), built here with clang
//!   `-fsanitize=fuzzer,address`; corpus `loader/fuzz/corpus/`.
//! * `diff_reader`, `differ_object`, `differ_pair`, `read_patch` — the
//!   cargo-fuzz crate in `fuzz/` (nightly); corpora `fuzz/corpus/<target>/`.
//!
//! Every run starts from the committed corpus: new inputs go to a scratch
//! directory under `target/fuzz/` that is emptied first, so runs are
//! comparable and the checkout stays clean. A crash fails the task and
//! names the input libFuzzer wrote; once understood, keep it (minimised,
//! `-minimize_crash=1`, or the one field that matters changed in a seed) in
//! the target's `crashes/` directory under its corpus, where every later run
//! executes it first. An input whose fix is still to come waits in
//! `fuzz/unfixed/<target>/`, outside the corpus, so that CI stays green
//! meanwhile; it moves into `crashes/` with the fix.

use crate::tools::{self, workspace};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const RUST_TARGETS: &[&str] = &["diff_reader", "differ_object", "differ_pair", "read_patch"];

struct Outcome {
    target: String,
    execs: u64,
    per_sec: u64,
    new_units: u64,
    seconds: f64,
    crash: Option<String>,
}

pub fn run(args: &[String]) -> Result<(), String> {
    let mut seconds = 30u64;
    let mut seed = None;
    let mut targets = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or("--seconds needs a number")?
            }
            // A fixed seed makes a run repeat itself for the same code (CI):
            // a crash then comes from a change, not from the dice.
            "--seed" => {
                seed = Some(
                    it.next()
                        .and_then(|s| s.parse::<u64>().ok())
                        .ok_or("--seed needs a number")?,
                )
            }
            "seeds" => return seeds(),
            t if t == "loader" || RUST_TARGETS.contains(&t) => targets.push(t.to_string()),
            other => {
                return Err(format!(
                    "unknown argument {other}: targets are loader, {}; or `seeds`",
                    RUST_TARGETS.join(", ")
                ))
            }
        }
    }
    if targets.is_empty() {
        targets.push("loader".into());
        targets.extend(RUST_TARGETS.iter().map(|t| t.to_string()));
    }

    let mut outcomes = Vec::new();
    if targets.iter().any(|t| t == "loader") {
        let bin = build_loader_harness()?;
        let root = workspace().join("loader/fuzz");
        let corpus = [root.join("corpus")];
        outcomes.push(libfuzzer(
            "loader",
            Command::new(&bin),
            false,
            &corpus,
            &root.join("hpo.dict"),
            (seconds, seed),
        )?);
    }
    let rust: Vec<&String> = targets.iter().filter(|t| *t != "loader").collect();
    if !rust.is_empty() {
        let t0 = Instant::now();
        tools::run(&mut cargo_fuzz(&["build"]))?;
        eprintln!(
            "fuzz: cargo fuzz build: {:.0} s",
            t0.elapsed().as_secs_f64()
        );
    }
    for t in rust {
        let corpus = [workspace().join("fuzz/corpus").join(t)];
        outcomes.push(libfuzzer(
            t,
            cargo_fuzz(&["run", t]),
            true,
            &corpus,
            &workspace().join("loader/fuzz/hpo.dict"),
            (seconds, seed),
        )?);
    }

    println!("\n| target | executions | exec/s | new inputs | time | crashes |");
    println!("|---|---|---|---|---|---|");
    for o in &outcomes {
        println!(
            "| {} | {} | {} | {} | {:.0} s | {} |",
            o.target,
            o.execs,
            o.per_sec,
            o.new_units,
            o.seconds,
            if o.crash.is_some() { "1" } else { "0" }
        );
    }
    let crashed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.crash.as_ref().map(|c| format!("{}: {c}", o.target)))
        .collect();
    if crashed.is_empty() {
        Ok(())
    } else {
        Err(format!("crashes: {}", crashed.join("; ")))
    }
}

/// `cargo +nightly fuzz ARGS` in the workspace root. The environment `cargo
/// xtask` runs in names the stable toolchain (CARGO, RUSTUP_TOOLCHAIN):
/// drop it so that cargo-fuzz builds with the nightly one.
fn cargo_fuzz(args: &[&str]) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg("+nightly")
        .arg("fuzz")
        .args(args)
        .current_dir(workspace())
        .env_remove("CARGO")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC");
    cmd
}

/// Runs a libFuzzer binary for `seconds` from `corpus`, new inputs and
/// crashes going to target/fuzz/<name>/. `cmd` is the binary, or `cargo
/// fuzz run T` (`via_cargo_fuzz`: the corpus directories go before `--`,
/// else cargo-fuzz adds its default one first, and libFuzzer would write
/// into the committed corpus). Its output is kept in run.log there; the
/// final statistics are read from it.
fn libfuzzer(
    name: &str,
    mut cmd: Command,
    via_cargo_fuzz: bool,
    corpus: &[PathBuf],
    dict: &Path,
    (seconds, seed): (u64, Option<u64>),
) -> Result<Outcome, String> {
    let dir = workspace().join("target/fuzz").join(name);
    let scratch = dir.join("corpus");
    let artifacts = dir.join("artifacts");
    let _ = std::fs::remove_dir_all(&scratch);
    for d in [&scratch, &artifacts] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let log = dir.join("run.log");
    let log_file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    // The first directory receives the new inputs.
    let dirs: Vec<&PathBuf> = std::iter::once(&scratch).chain(corpus).collect();
    if via_cargo_fuzz {
        cmd.args(&dirs).arg("--");
    }
    cmd.arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg(format!("-dict={}", dict.display()))
        .arg(format!("-artifact_prefix={}/", artifacts.display()));
    if let Some(n) = seed {
        cmd.arg(format!("-seed={n}"));
    }
    if !via_cargo_fuzz {
        cmd.args(&dirs);
    }
    cmd.stdin(Stdio::null())
        .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
        .stderr(log_file);
    eprintln!("fuzz: {name} for {seconds} s (log: {})", log.display());
    let t0 = Instant::now();
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run the {name} fuzzer: {e}"))?;
    let secs = t0.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let stat = |key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{key}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let crash = text.lines().find_map(|l| {
        l.split_once("Test unit written to ")
            .map(|(_, p)| p.trim().to_string())
    });
    let outcome = Outcome {
        target: name.to_string(),
        execs: stat("number_of_executed_units"),
        per_sec: stat("average_exec_per_sec"),
        new_units: stat("new_units_added"),
        seconds: secs,
        crash: crash.clone(),
    };
    if !status.success() || crash.is_some() {
        let tail: Vec<&str> = text.lines().rev().take(60).collect();
        for l in tail.iter().rev() {
            eprintln!("  {l}");
        }
        if crash.is_none() {
            return Err(format!(
                "the {name} fuzzer failed ({status}): see {}",
                log.display()
            ));
        }
    }
    eprintln!(
        "fuzz: {name}: {} executions ({}/s), {} new inputs, {}",
        outcome.execs,
        outcome.per_sec,
        outcome.new_units,
        match &crash {
            Some(c) => format!("CRASH: {c}"),
            None => "no crash".into(),
        }
    );
    Ok(outcome)
}

/// clang can build a libFuzzer binary with AddressSanitizer (on Debian the
/// runtime is package libclang-rt-N-dev).
fn check_clang(dir: &Path) -> Result<(), String> {
    let probe = dir.join("probe.c");
    std::fs::write(
        &probe,
        "int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }\n",
    )
    .map_err(|e| e.to_string())?;
    let ok = Command::new("clang")
        .args(["-fsanitize=fuzzer,address", "-o"])
        .arg(dir.join("probe"))
        .arg(&probe)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err(
            "clang cannot link -fsanitize=fuzzer,address: install clang and its runtime \
             (Debian: apt-get install clang libclang-rt-dev, or libclang-rt-<version>-dev)"
                .into(),
        )
    }
}

/// The directory loader/build.rs generated hp_format.h and hp_protocol.h
/// into (the loader crate's OUT_DIR), from cargo's own report of the build.
fn loader_out_dir() -> Result<PathBuf, String> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--quiet",
            "-p",
            "loader",
            "--lib",
            "--message-format=json",
        ])
        .current_dir(workspace())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo build: {e}"))?;
    if !out.status.success() {
        return Err("cargo build -p loader failed".into());
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "build-script-executed")
        .filter(|m| {
            m["package_id"]
                .as_str()
                .is_some_and(|id| id.contains("/loader#") || id.contains("/loader@"))
        })
        .find_map(|m| m["out_dir"].as_str().map(PathBuf::from))
        .ok_or_else(|| "cargo did not report the loader's build script output".into())
}

/// Builds target/fuzz/loader-build/fuzz_patch: the harness, the seeds' base
/// program (target.c, unoptimised so its statics stay in the symbol table)
/// and every loader source, instrumented, in an archive so that only what
/// the reader and the linker need is linked (not listener.c's constructor).
fn build_loader_harness() -> Result<PathBuf, String> {
    let ws = workspace();
    let dir = ws.join("target/fuzz/loader-build");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    check_clang(&dir)?;
    let out_dir = loader_out_dir()?;
    let csrc = ws.join("loader/csrc");
    let fuzz = ws.join("loader/fuzz");
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&csrc)
        .map_err(|e| e.to_string())?
        .map(|e| e.map(|e| e.path()).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    sources.retain(|p| p.extension().is_some_and(|x| x == "c"));
    sources.sort();
    let t0 = Instant::now();
    let common = [
        "-g",
        "-O1",
        "-std=gnu11",
        "-D_GNU_SOURCE",
        "-fno-strict-aliasing",
        "-fno-omit-frame-pointer",
    ];
    let includes = [
        format!("-I{}", out_dir.display()),
        format!("-I{}", csrc.display()),
    ];
    tools::run(
        Command::new("clang")
            .args(common)
            .args(&includes)
            .arg("-fsanitize=fuzzer-no-link,address")
            .arg("-c")
            .args(&sources)
            .current_dir(&dir),
    )?;
    let objects: Vec<PathBuf> = sources
        .iter()
        .map(|s| dir.join(s.file_stem().unwrap()).with_extension("o"))
        .collect();
    tools::run(
        Command::new("ar")
            .arg("rcs")
            .arg(dir.join("libhotpatch-fuzz.a"))
            .args(&objects),
    )?;
    tools::run(
        Command::new("clang")
            .args(["-g", "-O0", "-c"])
            .arg(fuzz.join("target.c"))
            .arg("-o")
            .arg(dir.join("fz_target.o")),
    )?;
    let bin = dir.join("fuzz_patch");
    tools::run(
        Command::new("clang")
            .args(common)
            .args(&includes)
            .arg("-fsanitize=fuzzer,address")
            .arg(fuzz.join("fuzz_patch.c"))
            .arg(dir.join("fz_target.o"))
            .arg(dir.join("libhotpatch-fuzz.a"))
            .args(["-ldl", "-lpthread", "-o"])
            .arg(&bin),
    )?;
    eprintln!(
        "fuzz: built {} in {:.0} s",
        bin.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(bin)
}

/// One seed patch: a diff of loader/fuzz/target.c, the compile command's
/// compiler and flags, and hpbuild's extra arguments.
const PATCH_SEEDS: &[(&str, &str, &str, &[&str])] = &[
    ("body", "body.diff", "gcc -O2 -g", &[]),
    (
        "body-call-site",
        "body.diff",
        "gcc -O2 -g",
        &["--redirect", "call-site"],
    ),
    ("string", "string.diff", "gcc -O2 -g", &[]),
    ("string-clang", "string.diff", "clang -O2 -g", &[]),
    ("string-no-pie", "string.diff", "gcc -O2 -g -fno-pie", &[]),
    ("static", "static.diff", "gcc -O2 -g", &[]),
    ("tls", "tls.diff", "gcc -O2 -g", &[]),
    ("newfunc", "newfunc.diff", "gcc -O1 -g", &[]),
];

/// Fixtures whose program (prog.c, before and after its fix.patch) seeds
/// the differ targets.
const OBJECT_SEEDS: &[&str] = &[
    "body-change",
    "static-local",
    "struct-layout",
    "signature-change",
    "switch-table",
    "tls",
];

/// Rewrites the generated seeds: patch files built by hpbuild from
/// loader/fuzz/seeds/*.diff (loader/fuzz/corpus/seeds/, and the same files
/// in fuzz/corpus/read_patch/), and objects compiled from fixtures
/// (fuzz/corpus/differ_object/, differ_pair/). The diff reader's corpus is
/// text kept by hand.
fn seeds() -> Result<(), String> {
    let ws = workspace();
    tools::cargo(&["build", "--quiet", "-p", "builder", "--bin", "hpbuild"])?;
    let hpbuild = ws.join("target/debug/hpbuild");
    let tmp = ws.join("target/fuzz/seeds");
    let _ = std::fs::remove_dir_all(&tmp);
    let io = |e: std::io::Error| e.to_string();
    let loader_seeds = ws.join("loader/fuzz/corpus/seeds");
    let read_patch = ws.join("fuzz/corpus/read_patch");
    for d in [&loader_seeds, &read_patch] {
        std::fs::create_dir_all(d).map_err(io)?;
    }
    for (name, diff, cc, extra) in PATCH_SEEDS {
        let base = tmp.join(name);
        std::fs::create_dir_all(&base).map_err(io)?;
        std::fs::copy(ws.join("loader/fuzz/target.c"), base.join("target.c")).map_err(io)?;
        let mut args: Vec<&str> = cc.split_whitespace().collect();
        args.extend(["-c", "target.c", "-o", "target.o"]);
        let db = serde_json::json!([{
            "directory": base.display().to_string(),
            "file": "target.c",
            "arguments": args,
            "output": "target.o",
        }]);
        std::fs::write(base.join("compile_commands.json"), db.to_string()).map_err(io)?;
        let out = tmp.join(format!("{name}.hpo"));
        tools::run(
            Command::new(&hpbuild)
                .arg("--base")
                .arg(&base)
                .arg("--diff")
                .arg(ws.join("loader/fuzz/seeds").join(diff))
                .arg("-o")
                .arg(&out)
                .args(*extra)
                .stdout(Stdio::null()),
        )?;
        for d in [&loader_seeds, &read_patch] {
            std::fs::copy(&out, d.join(name)).map_err(io)?;
        }
    }

    let object = ws.join("fuzz/corpus/differ_object");
    let pair = ws.join("fuzz/corpus/differ_pair");
    for d in [&object, &pair] {
        std::fs::create_dir_all(d).map_err(io)?;
    }
    for (i, fixture) in OBJECT_SEEDS.iter().enumerate() {
        let src = ws.join("fixtures").join(fixture);
        let work = tmp.join(fixture);
        std::fs::create_dir_all(&work).map_err(io)?;
        std::fs::copy(src.join("prog.c"), work.join("prog.c")).map_err(io)?;
        // Alternate the compilers so both kinds of DWARF are in the corpus.
        let cc = if i % 2 == 0 { "gcc" } else { "clang" };
        let compile = |out: &str| -> Result<Vec<u8>, String> {
            tools::run(
                Command::new(cc)
                    .args(["-O2", "-g", "-ffunction-sections", "-fdata-sections", "-I"])
                    .arg(ws.join("fixtures/common"))
                    .args(["-c", "prog.c", "-o", out])
                    .current_dir(&work),
            )?;
            std::fs::read(work.join(out)).map_err(io)
        };
        let original = compile("original.o")?;
        tools::run(
            Command::new("patch")
                .args(["-s", "-p1", "-i"])
                .arg(src.join("fix.patch"))
                .current_dir(&work),
        )?;
        let patched = compile("patched.o")?;
        let name = format!("{fixture}-{cc}");
        std::fs::write(object.join(&name), &original).map_err(io)?;
        let mut both = (original.len() as u32).to_le_bytes().to_vec();
        both.extend(&original);
        both.extend(&patched);
        std::fs::write(pair.join(&name), both).map_err(io)?;
    }
    println!(
        "seeds written: {}, {}, {}, {}",
        loader_seeds.display(),
        read_patch.display(),
        object.display(),
        pair.display()
    );
    Ok(())
}
