//! nginx 1.22.1 (Debian bookworm nginx 1.22.1-9+deb12u9): a forking
//! event-loop server. Built with its own `configure` (the modules the fixes
//! touch: ssl, http_v2, mp4, dav, mail, stream; Debian's -O2 -g and
//! hardening flags; the loader linked whole through `--with-ld-opt`) and
//! `make` under `hpbuild capture`. For each security fix in series order:
//! start the master and its workers (forked children), open a keep-alive
//! connection, run the reproducer, build the patch, and with the bounded
//! load client running apply it to every process of the server, check the
//! reproducer, revert it everywhere and check again. Zero failed requests,
//! the same processes and the same open connection, or the case fails.

use super::http::{self, KeptConnection, Load, LoadLimits, Step, Upstream};
use super::mp4;
use super::report::{self, Row};
use super::{changes_program, copy_tree, crash_summary, fetch, say, Env};
use crate::tools;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PACKAGE: &str = "nginx";
/// The pinned source version (the newest listed one is not downloadable).
const VERSION: &str = "1.22.1-9+deb12u9";

/// How a fix is shown to work, or why it must not be applied.
enum Check {
    /// A reproducer against the running server: `buggy (...)` or
    /// `fixed (...)`.
    Repro(fn(&Server) -> Result<String, String>),
    /// Applied and reverted under load; no reproducer, for this reason.
    NoRepro(&'static str),
    /// hpbuild must refuse, with a reason containing this text.
    Refused(&'static str),
}

struct Case {
    patch: &'static str,
    check: Check,
}

fn cases() -> Vec<Case> {
    use Check::*;
    let case = |patch, check| Case { patch, check };
    vec![
        case("CVE-2025-23419.patch", Repro(tls_session_of_other_server)),
        case(
            "CVE-2024-7347-1.patch",
            NoRepro("not written: needs an MP4 file whose chunk run times samples per chunk passes 2^32"),
        ),
        case("CVE-2024-7347-2.patch", Repro(mp4_unordered_chunks)),
        case(
            "CVE-2025-53859.patch",
            NoRepro("not written: needs a mail proxy session and an auth_http server"),
        ),
        case(
            "CVE-2026-1642.patch",
            NoRepro("not written: needs an SSL upstream that answers before the handshake"),
        ),
        case(
            "CVE-2026-27651.patch",
            NoRepro("not written: needs a mail proxy session and an auth_http server"),
        ),
        case("CVE-2026-27654.patch", Repro(dav_short_destination)),
        case(
            "CVE-2026-27784.patch",
            // `entries * sizeof(...)` is already a 64-bit multiplication
            // where size_t is 64 bits: the cast changes no instruction.
            Refused("the diff changes no compiled code in src/http/modules/ngx_http_mp4_module.c"),
        ),
        case(
            "CVE-2026-28753.patch",
            NoRepro("not written: needs a DNS server whose PTR answer has characters outside RFC 1034"),
        ),
        case(
            "CVE-2026-28755.patch",
            NoRepro("not written: needs an OCSP responder for client certificates of a stream SSL server"),
        ),
        case("CVE-2026-32647.patch", Repro(mp4_empty_range)),
        case("CVE-2026-42945.patch", Repro(rewrite_after_args)),
        case(
            "CVE-2026-42946.1.patch",
            NoRepro("not written: the scgi/uwsgi half; the proxy half is 42946.2's reproducer"),
        ),
        case("CVE-2026-42946.2.patch", Repro(proxy_split_status_line)),
        case(
            "CVE-2026-40701.patch",
            Refused("struct ngx_ssl_ocsp_ctx_s changes its members"),
        ),
        case("CVE-2026-42934.patch", Repro(charset_split_character)),
        case(
            "CVE-2026-9256.patch",
            NoRepro("not written: a heap overflow that a plain build does not show"),
        ),
        case(
            "FIX-HTTP2bomb.patch",
            // A new module: configure lists it in the generated module
            // table; live, it would have no index and no configuration.
            Refused("auto/modules: the build file's change names `ngx_http_header_count_module`"),
        ),
        case(
            "CVE-2026-48142.patch",
            NoRepro("not written: charset recoding of a body split inside a UTF-8 character"),
        ),
        case("CVE-2026-42055.patch", Repro(grpc_long_header)),
    ]
}

pub fn run(cache: &Path, env: &Env) -> Result<Vec<Row>, String> {
    download(cache)?;
    ensure_pcre()?;
    let pkg = fetch::package(cache, PACKAGE)?;
    let tree = env.work.join(PACKAGE).join("tree");
    copy_tree(&pkg.upstream, &tree)?;
    tls_material(&env.work.join(PACKAGE).join("tls"))?;
    let cases = cases();
    let mut rows = Vec::new();
    let mut state = BuildState {
        configured: false,
        built: false,
        dirty: true,
    };
    for name in pkg.series()? {
        let file = pkg.patches.join(&name);
        for case in cases.iter().filter(|c| c.patch == name) {
            let row = run_case(case, &tree, &file, env, &mut state)
                .unwrap_or_else(|e| Row::failed(PACKAGE, case.patch, &e));
            rows.push(row);
        }
        if !changes_program(&file) {
            say(&format!(
                "{PACKAGE}: {name} not applied: it changes no C source"
            ));
            continue;
        }
        tools::run(
            Command::new("patch")
                .args(["-p1", "--batch", "--quiet", "--no-backup-if-mismatch", "-d"])
                .arg(&tree)
                .arg("-i")
                .arg(&file),
        )
        .map_err(|e| format!("{name} does not apply in series order: {e}"))?;
        say(&format!("{PACKAGE}: {name} applied to the tree"));
        state.dirty = true;
        // A patch to nginx's build scripts (auto/) changes what configure
        // generates (the module list): configure again.
        if touches_build_scripts(&file) {
            state.configured = false;
        }
    }
    let missing: Vec<&str> = cases
        .iter()
        .map(|c| c.patch)
        .filter(|p| !rows.iter().any(|r| r.fix == *p))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "not in debian/patches/series: {}",
            missing.join(", ")
        ));
    }
    Ok(rows)
}

