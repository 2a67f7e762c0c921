//! Lua 5.4 (Debian lua5.4 5.4.4): built with its own Makefile (`make linux`,
//! plus -g and the loader in MYLIBS), driven by fixtures/corpus/lua/driver.lua
//! reading chunks from a pipe.

use super::{Case, Check, Driver, Env, Project};
use crate::corpus::session::Session;
use crate::tools;
use std::path::Path;
use std::process::Command;

pub struct Lua;

/// `src/lua fixtures/corpus/lua5.4/driver.lua`, reading chunks from a pipe.
pub struct LuaDriver;

impl Project for Lua {
    fn package(&self) -> &'static str {
        "lua5.4"
    }

    fn cases(&self) -> Vec<Case> {
        vec![
            Case {
                patch: "0004-cve-2022-28805.patch",
                check: Check::Verdict("0004-cve-2022-28805.lua"),
                drivers: &[&LuaDriver],
            },
            Case {
                patch: "0005-cve-2022-33099.patch",
                check: Check::Verdict("0005-cve-2022-33099.lua"),
                drivers: &[&LuaDriver],
            },
        ]
    }

    /// Debian's 0002 makes luaconf.h include a header its debian/rules
    /// generates; generate it the same way.
    fn prepare(&self, tree: &Path) -> Result<(), String> {
        let h = tree.join("src/lua5.4-deb-multiarch.h");
        std::fs::write(
            &h,
            "#ifndef _LUA_DEB_MULTIARCH_\n#define _LUA_DEB_MULTIARCH_\n#define DEB_HOST_MULTIARCH \"x86_64-linux-gnu\"\n#endif\n",
        )
        .map_err(|e| format!("cannot write {}: {e}", h.display()))
    }

    fn build(&self, tree: &Path, env: &Env) -> Result<(), String> {
        let libs = format!("MYLIBS={}", loader::link_flags(&env.loader));
        tools::run(
            Command::new(&env.hpbuild)
                .args(["capture", "--dir"])
                .arg(tree)
                .args(["--", "make", "-s", "-C"])
                .arg(tree)
                .arg(format!("-j{}", env.jobs))
                .args(["linux", "MYCFLAGS=-g", &libs]),
        )
    }
}

impl Driver for LuaDriver {
    fn name(&self) -> &'static str {
        "lua driver"
    }

    fn start(&self, tree: &Path, env: &Env) -> Result<Session, String> {
        let mut cmd = Command::new(tree.join("src/lua"));
        cmd.arg(env.fixtures.join("lua5.4/driver.lua"))
            .env("HOTPATCH_LOG", env.work.join("lua5.4/loader.log"));
        Session::start(cmd, "==done==")
    }

    fn request(&self, script: &str) -> String {
        format!("{script}\n==run==\n")
    }

    fn set_state(&self, token: &str) -> String {
        self.request(&format!("KEPT = \"{token}\"\nprint(\"state: \" .. KEPT)"))
    }

    fn get_state(&self) -> String {
        self.request("print(\"state: \" .. tostring(KEPT))")
    }
}
