//! Apply cost against patch size: `hpctl apply` wall time and the loader's
//! own preparation time per function, for patches of 1, 10, 100 and 1000
//! functions of one program (issue 7: ≤ 1 µs per function in the loader).
//!
//! The program has [`FUNCS`] noinline functions in two files, alternating
//! global and static; the statics have the same names in both files, so they
//! are found by (file, name). Each reads its own volatile variable (static
//! for a static function), so no call is hoisted out of the program's loop
//! and every patched function needs one symbol resolved when it is linked.
//! The patch for N edits the first N functions (+1 on each result): the
//! program's answer grows by exactly N once the patch is live. One more
//! case stacks patches: a second patch of all [`FUNCS`] functions (+2 on
//! each) applied on top of the first, where the loader looks through the
//! first patch's jumps to fingerprint the original code.
//!
//! Each apply goes to a fresh process (the first apply of a process also
//! loads the executable's symbols; the loader reports that part apart, and
//! it is left out of the per-function time). The loader's time is read from
//! its log: from the APPLY request line to the last line of the apply (log
//! timestamps are in µs), and the `prepare: N functions in T us ...` line
//! (`loader/csrc/link.c`) for finding, fingerprinting and linking alone.

use super::{bin, median, timed, Program, Row};
use crate::tools;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Patch sizes measured.
const SIZES: [usize; 4] = [1, 10, 100, 1000];
/// Functions in the program (the largest patch changes all of them).
const FUNCS: usize = 1000;
/// Fresh processes per size; the median counts.
const RUNS: usize = 5;
const FILES: [&str; 2] = ["one", "two"];
/// The loader's preparation target per function (issue 7).
const TARGET_US: f64 = 1.0;

/// Function `j` of `file`: odd ones static (same name in both files);
/// `plus` is added to its result when it is edited (0: not edited).
fn function(file: &str, j: usize, plus: usize) -> String {
    let k = j + 2;
    let plus = if plus > 0 {
        format!(" + {plus}")
    } else {
        String::new()
    };
    let (storage, name, var) = if j % 2 == 1 {
        ("static ", format!("local_{j}"), format!("local_v{j}"))
    } else {
        ("", format!("{file}_{j}"), format!("{file}_v{j}"))
    };
    format!(
        "{storage}volatile long {var};\n__attribute__((noinline)) {storage}long {name}(long x)\n{{\n    return x * {k} + {var}{plus};\n}}\n"
    )
}

/// One of the two files; function `j` of file `f` is number `2j + f` of the
/// program, edited (+`plus`) when that number is below `edited`.
fn unit(f: usize, edited: usize, plus: usize) -> String {
    let file = FILES[f];
    let per_file = FUNCS / FILES.len();
    let mut s = String::new();
    for j in 0..per_file {
        s += &function(file, j, if 2 * j + f < edited { plus } else { 0 });
    }
    // Called through a table, so no caller's code depends on the callees'
    // (a direct caller would ship too: -fipa-ra lets it rely on which
    // registers each callee clobbers).
    s += &format!("long (*{file}_table[{per_file}])(long) = {{\n");
    for j in 0..per_file {
        let name = if j % 2 == 1 {
            format!("local_{j}")
        } else {
            format!("{file}_{j}")
        };
        s += &format!("    {name},\n");
    }
    s + "};\n"
}

fn main_c() -> String {
    let per_file = FUNCS / FILES.len();
    format!(
        r#"#include <stdio.h>
extern long (*one_table[{per_file}])(long);
extern long (*two_table[{per_file}])(long);
/* Each line on stdin: print the sum of every function's result. */
int main(void)
{{
    char line[64];
    while (fgets(line, sizeof line, stdin)) {{
        long sum = 0;
        for (int i = 0; i < {per_file}; i++)
            sum += one_table[i](1) + two_table[i](1);
        printf("%ld\n", sum);
        fflush(stdout);
    }}
    return 0;
}}
"#
    )
}

const CFLAGS: [&str; 3] = ["-O2", "-g", "-c"];

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The source tree with the first `edited` functions changed (+`plus`).
fn write_tree(dir: &Path, edited: usize, plus: usize) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    for (f, file) in FILES.iter().enumerate() {
        write(&dir.join(format!("{file}.c")), &unit(f, edited, plus))?;
    }
    write(&dir.join("main.c"), &main_c())
}

fn compile_db(dir: &Path) -> String {
    let entries: Vec<String> = FILES
        .iter()
        .copied()
        .chain(["main"])
        .map(|f| {
            format!(
                r#"{{"directory": "{}", "file": "{f}.c", "arguments": ["cc", "{}", "{}", "{}", "{f}.c", "-o", "{f}.o"]}}"#,
                dir.display(),
                CFLAGS[0],
                CFLAGS[1],
                CFLAGS[2]
            )
        })
        .collect();
    format!("[{}]\n", entries.join(",\n "))
}

