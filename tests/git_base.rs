//! `hpbuild --base <git rev>`: the base is a revision of the git repository
//! in the current directory, not a directory. See tests/README.md.

use std::fs;
use std::path::Path;
use std::process::Command;
use tests::*;

fn git(repo: &Path, args: &[&str]) {
    let out = run_ok(
        Command::new("git")
            .current_dir(repo)
            .args([
                "-c",
                "user.name=hp-e2e",
                "-c",
                "user.email=hp-e2e@localhost",
            ])
            .args(args),
        CC_TIMEOUT,
    );
    if let Err(e) = out {
        panic!("git {args:?} failed\n{e}");
    }
}

/// The body-change fixture committed as v1 (with compile_commands.json whose
/// paths point into the work tree), then more commits so HEAD is not v1 and
/// the work tree differs too. The program built at v1 runs; hpbuild, run in
/// the repository with `--base v1`, must build the fix against v1 (not HEAD
/// or the work tree); the patch applies, behaviour flips, state survives.
#[test]
fn base_is_a_git_revision() {
    let f = Fixture::load("body-change").unwrap_or_else(|e| panic!("{e}"));
    let b = f.build(DEFAULT_CONFIG).unwrap();
    let loader = loader_dir().unwrap_or_else(|e| panic!("{e}"));
    let tmp = tempfile::Builder::new()
        .prefix("hp-e2e-git-")
        .tempdir()
        .unwrap();
    let repo = tmp.path().join("repo");
    copy_fixture(&f, &repo, false).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    // Build v1 in the work tree: writes compile_commands.json (absolute
    // `directory` = the work tree) and the objects; only sources and the
    // compile database are committed.
    let exe = build_tree(&f, &repo, &b, Some(&loader)).unwrap_or_else(|e| panic!("{e}"));
    let running = tmp.path().join("prog-v1");
    fs::copy(&exe, &running).unwrap();
    fs::write(repo.join(".gitignore"), "*.o\nprog\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "v1"]);
    git(&repo, &["tag", "v1"]);
    // Later history: HEAD moves on, and the work tree has uncommitted edits.
    let prog_c = repo.join("prog.c");
    let later = fs::read_to_string(&prog_c)
        .unwrap()
        .replace("return x * 2;", "return x * 4;");
    fs::write(&prog_c, later).unwrap();
    fs::write(repo.join("NOTES"), "work after v1\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "after v1"]);
    fs::write(repo.join("NOTES"), "uncommitted\n").unwrap();

    let mut s = Started {
        prog: Program::start(&running, tmp.path()).unwrap_or_else(|e| panic!("{e}")),
        run_dir: repo.clone(),
        base_dir: repo.clone(),
        tmp,
    };
    let out_dir = s.tmp.path().join("out");
    fs::create_dir_all(&out_dir).unwrap();
    let hpo = out_dir.join("fix.hpo");
    let diff = s.tmp.path().join("fix.patch");
    fs::copy(f.dir.join("fix.patch"), &diff).unwrap();
    let before = snapshot(&repo);
    let build = run_timeout(
        Command::new(hpbuild_bin().unwrap())
            .current_dir(&repo)
            .args(["--base", "v1", "--diff"])
            .arg(&diff)
            .arg("-o")
            .arg(&hpo),
        HPBUILD_TIMEOUT,
    )
    .unwrap();
    assert!(
        build.status.success(),
        "hpbuild --base v1 failed\n{}\n{}",
        build.report(),
        s.prog.report()
    );
    let changed = snapshot_diff(&before, &snapshot(&repo));
    let changed: Vec<&String> = changed.iter().filter(|c| !c.starts_with(".git/")).collect();
    assert!(
        changed.is_empty(),
        "hpbuild changed the work tree: {changed:?}"
    );
    check_hpbuild_result(&f, &s, &hpo, &build).unwrap_or_else(|e| panic!("{e}"));
    play_steps(&f, &mut s, &hpo, &build, "git --base v1").unwrap_or_else(|e| panic!("{e}"));
}
