//! Progress lines for long builds: on stderr, only when someone watches
//! (a terminal) or asked for them (`--verbose`). Quiet otherwise.

use std::io::IsTerminal;

pub struct Progress {
    on: bool,
}

impl Progress {
    pub fn new(verbose: bool) -> Self {
        Progress {
            on: verbose || std::io::stderr().is_terminal(),
        }
    }

    pub fn step(&self, msg: impl AsRef<str>) {
        if self.on {
            eprintln!("hpbuild: {}", msg.as_ref());
        }
    }
}
