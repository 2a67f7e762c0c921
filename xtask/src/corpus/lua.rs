//! Lua 5.4 (Debian lua5.4 5.4.4): built with its own Makefile (`make linux`,
//! plus -g and the loader in MYLIBS), driven by fixtures/corpus/lua/driver.lua
//! reading chunks from a pipe.
//!
//! Built a second time as a shared library (`LuaShared`): liblua5.4.so.0,
//! as Debian's liblua5.4-0 ships it, and the interpreter linked to it
//! (fixtures/corpus/lua5.4/shared.mk, read by make after upstream's
//! src/Makefile). The same fixes are then patches for the library's code in
//! the running interpreter. The same build links the same objects into
//! upstream's static `src/lua` too: hpbuild finds from the link steps
//! `hpbuild capture` recorded that the changed units are linked into both,
//! without `--target`, and each fix is one patch applied to both running
//! interpreters (the library's code in one, the executable's in the other).

use super::{Case, Check, Driver, Env, Project};
use crate::corpus::session::Session;
use crate::tools;
use std::path::Path;
use std::process::Command;

pub struct Lua;

/// `src/lua fixtures/corpus/lua5.4/driver.lua`, reading chunks from a pipe.
pub struct LuaDriver;

/// The same source built as liblua5.4.so.0 and `src/lua-shared` linked to
/// it, and as upstream's static `src/lua` from the same objects.
pub struct LuaShared;

/// `src/lua-shared fixtures/corpus/lua5.4/driver.lua`: the interpreter whose
/// Lua core runs in liblua5.4.so.0.
pub struct LuaSharedDriver;

/// The soname the shared build gives the library (Debian's).
const SONAME: &str = "liblua5.4.so.0";

/// Debian's two C security fixes, each reproduced in the first of `drivers`.
fn cases(drivers: &'static [&'static dyn Driver]) -> Vec<Case> {
    vec![
        Case {
            patch: "0004-cve-2022-28805.patch",
            check: Check::Verdict("0004-cve-2022-28805.lua"),
            drivers,
        },
        Case {
            patch: "0005-cve-2022-33099.patch",
            check: Check::Verdict("0005-cve-2022-33099.lua"),
            drivers,
        },
    ]
}

/// Debian's 0002 makes luaconf.h include a header its debian/rules
/// generates; generate it the same way.
fn prepare(tree: &Path) -> Result<(), String> {
    let h = tree.join("src/lua5.4-deb-multiarch.h");
    std::fs::write(
        &h,
        "#ifndef _LUA_DEB_MULTIARCH_\n#define _LUA_DEB_MULTIARCH_\n#define DEB_HOST_MULTIARCH \"x86_64-linux-gnu\"\n#endif\n",
    )
    .map_err(|e| format!("cannot write {}: {e}", h.display()))
}

impl Project for Lua {
    fn package(&self) -> &'static str {
        "lua5.4"
    }

    fn cases(&self) -> Vec<Case> {
        cases(&[&LuaDriver])
    }

    fn prepare(&self, tree: &Path) -> Result<(), String> {
        prepare(tree)
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

impl Project for LuaShared {
    fn package(&self) -> &'static str {
        "lua5.4"
    }

    fn name(&self) -> &'static str {
        "lua5.4-shared"
    }

    fn targets(&self) -> &'static [&'static str] {
        &[SONAME, ""]
    }

    fn cases(&self) -> Vec<Case> {
        cases(&[&LuaSharedDriver, &LuaStaticDriver])
    }

    fn prepare(&self, tree: &Path) -> Result<(), String> {
        prepare(tree)
    }

    /// upstream's src/Makefile with shared.mk: the variables its `linux`
    /// target sets, every unit position-independent.
    fn build(&self, tree: &Path, env: &Env) -> Result<(), String> {
        let libs = format!("MYLIBS={}", loader::link_flags(&env.loader));
        tools::run(
            Command::new(&env.hpbuild)
                .args(["capture", "--dir"])
                .arg(tree)
                .args(["--", "make", "-s", "-C"])
                .arg(tree.join("src"))
                .args(["-f", "Makefile", "-f"])
                .arg(env.fixtures.join("lua5.4/shared.mk"))
                .arg(format!("-j{}", env.jobs))
                .args([
                    "shared",
                    "SYSCFLAGS=-DLUA_USE_LINUX",
                    "SYSLIBS=-Wl,-E -ldl",
                    "MYCFLAGS=-g -fPIC",
                    &libs,
                ]),
        )
    }
}

/// `src/lua` of the shared build: the same objects linked in statically,
/// so the patch for the library is also for this executable.
pub struct LuaStaticDriver;

impl Driver for LuaStaticDriver {
    fn name(&self) -> &'static str {
        "lua driver (static, same objects)"
    }

    fn start(&self, tree: &Path, env: &Env) -> Result<Session, String> {
        let mut cmd = Command::new(tree.join("src/lua"));
        cmd.arg(env.fixtures.join("lua5.4/driver.lua")).env(
            "HOTPATCH_LOG",
            env.work.join("lua5.4-shared/loader-static.log"),
        );
        Session::start(cmd, "==done==")
    }

    fn request(&self, script: &str) -> String {
        LuaDriver.request(script)
    }

    fn set_state(&self, token: &str) -> String {
        LuaDriver.set_state(token)
    }

    fn get_state(&self) -> String {
        LuaDriver.get_state()
    }
}

impl Driver for LuaSharedDriver {
    fn name(&self) -> &'static str {
        "lua driver (liblua5.4.so.0)"
    }

    fn start(&self, tree: &Path, env: &Env) -> Result<Session, String> {
        let mut cmd = Command::new(tree.join("src/lua-shared"));
        cmd.arg(env.fixtures.join("lua5.4/driver.lua"))
            .env("HOTPATCH_LOG", env.work.join("lua5.4-shared/loader.log"));
        Session::start(cmd, "==done==")
    }

    fn request(&self, script: &str) -> String {
        LuaDriver.request(script)
    }

    fn set_state(&self, token: &str) -> String {
        LuaDriver.set_state(token)
    }

    fn get_state(&self) -> String {
        LuaDriver.get_state()
    }
}
