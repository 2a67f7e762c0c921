//! Runs the stages in order: diff → trees → compile database → compile both
//! sides of each affected unit → compare → refuse or emit.

use crate::compdb::{self, Entry};
use crate::compile::{self, DeployedShape, Side};
use crate::error::{Error, Result};
use crate::links::Links;
use crate::manifest::{self, DiffInfo, Manifest, Replaced, UnitInfo};
use crate::progress::Progress;
use crate::{bail, deps, diff, edits, entries, layout, report, review, target, tree, BuildArgs};
use differ::UnitDiff;
use std::path::Path;

/// One compiled and compared translation unit.
struct Unit {
    rel: String,
    patched_obj: Vec<u8>,
    orig_cmd: Vec<String>,
    patched_cmd: Vec<String>,
    diff: UnitDiff,
    edited: edits::Edited,
    /// Variables the patch defines (the loader allocates them).
    new_data: Vec<String>,
}

pub fn run(args: &BuildArgs) -> Result<()> {
    let (base, diff_path, output) = required(args)?;
    // The manifest names the files it describes wherever it is read from.
    let diff_path = &absolute(diff_path)?;
    let output = &absolute(output)?;
    // Read first: a key file that cannot sign stops the build before any
    // work, and nothing is written.
    let key = args
        .sign
        .as_deref()
        .map(signing_key)
        .transpose()
        .map_err(|e| match args.from_hook {
            true => Error::new(format!("{e} (git config hpbuild.signkey)")),
            false => e,
        })?;
    let progress = Progress::new(args.verbose);
    let diff_bytes = std::fs::read(diff_path)
        .map_err(|e| Error::new(format!("cannot read diff {}: {e}", diff_path.display())))?;
    let diff_text = String::from_utf8_lossy(&diff_bytes);

    let trees = tree::prepare(base)?;
    let diff = diff::parse(&diff_text, &trees.orig)?;
    let choose = if args.from_hook {
        "git config hpbuild.compiledb"
    } else {
        "--compile-db"
    };
    let db = compdb::locate(&trees.base_root, args.compile_db.as_deref(), choose)?;
    let entries = compdb::load(&db.path)?;
    let links = Links::beside(&db.path)?;
    // A hunk that fails in a file no unit compiles (docs, tests) is noted.
    let compiled = |rel: &str| {
        let full = compdb::normalize(&trees.base_root.join(rel));
        rel.ends_with(".h") || entries.iter().any(|e| e.file == full)
    };
    let applied = trees.apply(&diff, compiled)?;
    // The layout check parses both sides of each changed file (seconds for
    // an amalgamation), so it runs beside the unit selection and the first
    // unit's compiles; its refusal still comes first, and before any other
    // unit is compiled.
    let units = std::thread::scope(|s| {
        let mut layout = Some(s.spawn(|| layout::refuse_layout_changes(&diff, &trees)));
        let mut layout_ok = || match layout.take().map(|h| h.join()) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(Error::new("the layout check panicked")),
        };
        let want = entries::Want {
            object: args.unit_output.as_deref(),
            output: args.target.as_deref(),
            links: links.as_ref(),
        };
        let chosen =
            entries::one_per_source(entries, &want, &trees.base_root).and_then(|entries| {
                let (selected, mut notes) = select_units(&diff, &entries.kept, &trees)?;
                let t = target::choose(links.as_ref(), want.output, selected, &trees.base_root)?;
                notes.extend(t.notes);
                Ok(((t.units, t.targets), entries.notes, notes))
            });
        let ((selected, targets), entry_notes, unit_notes) = match chosen {
            Ok(c) => c,
            Err(e) => return layout_ok().and(Err(e)),
        };
        let mut units = Vec::new();
        for (i, entry) in selected.into_iter().enumerate() {
            let rel = entry.relative_to(&trees.base_root).unwrap_or_default();
            progress.step(format!("compiling and comparing {rel}"));
            let unit = build_unit(i, entry, rel, &trees, &diff);
            layout_ok()?;
            units.push(unit?);
        }
        layout_ok()?;
        let mut notes = unit_notes;
        notes.splice(0..0, entry_notes);
        Ok((units, targets, notes))
    });
    let (units, targets, mut notes) = units?;
    notes.splice(0..0, applied);
    notes.splice(0..0, db.note);
    refuse_if_needed(args, &units)?;
    if units
        .iter()
        .all(|u| u.diff.replacements.is_empty() && u.diff.is_empty())
    {
        bail!(
            "the diff changes no compiled code in {}: nothing to patch",
            units
                .iter()
                .map(|u| u.rel.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    refuse_if_unreachable(&units)?;
    refuse_build_file_uses(&diff, &units)?;

    let patch_id = patch_id(output, &diff_bytes);
    let emit_units: Vec<emit::Unit> = units
        .iter()
        .map(|u| emit::Unit {
            patched: &u.patched_obj,
            diff: &u.diff,
            rel: &u.rel,
        })
        .collect();
    let flags = match args.redirect.as_str() {
        "call-site" => format::HP_HDR_F_CALL_SITES,
        _ => 0,
    };
    let patch = emit::emit_signed(
        &targets,
        &emit_units,
        &patch_id,
        &trees.base_label,
        flags,
        key.as_ref(),
    )
    .map_err(|e| Error::new(e.to_string()))?;
    notes.extend(patch.notes);
    if crate::cache::hits() > 0 {
        notes.push(format!(
            "{} original object(s) from the object cache ({}): their inputs are unchanged",
            crate::cache::hits(),
            crate::cache::location().map_or(String::new(), |p| p.display().to_string())
        ));
    }
    write(output, &patch.object)?;
    let sha256 = format::hex(&patch.sha256);

    let source_path = output.with_extension("c");
    write(
        &source_path,
        review::source(&patch_id, &trees.patched, &units_for_review(&units)).as_bytes(),
    )?;
    notes.extend(units.iter().flat_map(|u| {
        u.diff
            .functions
            .iter()
            .filter(|f| f.change == differ::Change::Removed)
            .map(move |f| {
                format!(
                    "{}: function {} was removed; the running program keeps its old code",
                    u.rel, f.name
                )
            })
    }));
    notes.extend(
        units
            .iter()
            .flat_map(|u| u.diff.notes.iter().map(move |n| format!("{}: {n}", u.rel))),
    );
    let mut manifest = build_manifest(
        &units,
        &trees.base_label,
        diff_path,
        &diff,
        &diff_bytes,
        output,
        &source_path,
        patch_id,
        sha256,
        notes,
    );
    manifest.set_targets(targets);
    manifest.signed = key
        .as_ref()
        .zip(patch.signed_by)
        .map(|(k, fingerprint)| manifest::Signed {
            algorithm: "ed25519",
            key_fingerprint: fingerprint,
            public_key: format::hex(k.verifying_key().as_bytes()),
        });
    if flags & format::HP_HDR_F_CALL_SITES != 0 {
        for r in &mut manifest.replaced {
            r.redirect = "call-site";
        }
    }
    let json = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
    write(&output.with_extension("json"), json.as_bytes())?;
    report::built(args, &manifest, &json);
    Ok(())
}

fn required(args: &BuildArgs) -> Result<(&str, &Path, &Path)> {
    match (&args.base, &args.diff, &args.output) {
        (Some(b), Some(d), Some(o)) => Ok((b.as_str(), d.as_path(), o.as_path())),
        _ => bail!("usage: hpbuild --base <DIR|GIT-REV> --diff FILE -o OUT.hpo (or: hpbuild loader --out DIR)"),
    }
}

/// The translation units the diff affects: each changed source, and every
/// unit that includes a changed header (or a changed `.c` file that is not a
/// unit of its own), as the compiler's `-M` reports. Files that are not C
/// are noted and ignored.
fn select_units(
    diff: &diff::Diff,
    entries: &[Entry],
    trees: &tree::Trees,
) -> Result<(Vec<Entry>, Vec<String>)> {
    let base_root = &trees.base_root;
    let mut notes = Vec::new();
    let mut selected: Vec<Entry> = Vec::new();
    let mut included: Vec<(&str, std::path::PathBuf)> = Vec::new();
    for f in &diff.files {
        if !f.is_c() {
            notes.push(format!("ignored {}: not a C source or header", f.path));
            continue;
        }
        if f.is_header() && (f.added || f.deleted) {
            // Only units that (no longer) include it see it, and those
            // units' #include lines are part of the diff too.
            notes.push(format!(
                "{}: header {} by the diff; the units that include it are compared",
                f.path,
                if f.added { "added" } else { "deleted" }
            ));
            continue;
        }
        if f.added {
            bail!(
                "{}: the diff adds a source file; the running program has no unit for it, so its code cannot be loaded — move the new functions into an existing file the diff changes",
                f.path
            );
        }
        if f.deleted {
            bail!(
                "{}: the diff deletes a source file; a live patch cannot remove a unit's code from the running program",
                f.path
            );
        }
        let full = compdb::normalize(&base_root.join(&f.path));
        match entries.iter().find(|e| e.file == full) {
            Some(e) if !f.is_header() => add_unit(e, &mut selected),
            _ => included.push((&f.path, compdb::normalize(&trees.orig.join(&f.path)))),
        }
    }
    if !included.is_empty() {
        let deps = deps::scan(entries, base_root, &trees.orig);
        for (rel, path) in &included {
            let mut users = Vec::new();
            for (e, d) in entries.iter().zip(&deps) {
                match d {
                    Ok(files) if files.contains(path) => users.push(e),
                    Ok(_) => {}
                    Err(_) if !source_exists(e, trees) => {
                        // A compiler probe's throwaway file, deleted since.
                        notes.push(format!(
                            "skipped {}: its source no longer exists and the diff does not \
                             touch it",
                            e.relative_to(base_root).unwrap_or_default()
                        ));
                    }
                    Err(why) => {
                        notes.push(format!(
                            "{}: its dependencies are unknown ({why}); compared in case it includes {rel}",
                            e.relative_to(base_root).unwrap_or_default()
                        ));
                        users.push(e);
                    }
                }
            }
            if users.is_empty() && !rel.ends_with(".h") {
                bail!(
                    "{rel} is changed by the diff but no unit in compile_commands.json compiles or #includes it: the build does not compile it as a file of its own (it is generated into another source, or not built)"
                );
            }
            let names: Vec<String> = users
                .iter()
                .map(|e| e.relative_to(base_root).unwrap_or_default())
                .collect();
            notes.push(format!(
                "{rel} is included by {} unit(s), compared: {}",
                names.len(),
                abbreviate(&names)
            ));
            users.into_iter().for_each(|e| add_unit(e, &mut selected));
        }
    }
    if selected.is_empty() {
        bail!("the diff changes no C source file that the build compiles");
    }
    Ok((selected, notes))
}

/// Does the unit's source exist in the original tree?
fn source_exists(e: &Entry, trees: &tree::Trees) -> bool {
    e.relative_to(&trees.base_root)
        .map(|rel| trees.orig.join(rel))
        .unwrap_or_else(|| e.file.clone())
        .exists()
}

fn add_unit(e: &Entry, selected: &mut Vec<Entry>) {
    if !selected.iter().any(|s| s.file == e.file) {
        selected.push(e.clone());
    }
}

/// "a, b, c and 12 more" — notes stay one line.
fn abbreviate(names: &[String]) -> String {
    if names.len() <= 6 {
        return names.join(", ");
    }
    format!("{} and {} more", names[..6].join(", "), names.len() - 6)
}

fn build_unit(
    index: usize,
    entry: Entry,
    rel: String,
    trees: &tree::Trees,
    source_diff: &diff::Diff,
) -> Result<Unit> {
    let compile_side = |side: Side, tree: &Path| {
        let out = compile::object_path(&trees.work, index, side);
        compile::compile(&entry, &trees.base_root, tree, &out, side)
    };
    // The compiles are independent: run them side by side. The base check
    // also needs the original as the deployed build compiled it, when the
    // project does not use -ffunction-sections: from the cache, folded from
    // the original compile's assembly (GCC), or as a third compile (Clang).
    let root = (&entry, trees.base_root.as_path(), trees.orig.as_path());
    let shape = compile::deployed_shape(root.0, root.1, root.2, &trees.work, index);
    let (orig, patched, deployed) = std::thread::scope(|sc| {
        let patched = sc.spawn(|| compile_side(Side::Patched, &trees.patched));
        let deployed = matches!(shape, DeployedShape::Compile)
            .then(|| sc.spawn(|| compile_side(Side::Deployed, &trees.orig)));
        let tap = match &shape {
            DeployedShape::Tap(p) => Some(p.as_path()),
            _ => None,
        };
        let out = compile::object_path(&trees.work, index, Side::Original);
        let orig = compile::compile_tapped(root.0, root.1, root.2, &out, Side::Original, tap);
        let join = |h: std::thread::ScopedJoinHandle<'_, Result<(Vec<u8>, Vec<String>)>>| {
            h.join()
                .unwrap_or_else(|_| Err(Error::new("a compiler thread panicked")))
        };
        (orig, join(patched), deployed.map(join))
    });
    let deployed = match shape {
        DeployedShape::NotNeeded => None,
        DeployedShape::Cached(obj) => Some(Ok((obj, Vec::new()))),
        DeployedShape::Compile => deployed,
        DeployedShape::Tap(_) => Some(
            match compile::take_tapped(root.0, root.1, root.2, &trees.work, index) {
                Some(obj) => Ok((obj, Vec::new())),
                // The shim could not fold it: compile it after all.
                None => compile_side(Side::Deployed, &trees.orig),
            },
        ),
    };
    let (orig_obj, orig_cmd) = orig?;
    let (mut patched_obj, mut patched_cmd) = patched?;
    // The functions the source diff edits (and their clones) keep the
    // differ from mistaking a real constant change for a shifted __LINE__.
    let edited = edits::edited_functions(
        &rel,
        source_diff,
        (&trees.orig, &trees.patched, &trees.base_root),
        (&orig_obj, &patched_obj),
    );
    let hints = differ::Hints {
        edited: edited.hint_names.clone(),
        line_edits: edits::line_edits(source_diff),
    };
    let mut diff = differ::compare_with(&orig_obj, &patched_obj, &hints)
        .map_err(|e| Error::new(format!("{rel}: cannot compare objects: {e}")))?;
    let outside = differ::direct_outside_refs(&diff, &patched_obj);
    if diff.refusals.is_empty() && !outside.is_empty() {
        let compile_got = |flag| compile_side(Side::OutsideViaGot(flag), &trees.patched);
        match outside_via_got(&diff, &orig_obj, &patched_cmd, &hints, compile_got) {
            Ok(ViaGot {
                diff: d,
                obj,
                cmd,
                flag,
            }) => {
                let shipped: Vec<&str> = d
                    .functions
                    .iter()
                    .filter(|f| matches!(f.change, differ::Change::Changed | differ::Change::New))
                    .map(|f| f.name.as_str())
                    .collect();
                let note = format!(
                    "shipped code ({}) compiled with {flag}: it reaches {} through the GOT, which \
                     works whether or not the running program holds a copy",
                    shipped.join(", "),
                    outside.join(", ")
                );
                (diff, patched_obj, patched_cmd) = (d, obj, cmd);
                diff.notes.push(note);
            }
            Err(why) => diff.notes.push(format!(
                "shipped code reaches {} with a 32-bit field: if the running program never \
                 used it (holds no copy of it), the loader refuses the patch; reaching it \
                 through the GOT was not possible: {why}",
                outside.join(", ")
            )),
        }
    }
    match deployed {
        // Already one section per function: the base check is exact.
        None => {}
        Some(Ok((obj, _))) => differ::use_deployed_shape(&mut diff, &orig_obj, &obj)
            .map_err(|e| Error::new(format!("{rel}: {e}")))?,
        Some(Err(e)) => diff.notes.push(format!(
            "the base check uses the -ffunction-sections code, which the deployed build may \
             not have: {e}"
        )),
    }
    let new_data = review::new_variables(&diff, &orig_obj, &patched_obj);
    Ok(Unit {
        new_data,
        rel,
        patched_obj,
        orig_cmd,
        patched_cmd,
        diff,
        edited,
    })
}

/// The patched unit as compiled to reach outside data through the GOT.
struct ViaGot {
    diff: UnitDiff,
    obj: Vec<u8>,
    cmd: Vec<String>,
    flag: &'static str,
}

/// The unit's shipped code compiled once more so that it reaches data it
/// does not define through the GOT (`differ::ship_from`): with GCC's
/// `-mno-direct-extern-access` or Clang's `-fno-direct-access-external-data`,
/// the compiler's own flag first. The new diff, object, command and the
/// flag used, or why not.
fn outside_via_got(
    diff: &UnitDiff,
    orig_obj: &[u8],
    patched_cmd: &[String],
    hints: &differ::Hints,
    compile: impl Fn(&'static str) -> Result<(Vec<u8>, Vec<String>)>,
) -> std::result::Result<ViaGot, String> {
    const GCC: &str = "-mno-direct-extern-access";
    const CLANG: &str = "-fno-direct-access-external-data";
    let flags = if compiler_version(patched_cmd).contains("clang") {
        [CLANG, GCC]
    } else {
        [GCC, CLANG]
    };
    let (obj, cmd, flag) = match compile(flags[0]) {
        Ok((obj, cmd)) => (obj, cmd, flags[0]),
        Err(first) => match compile(flags[1]) {
            Ok((obj, cmd)) => (obj, cmd, flags[1]),
            Err(_) => return Err(first.to_string()),
        },
    };
    let diff = differ::ship_from(diff, orig_obj, &obj, hints)?;
    Ok(ViaGot {
        diff,
        obj,
        cmd,
        flag,
    })
}

/// The first refusal becomes the error (one line naming the symbol); the
/// count of the others tells the user there is more to fix, and
/// `--explain` / `--json` list them all.
fn refuse_if_needed(args: &BuildArgs, units: &[Unit]) -> Result<()> {
    let all: Vec<report::Refused> = units
        .iter()
        .flat_map(|u| {
            u.diff.refusals.iter().map(move |r| report::Refused {
                unit: &u.rel,
                symbol: &r.symbol,
                message: &r.message,
            })
        })
        .collect();
    let Some(first) = all.first() else {
        return Ok(());
    };
    report::refused(args, &all);
    let more = match all.len() - 1 {
        0 => String::new(),
        n if args.explain => format!(" ({}, listed above)", report::count(n, "more refusal")),
        n => format!(
            " ({}; --explain lists them all)",
            report::count(n, "more refusal")
        ),
    };
    bail!("{}: {}{more}", first.unit, first.message);
}

/// New code that no replaced function leads to would never run: a patch
/// only changes what the running program calls through the functions it
/// replaces (the loader refuses a patch with none).
fn refuse_if_unreachable(units: &[Unit]) -> Result<()> {
    if units.iter().any(|u| !u.diff.replacements.is_empty()) {
        return Ok(());
    }
    let added: Vec<&str> = units
        .iter()
        .flat_map(|u| manifest::added_functions(&u.diff))
        .collect();
    bail!(
        "the diff adds {} but changes no function the running program has, so nothing would \
         ever call the new code: change the caller that should use it in the same diff",
        if added.is_empty() {
            "code or data".to_string()
        } else {
            format!("{}()", added.join("(), "))
        }
    );
}

/// A build file of the base (not C, so hpbuild does not compile it) whose
/// added lines name a function or variable this patch adds: the fixed build
/// uses the new definition from code hpbuild never compiles (nginx's
/// `auto/modules` lists a new module, and configure writes it into the
/// generated module table), so the running program would get the code but
/// not what registers or calls it. Files the diff adds are left out: a new
/// header that is not named `.h` is C, not a build file.
fn refuse_build_file_uses(diff: &diff::Diff, units: &[Unit]) -> Result<()> {
    let added: Vec<(&str, &str)> = units
        .iter()
        .flat_map(|u| {
            manifest::added_functions(&u.diff)
                .chain(u.new_data.iter().map(String::as_str))
                .map(move |name| (name, u.rel.as_str()))
        })
        .collect();
    for f in diff.files.iter().filter(|f| !f.is_c() && !f.added) {
        let plus = f
            .hunks
            .iter()
            .flat_map(|h| &h.lines)
            .filter(|(mark, _)| *mark == '+');
        for (_, line) in plus {
            let words = line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
            if let Some((name, rel)) = words
                .filter_map(|w| added.iter().find(|(n, _)| *n == w))
                .next()
            {
                bail!(
                    "{}: the build file's change names `{name}`, which the diff adds to {rel}: \
                     the build uses it from code hpbuild does not compile (generated sources, \
                     a module or registration list), so the running program would have the \
                     code but nothing that registers or calls it — this fix needs a rebuild \
                     and restart",
                    f.path
                );
            }
        }
    }
    Ok(())
}

/// `--sign KEYFILE`: the ed25519 private key, or one line naming the file
/// and what is wrong with it.
fn signing_key(path: &Path) -> Result<format::SigningKey> {
    let bytes = std::fs::read(path).map_err(|e| {
        Error::new(format!(
            "cannot read the signing key {}: {e}",
            path.display()
        ))
    })?;
    format::signing_key_from_pem(&String::from_utf8_lossy(&bytes)).map_err(|e| {
        Error::new(format!(
            "the signing key {} cannot sign: {e}",
            path.display()
        ))
    })
}

fn patch_id(output: &Path, diff: &[u8]) -> String {
    let stem = output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "patch".into());
    format!("{stem}-{:08x}", format::fingerprint(diff, &[]) as u32)
}

fn absolute(p: &Path) -> Result<std::path::PathBuf> {
    std::path::absolute(p).map_err(|e| Error::new(format!("{}: {e}", p.display())))
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes)
        .map_err(|e| Error::new(format!("cannot write {}: {e}", path.display())))
}

