//! `hpbuild hook install`: a repository with a deployed commit, the hook
//! installed, a fix committed — the patch for that commit must appear in
//! the documented place and be a valid patch with its manifest.

use std::path::Path;
use std::process::Command;

const HPBUILD: &str = env!("CARGO_BIN_EXE_hpbuild");

fn run(dir: &Path, cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

const V1: &str =
    "int price(int size) { return 10 + size; }\nint main(void) { return price(1) == 0; }\n";
const V2: &str =
    "int price(int size) { return 10 + 3 * size; }\nint main(void) { return price(1) == 0; }\n";

#[test]
fn post_commit_hook_builds_a_patch_per_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path();
    run(repo, "git", &["init", "-q"]);
    run(repo, "git", &["config", "user.name", "t"]);
    run(repo, "git", &["config", "user.email", "t@example.invalid"]);
    std::fs::write(repo.join("main.c"), V1).unwrap();
    let db = format!(
        r#"[{{"directory": "{}", "file": "main.c", "arguments": ["cc", "-O2", "-c", "main.c", "-o", "main.o"]}}]"#,
        repo.display()
    );
    std::fs::write(repo.join("compile_commands.json"), db).unwrap();
    run(repo, "git", &["add", "main.c"]);
    run(repo, "git", &["commit", "-qm", "v1 (deployed)"]);
    let deployed = run(repo, "git", &["rev-parse", "HEAD"]);

    run(repo, HPBUILD, &["hook", "install"]);
    assert_eq!(run(repo, "git", &["config", "hpbuild.deployed"]), deployed);

    std::fs::write(repo.join("main.c"), V2).unwrap();
    run(repo, "git", &["commit", "-qam", "fix the price"]);
    let fix = run(repo, "git", &["rev-parse", "HEAD"]);

    let dir = repo.join(".git/hpbuild/patches");
    let error = std::fs::read_to_string(dir.join(format!("{fix}.error"))).unwrap_or_default();
    assert!(error.is_empty(), "the hook reported: {error}");
    let hpo = std::fs::read(dir.join(format!("{fix}.hpo"))).expect("the hook wrote <sha>.hpo");
    assert_eq!(&hpo[..4], b"\x7fELF", "the patch is an ELF object");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{fix}.json"))).unwrap()).unwrap();
    assert!(manifest["base"].as_str().unwrap().contains(&deployed));
    let names: Vec<&str> = manifest["replaced"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(names.contains(&"price"), "replaced: {names:?}");
}

#[test]
fn install_refuses_a_foreign_hook() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path();
    run(repo, "git", &["init", "-q"]);
    run(repo, "git", &["config", "user.name", "t"]);
    run(repo, "git", &["config", "user.email", "t@example.invalid"]);
    std::fs::write(repo.join("a.c"), "int a;\n").unwrap();
    run(repo, "git", &["add", "a.c"]);
    run(repo, "git", &["commit", "-qm", "one"]);
    std::fs::write(
        repo.join(".git/hooks/post-commit"),
        "#!/bin/sh\necho mine\n",
    )
    .unwrap();
    let out = Command::new(HPBUILD)
        .args(["hook", "install"])
        .current_dir(repo)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("was not written by hpbuild"));
}

/// RFC 8410's example Ed25519 private key (section 10.3): a test key.
const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";

/// With `git config hpbuild.signkey`, the hook's patches are signed with
/// that key (the manifest says which); a key that cannot sign is reported
/// naming the file and the config key, and no patch is written.
#[test]
fn hook_signs_with_git_config_hpbuild_signkey() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    repo_with_hook(&repo, Path::new(HPBUILD), true);
    let key = tmp.path().join("key.pem");
    std::fs::write(&key, TEST_KEY).unwrap();
    run(
        &repo,
        "git",
        &["config", "hpbuild.signkey", key.to_str().unwrap()],
    );
    let path = std::env::var("PATH").unwrap_or_default();
    let (stderr, error, wrote) = commit_fix(&repo, &path);
    assert!(error.is_empty() && wrote, "{stderr}{error}");
    let sha = run(&repo, "git", &["rev-parse", "HEAD"]);
    let dir = repo.join(".git/hpbuild/patches");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{sha}.json"))).unwrap()).unwrap();
    assert_eq!(manifest["signed"]["algorithm"], "ed25519", "{manifest:#}");

    std::fs::write(&key, "not a key").unwrap();
    std::fs::write(repo.join("main.c"), V1.replace("10 +", "11 +")).unwrap();
    let out = Command::new("git")
        .args(["commit", "-qam", "another fix"])
        .current_dir(&repo)
        .output()
        .unwrap();
    assert!(out.status.success(), "the hook must never block a commit");
    let sha = run(&repo, "git", &["rev-parse", "HEAD"]);
    let error = std::fs::read_to_string(dir.join(format!("{sha}.error"))).unwrap_or_default();
    assert!(
        error.contains(key.to_str().unwrap()) && error.contains("git config hpbuild.signkey"),
        "{error}"
    );
    assert!(!dir.join(format!("{sha}.hpo")).exists());
}

