//! Each C file is read and parsed with tree-sitter once per build: the
//! layout check before compiling and the edited-function search after it
//! ask for the same two sides of each changed file, and a 240k-line
//! amalgamation takes more than a second a side.

use extern_gen::CFile;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// A file's text and its parse (`None` where tree-sitter gave up).
pub struct Source {
    pub text: String,
    pub file: Option<CFile>,
}

type Memo = Mutex<HashMap<PathBuf, Arc<Source>>>;

fn memo() -> &'static Memo {
    static MEMO: OnceLock<Memo> = OnceLock::new();
    MEMO.get_or_init(Default::default)
}

/// `path` read and parsed, or `None` when it cannot be read.
pub fn load(path: &Path) -> Option<Arc<Source>> {
    if let Some(s) = memo().lock().ok()?.get(path) {
        return Some(s.clone());
    }
    // Parsed outside the lock: two threads may parse one file twice, which
    // costs time, never correctness.
    let text = std::fs::read_to_string(path).ok()?;
    let file = extern_gen::parse(&text).ok();
    let source = Arc::new(Source { text, file });
    memo()
        .lock()
        .ok()?
        .insert(path.to_path_buf(), source.clone());
    Some(source)
}

/// Both files, parsed side by side.
pub fn load_pair(a: &Path, b: &Path) -> (Option<Arc<Source>>, Option<Arc<Source>>) {
    std::thread::scope(|s| {
        let first = s.spawn(|| load(a));
        let second = load(b);
        (first.join().ok().flatten(), second)
    })
}
