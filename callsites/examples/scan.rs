//! `cargo run --release -p callsites --example scan -- [--list] ELF [SYMBOL...]`
//!
//! Prints the call sites of the named functions (every function when none is named)
//! and how long the search took.

use object::{Object, ObjectSymbol, SymbolKind};
use std::time::Instant;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let list = args.first().is_some_and(|a| a == "--list");
    if list {
        args.remove(0);
    }
    let Some(path) = args.first() else {
        eprintln!("usage: scan [--list] ELF [SYMBOL...]");
        std::process::exit(2);
    };
    let data = std::fs::read(path).expect("read ELF");
    let file = object::File::parse(&*data).expect("parse ELF");
    let funcs: Vec<(String, u64)> = file
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.is_definition())
        .map(|s| (s.name().unwrap_or("?").to_string(), s.address()))
        .collect();
    let names = &args[1..];
    let mut targets: Vec<u64> = if names.is_empty() {
        funcs.iter().map(|f| f.1).collect()
    } else {
        names
            .iter()
            .map(|n| {
                funcs
                    .iter()
                    .find(|f| &f.0 == n)
                    .unwrap_or_else(|| panic!("no function {n}"))
                    .1
            })
            .collect()
    };
    if names.is_empty() {
        targets.sort_unstable();
        targets.dedup();
    }
    let mut best = f64::MAX;
    let mut found = None;
    for _ in 0..5 {
        let t = Instant::now();
        let f = callsites::in_elf(&data, &targets).expect("search");
        best = best.min(t.elapsed().as_secs_f64());
        found = Some(f);
    }
    let found = found.unwrap();
    if list || !names.is_empty() {
        for s in &found.sites {
            println!(
                "site {:#x} {:?} {:02x?} -> {:#x}",
                s.addr, s.kind, s.bytes, targets[s.target]
            );
        }
    }
    for w in found.warnings.iter().take(20) {
        println!("warning: {w}");
    }
    println!(
        "{} targets, {} sites, {} warnings, {} functions, {:.2} MB decoded, best of 5: {:.1} ms ({:.0} MB/s)",
        targets.len(),
        found.sites.len(),
        found.warnings.len(),
        found.functions,
        found.bytes_decoded as f64 / 1e6,
        best * 1e3,
        found.bytes_decoded as f64 / 1e6 / best
    );
}