/// `apt-get source --download-only nginx=VERSION` into the cache, once;
/// `fetch::package` then finds and unpacks it.
fn download(cache: &Path) -> Result<(), String> {
    let downloads = cache.join("downloads");
    std::fs::create_dir_all(&downloads).map_err(|e| e.to_string())?;
    if downloads.join(format!("{PACKAGE}_{VERSION}.dsc")).exists() {
        return Ok(());
    }
    fetch::download_source(&downloads, &format!("{PACKAGE}={VERSION}"))
}

/// nginx's rewrite module (the regex fixes) needs PCRE2's headers.
fn ensure_pcre() -> Result<(), String> {
    if Path::new("/usr/include/pcre2.h").exists() {
        return Ok(());
    }
    tools::run(Command::new("apt-get").args(["install", "-y", "-qq", "libpcre2-dev"]))
        .map_err(|e| format!("nginx needs PCRE2 headers: install libpcre2-dev ({e})"))
}

fn touches_build_scripts(patch: &Path) -> bool {
    std::fs::read_to_string(patch)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("+++ "))
        .any(|p| p.split('/').nth(1) == Some("auto"))
}

struct BuildState {
    configured: bool,
    built: bool,
    dirty: bool,
}

/// Debian's flags (dpkg-buildflags for bookworm, without the file-prefix
/// map), so the patched units compile as a Debian build would.
const CC_OPT: &str =
    "-g -O2 -fstack-protector-strong -Wformat -Werror=format-security -fPIC -D_FORTIFY_SOURCE=2";
const LD_OPT: &str = "-Wl,-z,relro -Wl,-z,now -fPIC";

