//! SQLite 3.40.1 (Debian sqlite3): placeholder until the main.mk build lands.

use super::{Case, Env, Project};
use crate::corpus::session::Session;
use std::path::{Path, PathBuf};

pub struct Sqlite;

impl Project for Sqlite {
    fn package(&self) -> &'static str {
        "sqlite3"
    }
    fn cases(&self) -> Vec<Case> {
        Vec::new()
    }
    fn build(&self, _tree: &Path, _env: &Env) -> Result<PathBuf, String> {
        Err("not yet".into())
    }
    fn start(&self, _exe: &Path, _env: &Env) -> Result<Session, String> {
        Err("not yet".into())
    }
    fn request(&self, script: &str) -> String {
        format!("{script}\n.print ==done==\n")
    }
    fn set_state(&self, token: &str) -> String {
        self.request(&format!("CREATE TABLE IF NOT EXISTS kept(v); INSERT INTO kept VALUES('{token}'); SELECT 'state: ' || v FROM kept;"))
    }
    fn get_state(&self) -> String {
        self.request("SELECT 'state: ' || group_concat(v) FROM kept;")
    }
}
