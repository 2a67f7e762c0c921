//! Prints the differ's verdict on two object files:
//! `cargo run -p differ --example objdiff -- original.o patched.o`
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [a, b] = args.as_slice() else {
        eprintln!("usage: objdiff ORIGINAL.o PATCHED.o");
        std::process::exit(2);
    };
    let read = |p: &str| std::fs::read(p).unwrap_or_else(|e| panic!("{p}: {e}"));
    match differ::compare(&read(a), &read(b)) {
        Ok(d) => println!("{d:#?}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