/// configure (when needed; its probes are not units of nginx, so it runs
/// outside capture), then make under `hpbuild capture`.
fn build(tree: &Path, env: &Env, state: &mut BuildState) -> Result<(), String> {
    if !state.configured {
        let ld = format!("--with-ld-opt={LD_OPT} {}", loader::link_flags(&env.loader));
        let log = env.work.join(PACKAGE).join("configure.log");
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        tools::run(
            Command::new("./configure")
                .current_dir(tree)
                .arg(format!("--with-cc-opt={CC_OPT}"))
                .arg(ld)
                .args([
                    "--with-http_ssl_module",
                    "--with-http_v2_module",
                    "--with-http_mp4_module",
                    "--with-http_dav_module",
                    "--with-mail",
                    "--with-mail_ssl_module",
                    "--with-stream",
                    "--with-stream_ssl_module",
                ])
                .stdout(out),
        )
        .map_err(|e| format!("{e} (see {})", log.display()))?;
        state.configured = true;
    }
    tools::run(
        Command::new("nice")
            .arg(&env.hpbuild)
            .args(["capture", "--dir"])
            .arg(tree)
            .args(["--", "make", "-s", "-C"])
            .arg(tree)
            .arg(format!("-j{}", env.jobs)),
    )?;
    state.built = true;
    state.dirty = false;
    Ok(())
}

fn run_case(
    case: &Case,
    tree: &Path,
    fix: &Path,
    env: &Env,
    state: &mut BuildState,
) -> Result<Row, String> {
    let mut row = Row::new(PACKAGE, case.patch);
    let refusal = matches!(case.check, Check::Refused(_));
    // A refusal needs the tree and its compile database, not a fresh binary.
    if state.dirty && (!refusal || !state.built) {
        say(&format!("{PACKAGE}: building the base of {}", case.patch));
        build(tree, env, state)?;
    }
    say(&format!("{PACKAGE}: {}", case.patch));
    let hpo = env
        .work
        .join(PACKAGE)
        .join(case.patch.replace(".patch", ".hpo"));
    let server = if refusal {
        None
    } else {
        Some(Server::start(tree, env)?)
    };
    if let (Some(s), Check::Repro(repro)) = (&server, &case.check) {
        row.before = repro(s)?;
    }
    let started = Instant::now();
    let built = Command::new(&env.hpbuild)
        .arg("--base")
        .arg(tree)
        .arg("--diff")
        .arg(fix)
        .arg("-o")
        .arg(&hpo)
        .output()
        .map_err(|e| format!("cannot run hpbuild: {e}"))?;
    row.build_secs = started.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&built.stderr).trim().to_string();
    let crashed = err.contains("panicked at");
    let err = if crashed { crash_summary(&err) } else { err };
    if let Check::Refused(reason) = case.check {
        let last = err
            .lines()
            .last()
            .unwrap_or("")
            .trim_start_matches("hpbuild: ");
        row.apply = if built.status.success() {
            "built (expected a refusal)".into()
        } else {
            format!("refused: {last}")
        };
        row.ok = !built.status.success() && !crashed && err.contains(reason);
        return Ok(row);
    }
    if !built.status.success() {
        return Err(format!("hpbuild failed: {err}"));
    }
    row.shipped = report::shipped(&hpo.with_extension("json"))?;
    let server = server.expect("started for a case that applies");
    live(case, &server, &hpo, env, &mut row)?;
    Ok(row)
}