/// A repository with main.c at v1 committed as the deployed base and the
/// hook installed by the hpbuild at `hpbuild` (its compile database written
/// only when `with_db`).
fn repo_with_hook(repo: &Path, hpbuild: &Path, with_db: bool) {
    run(repo, "git", &["init", "-q"]);
    run(repo, "git", &["config", "user.name", "t"]);
    run(repo, "git", &["config", "user.email", "t@example.invalid"]);
    std::fs::write(repo.join("main.c"), V1).unwrap();
    if with_db {
        let db = format!(
            r#"[{{"directory": "{}", "file": "main.c", "arguments": ["cc", "-O2", "-c", "main.c", "-o", "main.o"]}}]"#,
            repo.display()
        );
        std::fs::write(repo.join("compile_commands.json"), db).unwrap();
    }
    run(repo, "git", &["add", "main.c"]);
    run(repo, "git", &["commit", "-qm", "v1 (deployed)"]);
    run(repo, hpbuild.to_str().unwrap(), &["hook", "install"]);
}

/// `git commit` of the fix with PATH set to `path`: (its stderr, the
/// commit's <sha>.error, whether <sha>.hpo exists).
fn commit_fix(repo: &Path, path: &str) -> (String, String, bool) {
    std::fs::write(repo.join("main.c"), V2).unwrap();
    let out = Command::new("git")
        .args(["commit", "-qam", "fix the price"])
        .current_dir(repo)
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(out.status.success(), "the hook must never block a commit");
    let sha = run(repo, "git", &["rev-parse", "HEAD"]);
    let dir = repo.join(".git/hpbuild/patches");
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        std::fs::read_to_string(dir.join(format!("{sha}.error"))).unwrap_or_default(),
        dir.join(format!("{sha}.hpo")).is_file(),
    )
}

/// The hpbuild that installed the hook is gone: the hook takes the one in
/// PATH, and with none there it says so on stderr and in <sha>.error.
#[test]
fn hook_finds_hpbuild_in_path_or_says_it_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let moved = tmp.path().join("gone/hpbuild");
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::copy(HPBUILD, &moved).unwrap();
    let system = "/usr/local/bin:/usr/bin:/bin";
    let in_path = format!(
        "{}:{system}",
        Path::new(HPBUILD).parent().unwrap().display()
    );

    for (name, path, built) in [("a", in_path.as_str(), true), ("b", system, false)] {
        let repo = tmp.path().join(name);
        std::fs::create_dir(&repo).unwrap();
        repo_with_hook(&repo, &moved, true);
        std::fs::remove_file(&moved).ok();
        let (stderr, error, hpo) = commit_fix(&repo, path);
        assert_eq!(hpo, built, "PATH={path}: stderr {stderr} error {error}");
        if !built {
            let want = format!("hpbuild is neither {} ", moved.display());
            assert!(stderr.contains(&want), "{stderr}");
            assert!(error.contains(&want), "{error}");
        }
        std::fs::copy(HPBUILD, &moved).unwrap();
    }
}

/// Without a compile database the hook's reason names the git config key
/// that chooses one (not the command-line option).
#[test]
fn hook_error_names_git_config_hpbuild_compiledb() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path();
    repo_with_hook(repo, Path::new(HPBUILD), false);
    let path = std::env::var("PATH").unwrap_or_default();
    let (stderr, error, hpo) = commit_fix(repo, &path);
    assert!(!hpo);
    assert!(
        error.contains("`hpbuild capture -- make`")
            && error
                .trim_end()
                .ends_with("pass git config hpbuild.compiledb FILE"),
        "{error}"
    );
    assert!(stderr.contains("git config hpbuild.compiledb"), "{stderr}");
}