/// The base program, linked with the loader in `loader`.
fn build_base(dir: &Path, loader: &Path) -> Result<PathBuf, String> {
    let base = dir.join("prog");
    write_tree(&base, 0, 0)?;
    write(&base.join("compile_commands.json"), &compile_db(&base))?;
    let mut objects = Vec::new();
    for f in FILES.iter().copied().chain(["main"]) {
        tools::run(
            Command::new("cc")
                .current_dir(&base)
                .args(CFLAGS)
                .arg(format!("{f}.c"))
                .arg("-o")
                .arg(format!("{f}.o")),
        )?;
        objects.push(format!("{f}.o"));
    }
    let exe = base.join("many");
    tools::run(
        Command::new("cc")
            .current_dir(&base)
            .args(&objects)
            .arg("-o")
            .arg(&exe)
            .args(loader::link_args(loader)),
    )?;
    Ok(exe)
}

/// The patch editing the first `n` functions (+`plus` each), built against
/// the tree `base` ("prog", or an earlier patch's tree for a patch on top
/// of it); checks that it ships n.
fn build_patch(dir: &Path, base: &str, n: usize, plus: usize) -> Result<PathBuf, String> {
    let fixed = format!("fix{n}plus{plus}");
    write_tree(&dir.join(&fixed), n, plus)?;
    let base_dir = dir.join(base);
    write(
        &base_dir.join("compile_commands.json"),
        &compile_db(&base_dir),
    )?;
    let mut diff = Vec::new();
    for file in FILES {
        let out = Command::new("diff")
            .arg("-u")
            .arg(format!("{base}/{file}.c"))
            .arg(format!("{fixed}/{file}.c"))
            .current_dir(dir)
            .output()
            .map_err(|e| format!("diff: {e}"))?;
        diff.extend(out.stdout);
    }
    let diff_path = dir.join(format!("{fixed}.patch"));
    std::fs::write(&diff_path, diff).map_err(|e| e.to_string())?;
    let hpo = dir.join(format!("{fixed}.hpo"));
    tools::run(
        Command::new(bin("hpbuild"))
            .arg("--base")
            .arg(&base_dir)
            .arg("--diff")
            .arg(&diff_path)
            .arg("-o")
            .arg(&hpo),
    )?;
    let manifest =
        std::fs::read_to_string(hpo.with_extension("json")).map_err(|e| e.to_string())?;
    let json: serde_json::Value = serde_json::from_str(&manifest).map_err(|e| e.to_string())?;
    let shipped = json["replaced"].as_array().map_or(0, Vec::len);
    if shipped != n {
        return Err(format!(
            "the {n}-function patch ships {shipped} functions ({})",
            hpo.display()
        ));
    }
    Ok(hpo)
}

/// `--lazy` if this hpctl has it (a consistent apply would measure a wait).
pub fn lazy_flag() -> Option<&'static str> {
    let help = Command::new(bin("hpctl"))
        .args(["apply", "--help"])
        .output();
    let has = help.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--lazy"));
    has.then_some("--lazy")
}

/// What the loader's log says about one apply, in µs.
struct LoaderTimes {
    /// From the APPLY request line to the last line (the patch is applied):
    /// reading and parsing the patch, finding, fingerprinting, linking, the
    /// switch, the bookkeeping.
    total: f64,
    /// Finding, fingerprinting and linking (the `prepare:` line of link.c),
    /// without `load`.
    prepare: f64,
    /// Loading and indexing the executable's symbols (the first apply of a
    /// process does it).
    load: f64,
}