/// Load on, apply to every process, reproducer, revert everywhere,
/// reproducer, load off; then the processes and the kept connection.
fn live(case: &Case, server: &Server, hpo: &Path, env: &Env, row: &mut Row) -> Result<(), String> {
    let pids = server.pids()?;
    let mut kept = KeptConnection::open(server.port)?;
    kept.get("/")?;
    let load = Load::start(
        server.port,
        &["/", "/davdir/file.txt", "/rw/load", "/index.html"],
        &LoadLimits {
            threads: 3,
            max_requests: 2_000_000,
            max_time: Duration::from_secs(120),
            per_connection: 50,
        },
    );
    // Let the load reach the workers before the first stop.
    std::thread::sleep(Duration::from_millis(300));
    let applied = every_process(env, &pids, &["apply"], Some(hpo));
    let after = match (&applied, &case.check) {
        (Ok(_), Check::Repro(repro)) => Some(repro(server)),
        _ => None,
    };
    let reverted = match &applied {
        Ok(_) => Some(every_process(env, &pids, &["revert"], None)),
        Err(_) => None,
    };
    let again = match (&reverted, &case.check) {
        (Some(Ok(_)), Check::Repro(repro)) => Some(repro(server)),
        _ => None,
    };
    std::thread::sleep(Duration::from_millis(300));
    let stats = load.finish();

    let worst = applied.as_ref().map_err(|e| format!("apply: {e}"))?;
    row.apply = format!(
        "applied to the master and {} workers (slowest hpctl {worst} ms), reverted",
        pids.len() - 1
    );
    if let Some(Err(e)) = &reverted {
        row.apply = format!("applied; revert FAILED: {e}");
    }
    let (after_ok, again_ok) = match (&case.check, after, again) {
        (Check::Repro(_), Some(a), Some(b)) => {
            let (a, b) = (a?, b?);
            row.after = format!("{a}; reverted: {b}");
            (a.starts_with("fixed"), b.starts_with("buggy"))
        }
        (Check::NoRepro(why), _, _) => {
            row.after = format!("no reproducer: {why}");
            (true, true)
        }
        _ => (false, false),
    };
    let same = server.pids()? == pids;
    let conn = kept.get("/");
    let mut notes = Vec::new();
    if !same {
        notes.push(format!(
            "PROCESSES CHANGED: {:?} → {:?}",
            pids,
            server.pids()?
        ));
    }
    if let Err(e) = &conn {
        notes.push(format!("KEPT CONNECTION LOST: {e}"));
    }
    if stats.failed > 0 {
        notes.push(format!("FAILED REQUESTS: {:?}", stats.errors));
    }
    row.state = format!(
        "{}; load {} requests in {:.1} s, {} failed",
        if notes.is_empty() {
            "kept (same processes, same keep-alive connection)".to_string()
        } else {
            notes.join("; ")
        },
        stats.ok + stats.failed,
        stats.secs,
        stats.failed
    );
    let before_ok = match case.check {
        Check::Repro(_) => row.before.starts_with("buggy"),
        _ => true,
    };
    row.ok = before_ok && after_ok && again_ok && notes.is_empty() && stats.ok > 0;
    Ok(())
}