fn units_for_review(units: &[Unit]) -> Vec<review::ReviewUnit<'_>> {
    units
        .iter()
        .map(|u| review::ReviewUnit {
            rel: &u.rel,
            diff: &u.diff,
            new_data: &u.new_data,
        })
        .collect()
}

fn compiler_version(cmd: &[String]) -> String {
    let Some(cc) = cmd.first() else {
        return String::new();
    };
    std::process::Command::new(cc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| cc.clone())
}

#[allow(clippy::too_many_arguments)]
fn build_manifest(
    units: &[Unit],
    base_label: &str,
    diff_path: &Path,
    diff: &diff::Diff,
    diff_bytes: &[u8],
    output: &Path,
    source: &Path,
    patch_id: String,
    sha256: String,
    notes: Vec<String>,
) -> Manifest {
    let replaced = units
        .iter()
        .flat_map(|u| {
            u.diff.replacements.iter().map(move |r| Replaced {
                name: r.name.clone(),
                file: if r.local {
                    u.diff.file.clone()
                } else {
                    String::new()
                },
                old_size: r.old_size,
                fingerprint: format!("{:016x}", r.fingerprint),
                redirect: "entry-jump",
                why: manifest::reasons(&u.diff, &r.name, &u.edited),
            })
        })
        .collect();
    Manifest {
        format_version: format::HP_FORMAT_VERSION,
        target: String::new(),
        targets: Vec::new(),
        patch_id,
        patch_object: output.display().to_string(),
        sha256,
        reviewable_source: source.display().to_string(),
        base: base_label.to_string(),
        diff: DiffInfo {
            path: diff_path.display().to_string(),
            fnv1a64: format!("{:016x}", format::fingerprint(diff_bytes, &[])),
            files: diff.files.iter().map(|f| f.path.clone()).collect(),
        },
        compiler: units
            .first()
            .map(|u| compiler_version(&u.orig_cmd))
            .unwrap_or_default(),
        units: units
            .iter()
            .map(|u| UnitInfo {
                source: u.rel.clone(),
                symbol_file: u.diff.file.clone(),
                original_command: u.orig_cmd.clone(),
                patched_command: u.patched_cmd.clone(),
                edited_in_diff: u.edited.functions.clone(),
                edited_by_line_table: u.edited.by_line_table.clone(),
                edited_not_shipped: manifest::edited_not_shipped(&u.diff, &u.edited),
            })
            .collect(),
        replaced,
        added: units
            .iter()
            .flat_map(|u| manifest::added_functions(&u.diff).map(str::to_string))
            .collect(),
        added_data: units.iter().flat_map(|u| u.new_data.clone()).collect(),
        signed: None,
        notes,
    }
}