/// Microseconds since the epoch of a log line's
/// "[hotpatch PID 2025-06-01T12:34:56.123456Z]" (UTC).
fn stamp_us(line: &str) -> Option<i64> {
    let stamp = line.split_whitespace().nth(2)?.strip_suffix("Z]")?;
    let (date, time) = stamp.split_once('T')?;
    let num = |s: &str| s.parse::<i64>().ok();
    let d: Vec<i64> = date.split('-').map(num).collect::<Option<_>>()?;
    let (hms, us) = time.split_once('.')?;
    let t: Vec<i64> = hms.split(':').map(num).collect::<Option<_>>()?;
    let (&[y, m, day], &[h, min, s]) = (d.as_slice(), t.as_slice()) else {
        return None;
    };
    let secs = days_from_civil(y, m, day) * 86_400 + h * 3600 + min * 60 + s;
    Some(secs * 1_000_000 + num(us)?)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm): the stamps of one run may straddle midnight.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn loader_times(log: &Path) -> Result<LoaderTimes, String> {
    let text = std::fs::read_to_string(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let bad = |what: &str| format!("{}: {what}", log.display());
    let start = text
        .lines()
        .rev()
        .find(|l| l.contains("request from pid") && l.contains(": APPLY "))
        .and_then(stamp_us)
        .ok_or_else(|| bad("no APPLY request line"))?;
    let end = text
        .lines()
        .last()
        .and_then(stamp_us)
        .ok_or_else(|| bad("no timestamp"))?;
    // "prepare: N functions in T us (find and fingerprint F us, of which
    // loading the executable's symbols L us; link K us; ...)"
    let prepare = text
        .lines()
        .rev()
        .find_map(|l| l.split_once("] prepare: ").map(|(_, rest)| rest))
        .ok_or_else(|| bad("no 'prepare:' line"))?;
    let nums: Vec<f64> = prepare
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let [_, total, _, load, ..] = nums[..] else {
        return Err(bad(&format!("unexpected prepare line: {prepare}")));
    };
    Ok(LoaderTimes {
        total: (end - start) as f64,
        prepare: total - load,
        load,
    })
}

struct Sample {
    list_s: f64,
    apply_s: f64,
    loader: LoaderTimes,
}

/// One fresh process: the patches `under` applied first (not measured),
/// then `hpctl list`, `hpctl apply`, and the proof that the patch is live
/// (the answer grew by `grows` in all).
fn sample(
    exe: &Path,
    under: &[&Path],
    hpo: &Path,
    grows: usize,
    log: &Path,
    lazy: Option<&str>,
) -> Result<Sample, String> {
    let _ = std::fs::remove_file(log);
    let mut prog = Program::start_logged(exe, log)?;
    let before = prog.number("sum")?;
    let pid = prog.child.id().to_string();
    for first in under {
        timed(
            Command::new(bin("hpctl"))
                .arg("apply")
                .args(lazy)
                .arg(&pid)
                .arg(first),
        )?;
    }
    let list_s = timed(Command::new(bin("hpctl")).args(["list", &pid]))?;
    let mut apply = Command::new(bin("hpctl"));
    apply.arg("apply").args(lazy).arg(&pid).arg(hpo);
    let apply_s = timed(&mut apply)?;
    let after = prog.number("sum")?;
    if after - before != grows as f64 {
        return Err(format!(
            "after applying {} the program answers {after} (was {before}, expected +{grows})",
            hpo.display()
        ));
    }
    Ok(Sample {
        list_s,
        apply_s,
        loader: loader_times(log)?,
    })
}

/// Two rows per patch size: hpctl wall time (vs. `hpctl list` on the same
/// process) and the loader's time per function (vs. the target).
pub fn rows(dir: &Path, loader: &Path) -> Result<Vec<Row>, String> {
    let dir = dir.join("apply");
    let exe = build_base(&dir, loader)?;
    let lazy = lazy_flag();
    let apply_name = format!(
        "hpctl apply{}",
        lazy.map_or(String::new(), |f| format!(" {f}"))
    );
    let mut rows = Vec::new();
    let mut measure = |what: &str, n: usize, under: &[&Path], hpo: &Path, grows: usize| {
        let samples: Vec<Sample> = (0..RUNS)
            .map(|r| {
                let stacked = if under.is_empty() { "" } else { "-stacked" };
                let log = dir.join(format!("run{n}{stacked}.{r}.log"));
                sample(&exe, under, hpo, grows, &log, lazy)
            })
            .collect::<Result<_, _>>()?;
        let med = |f: &dyn Fn(&Sample) -> f64| median(samples.iter().map(f).collect());
        let list_ms = 1e3 * med(&|s| s.list_s);
        let apply_ms = 1e3 * med(&|s| s.apply_s);
        let load = med(&|s| s.loader.load);
        let total = med(&|s| s.loader.total - s.loader.load);
        let prepare = med(&|s| s.loader.prepare);
        let per_fn = total / n as f64;
        rows.push(Row {
            metric: format!("apply {n} functions{what}: hpctl wall time (ms)"),
            baseline: format!("{list_ms:.2} (hpctl list)"),
            measured: format!("{apply_ms:.2} ({apply_name})"),
            ratio: apply_ms / list_ms,
        });
        let load = if under.is_empty() {
            format!("; + {load:.0} µs loading the symbols once")
        } else {
            String::new()
        };
        rows.push(Row {
            metric: format!("apply {n} functions{what}: loader µs per function"),
            baseline: format!("{TARGET_US:.2} (target)"),
            measured: format!(
                "{per_fn:.2} ({total:.0} µs request to applied, {:.2}/function finding, fingerprinting, linking{load})",
                prepare / n as f64
            ),
            ratio: per_fn / TARGET_US,
        });
        Ok::<(), String>(())
    };
    let mut first_all = None;
    for n in SIZES {
        let hpo = build_patch(&dir, "prog", n, 1)?;
        measure("", n, &[], &hpo, n)?;
        if n == FUNCS {
            first_all = Some(hpo);
        }
    }
    // A second patch of every function, built on top of the first (the
    // loader refuses one built against the code under an applied patch).
    let first = first_all.ok_or("no patch of every function")?;
    let second = build_patch(&dir, &format!("fix{FUNCS}plus1"), FUNCS, 2)?;
    measure(
        &format!(" on top of {FUNCS}"),
        FUNCS,
        &[&first],
        &second,
        2 * FUNCS,
    )?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_stamps_read_as_microseconds_since_the_epoch() {
        let line = "[hotpatch 42 2024-03-01T00:00:01.000250Z] request from pid 7";
        assert_eq!(
            super::stamp_us(line),
            Some((1_709_251_201) * 1_000_000 + 250)
        );
        assert_eq!(super::days_from_civil(1970, 1, 1), 0);
    }
}