/// `hpctl <what> PID [patch]` for each process (the master first, then its
/// workers); the slowest call in milliseconds, or the first failure.
fn every_process(
    env: &Env,
    pids: &[u32],
    what: &[&str],
    hpo: Option<&Path>,
) -> Result<u128, String> {
    let mut worst = 0;
    for (i, pid) in pids.iter().enumerate() {
        let t = Instant::now();
        let mut cmd = Command::new(&env.hpctl);
        cmd.arg(what[0]).arg(pid.to_string());
        if let Some(p) = hpo {
            cmd.arg(p);
        }
        let out = cmd.output().map_err(|e| format!("cannot run hpctl: {e}"))?;
        worst = worst.max(t.elapsed().as_millis());
        if !out.status.success() {
            let role = if i == 0 { "master" } else { "worker" };
            return Err(format!(
                "hpctl {} on the {role} {pid}: {}",
                what[0],
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(worst)
}

/// A running nginx (master + workers) with its upstreams.
pub struct Server {
    master: Child,
    pub port: u16,
    /// Two TLS servers (a.test, the default, and b.test) share it.
    tls_port: u16,
    grpc: Upstream,
    run: PathBuf,
}

/// Workers: two, so a fix must reach more than one forked child.
const WORKERS: usize = 2;

impl Server {
    fn start(tree: &Path, env: &Env) -> Result<Server, String> {
        let run = env.work.join(PACKAGE).join("run");
        let _ = std::fs::remove_dir_all(&run);
        for d in ["logs", "html/mp4", "html/cs", "dav"] {
            std::fs::create_dir_all(run.join(d)).map_err(|e| e.to_string())?;
        }
        write(&run.join("html/index.html"), b"hello from nginx\n")?;
        write(&run.join("dav/file.txt"), b"dav file\n")?;
        write(&run.join("html/mp4/ok.mp4"), &mp4::file(&[(1, 1, 1)]))?;
        // "abc" and a two-byte UTF-8 letter: read in 4-byte buffers, the
        // last buffer holds the letter's second byte alone.
        write(&run.join("html/cs/split.txt"), "abc\u{434}".as_bytes())?;
        // Chunks 1, 3, 2: the third entry goes back.
        write(
            &run.join("html/mp4/unordered.mp4"),
            &mp4::file(&[(1, 1, 1), (3, 1, 1), (2, 1, 1)]),
        )?;
        let grpc = Upstream::spawn(Vec::new())?;
        let split = Upstream::spawn(vec![
            Step::Send(b"HTTP/1.1"),
            Step::Pause(Duration::from_millis(200)),
            Step::Send(b" XYZ split-body\n"),
        ])?;
        let port = http::free_port()?;
        let tls_port = http::free_port()?;
        let conf = std::fs::read_to_string(env.fixtures.join("nginx/nginx.conf"))
            .map_err(|e| format!("cannot read fixtures/corpus/nginx/nginx.conf: {e}"))?
            .replace("@PORT@", &port.to_string())
            .replace("@RUN@", &run.display().to_string())
            .replace("@WORKERS@", &WORKERS.to_string())
            .replace("@GRPC@", &grpc.port.to_string())
            .replace("@SPLIT@", &split.port.to_string())
            .replace("@TLSPORT@", &tls_port.to_string())
            .replace("@TREE@", &tree.display().to_string())
            .replace(
                "@TLS@",
                &env.work.join(PACKAGE).join("tls").display().to_string(),
            );
        write(&run.join("nginx.conf"), conf.as_bytes())?;
        let master = Command::new(tree.join("objs/nginx"))
            .arg("-p")
            .arg(&run)
            .args(["-c", "nginx.conf", "-e", "logs/error.log"])
            .env("HOTPATCH_LOG", run.join("logs/loader.log"))
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start nginx: {e}"))?;
        let mut s = Server {
            master,
            port,
            tls_port,
            grpc,
            run,
        };
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(st)) = s.master.try_wait() {
                return Err(format!(
                    "nginx exited at start ({st}); see {}",
                    s.run.join("logs/error.log").display()
                ));
            }
            if http::accepts(port) && http::accepts(tls_port) && s.pids()?.len() == WORKERS + 1 {
                return Ok(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "nginx did not start its {WORKERS} workers on port {port} within 10 s"
        ))
    }

    /// The master, then its children (the workers), from
    /// /proc/<master>/task/*/children.
    fn pids(&self) -> Result<Vec<u32>, String> {
        let master = self.master.id();
        let mut pids = vec![master];
        let tasks = format!("/proc/{master}/task");
        for t in std::fs::read_dir(&tasks)
            .map_err(|e| format!("{tasks}: {e}"))?
            .flatten()
        {
            let text = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            pids.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
        pids[1..].sort_unstable();
        Ok(pids)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // TERM lets the master stop its workers (killing it alone would
        // leave them running).
        let _ = Command::new("kill")
            .args(["-TERM", &self.master.id().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.master.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.master.kill();
        let _ = self.master.wait();
    }
}

fn write(path: &PathBuf, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn request(server: &Server, raw: &[u8]) -> Result<http::Response, String> {
    http::raw_request(server.port, raw, Duration::from_secs(10))
}

/// CVE-2026-27654: COPY in an `alias` location with a Destination shorter
/// than the location's prefix. Unfixed, the destination path is built from
/// memory before the URI (the error log shows a path that is not the
/// destination) and the reply is not 400; fixed: 400.
fn dav_short_destination(s: &Server) -> Result<String, String> {
    let r = request(
        s,
        b"COPY /davdir/file.txt HTTP/1.1\r\nHost: localhost\r\nDestination: /d\r\nConnection: close\r\n\r\n",
    )?;
    Ok(if r.status == 400 {
        "fixed (400 for a Destination shorter than the alias)".into()
    } else {
        format!(
            "buggy ({} for a Destination shorter than the alias)",
            r.status
        )
    })
}

/// CVE-2026-42946 (part 2): an upstream sends an invalid status line in
/// two reads ("HTTP/1.1", then " XYZ split-body"). nginx passes it through
/// as an HTTP/0.9 body; unfixed, the bytes of the first read are lost.
fn proxy_split_status_line(s: &Server) -> Result<String, String> {
    let r = request(
        s,
        b"GET /split/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )?;
    let body = String::from_utf8_lossy(&r.body).trim().to_string();
    Ok(if body == "HTTP/1.1 XYZ split-body" {
        format!("fixed (body {body:?})")
    } else {
        format!("buggy (body {body:?}, the first read's bytes lost)")
    })
}

/// CVE-2026-42055: a request header longer than an HTTP/2 length field of
/// NGX_HTTP_V2_INT_OCTETS can encode, to a grpc_pass location. Unfixed,
/// nginx encodes it anyway (one octet past what it allocated) and sends it
/// upstream (the scripted upstream closes: 502); fixed, it refuses before
/// connecting (500), and the upstream sees no connection.
fn grpc_long_header(s: &Server) -> Result<String, String> {
    let before = s.grpc.connections();
    let mut raw =
        b"GET /grpc/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-Long: ".to_vec();
    raw.extend(vec![b'a'; 2_200_000]);
    raw.extend(b"\r\n\r\n");
    let r = request(s, &raw)?;
    let reached = s.grpc.connections() - before;
    Ok(match (r.status, reached) {
        (500, 0) => "fixed (500, upstream not contacted)".into(),
        (st, n) => format!("buggy ({st}, {n} upstream connection(s))"),
    })
}

/// CVE-2024-7347 (part 2): an MP4 whose sample-to-chunk table goes back
/// (chunks 1, 3, 2), asked from a start time past the first run. Unfixed,
/// the negative run length wraps and nginx serves a file cut from the
/// wrong place (200); fixed: 500, "unordered mp4 stsc chunks".
fn mp4_unordered_chunks(s: &Server) -> Result<String, String> {
    let r = request(
        s,
        b"GET /mp4/unordered.mp4?start=3 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )?;
    Ok(match r.status {
        500 => "fixed (500 for unordered stsc chunks)".into(),
        st => format!(
            "buggy ({st} for unordered stsc chunks, {} bytes)",
            r.body.len()
        ),
    })
}

/// CVE-2026-32647: a start and end time inside one sample (one chunk), so
/// no media data lies between them. Unfixed, nginx queues zero-size
/// buffers ("zero size buf in output") and closes the connection without
/// a reply; fixed: 500, "no data between start time and end time".
fn mp4_empty_range(s: &Server) -> Result<String, String> {
    let r = request(
        s,
        b"GET /mp4/ok.mp4?start=1.5&end=1.6 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )?;
    Ok(match r.status {
        500 => "fixed (500 for an empty time range)".into(),
        0 if r.body.is_empty() => "buggy (connection closed without a reply)".into(),
        st => format!("buggy ({st} for an empty time range)"),
    })
}

/// CVE-2026-42945: a rewrite whose replacement has arguments, followed by
/// another rewrite of the same request. Unfixed, the second rewrite still
/// thinks it writes arguments and escapes its capture (the request's
/// `a%20b` comes back as `/rw3/a%20b`, more bytes than it reserved);
/// fixed, it copies the capture as it is (`/rw3/a b`).
fn rewrite_after_args(s: &Server) -> Result<String, String> {
    let r = request(
        s,
        b"GET /rw/a%20b HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )?;
    let body = String::from_utf8_lossy(&r.body).trim().to_string();
    Ok(if body.starts_with("uri=/rw3/a b ") {
        format!("fixed ({body:?})")
    } else {
        format!("buggy ({} {body:?}: the capture escaped)", r.status)
    })
}

/// Keys and certificates for the TLS reproducer, made once per run with
/// the openssl command: two CAs, a server certificate, and a client
/// certificate that only CA 1 signed.
fn tls_material(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let openssl = |args: &[&str]| {
        tools::run(
            Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .stderr(Stdio::null()),
        )
        .map_err(|e| format!("making the TLS test keys: {e} (is openssl installed?)"))
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for name in ["ca1", "ca2", "server"] {
        let (key, pem, subj) = (
            format!("{name}.key"),
            format!("{name}.pem"),
            format!("/CN={name}"),
        );
        let mut args = vec![
            "req", "-x509", "-days", "2", "-subj", &subj, "-keyout", &key, "-out", &pem,
        ];
        args.extend(ec);
        openssl(&args)?;
    }
    let mut args = vec![
        "req",
        "-subj",
        "/CN=client",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
    ];
    args.extend(ec);
    openssl(&args)?;
    openssl(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        "client.csr",
        "-CA",
        "ca1.pem",
        "-CAkey",
        "ca1.key",
        "-CAcreateserial",
        "-out",
        "client.pem",
    ])
}

/// One TLS 1.3 connection with `openssl s_client` to the TLS port under
/// `servername`: sends a GET and returns everything s_client printed.
fn s_client(s: &Server, servername: &str, extra: &[&str]) -> Result<String, String> {
    use std::io::Write;
    let mut child = Command::new("timeout")
        .args([
            "10", "openssl", "s_client", "-tls1_3", "-ign_eof", "-connect",
        ])
        .arg(format!("127.0.0.1:{}", s.tls_port))
        .args(["-servername", servername])
        .args(extra)
        .current_dir(&s.run)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run openssl s_client: {e}"))?;
    let req = format!("GET / HTTP/1.1\r\nHost: {servername}\r\nConnection: close\r\n\r\n");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(req.as_bytes())
        .map_err(|e| format!("openssl s_client: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("openssl s_client: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
}

/// CVE-2025-23419: two TLS servers on one port, each asking for a client
/// certificate from its own CA. A client with a certificate from CA 1
/// connects to a.test and keeps the session, then resumes it with the
/// server name b.test, whose CA never signed that certificate. Unfixed,
/// b.test accepts the resumed session and answers; fixed, the handshake
/// is refused (the session belongs to another server name).
fn tls_session_of_other_server(s: &Server) -> Result<String, String> {
    let tls = s.run.join("../tls");
    let (cert, key) = (tls.join("client.pem"), tls.join("client.key"));
    let first = s_client(
        s,
        "a.test",
        &[
            "-cert",
            &cert.display().to_string(),
            "-key",
            &key.display().to_string(),
            "-sess_out",
            "session.pem",
        ],
    )?;
    if !first.contains("server a") {
        return Err(format!("the full handshake to a.test failed: {first}"));
    }
    let resumed = s_client(s, "b.test", &["-sess_in", "session.pem"])?;
    let reused = resumed.contains("Reused, TLSv1.3");
    Ok(if resumed.contains("server b") {
        format!("buggy (b.test answered a session of a.test, reused: {reused})")
    } else if resumed.contains("alert") || resumed.contains("error") {
        "fixed (b.test refused a session of a.test)".into()
    } else {
        format!("no verdict: {resumed}")
    })
}

/// CVE-2026-42934: a UTF-8 body recoded to windows-1251 and read in 4-byte
/// buffers, the last one holding only the second byte of a letter (д).
/// Unfixed, the letter is decoded one byte short, kept as incomplete, and
/// the reply never ends; fixed, it arrives as "abc" and the letter's
/// windows-1251 byte (0xE4).
fn charset_split_character(s: &Server) -> Result<String, String> {
    let r = http::raw_request(
        s.port,
        // HTTP/1.0: the body comes as it is, not in chunks.
        b"GET /cs/split.txt HTTP/1.0\r\nHost: localhost\r\n\r\n",
        Duration::from_secs(3),
    );
    Ok(match r {
        Ok(r) if r.body == b"abc\xe4" => "fixed (\"abc\" and the recoded letter)".into(),
        Ok(r) => format!(
            "buggy ({} with body {:?})",
            r.status,
            String::from_utf8_lossy(&r.body)
        ),
        Err(e) => format!("buggy (no complete reply in 3 s: {e})"),
    })
}
