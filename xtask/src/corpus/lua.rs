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

/// `<exe> fixtures/corpus/lua5.4/driver.lua`, reading chunks from a pipe:
/// one of the interpreters the builds make.
pub struct LuaDriver {
    name: &'static str,
    /// The interpreter, in the built tree.
    exe: &'static str,
    /// Its loader log, in the corpus work directory.
    log: &'static str,
}

/// `src/lua` of the executable build.
const LUA: LuaDriver = LuaDriver {
    name: "lua driver",
    exe: "src/lua",
    log: "lua5.4/loader.log",
};

/// `src/lua-shared`: the interpreter whose Lua core runs in liblua5.4.so.0.
const LUA_SHARED: LuaDriver = LuaDriver {
    name: "lua driver (liblua5.4.so.0)",
    exe: "src/lua-shared",
    log: "lua5.4-shared/loader.log",
};

/// `src/lua` of the shared build: the same objects linked in statically,
/// so the patch for the library is also for this executable.
const LUA_STATIC: LuaDriver = LuaDriver {
    name: "lua driver (static, same objects)",
    exe: "src/lua",
    log: "lua5.4-shared/loader-static.log",
};

/// The same source built as liblua5.4.so.0 and `src/lua-shared` linked to
/// it, and as upstream's static `src/lua` from the same objects.
pub struct LuaShared;

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
        cases(&[&LUA])
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
        self.name
    }

    fn start(&self, tree: &Path, env: &Env) -> Result<Session, String> {
        let mut cmd = Command::new(tree.join(self.exe));
        cmd.arg(env.fixtures.join("lua5.4/driver.lua"))
            .env("HOTPATCH_LOG", env.work.join(self.log));
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
        cases(&[&LUA_SHARED, &LUA_STATIC])
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
