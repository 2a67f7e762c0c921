//! HTTP on the loopback interface for the nginx corpus: a bounded load
//! client that counts failed requests, one-shot raw requests for the
//! reproducers, and scripted upstream servers that nginx proxies to.
//! Every socket connects to or listens on 127.0.0.1 only.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

fn local(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn connect(port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&local(port), timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// A parsed response. `status` is 0 for a response without a status line
/// (HTTP/0.9: the whole reply is the body).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response from a keep-alive connection: status line, headers,
/// and a body of `Content-Length` bytes (nginx sends it for every reply the
/// load asks for; chunked replies are not expected there).
fn read_response(r: &mut BufReader<TcpStream>) -> Result<Response, String> {
    let mut line = String::new();
    r.read_line(&mut line)
        .map_err(|e| format!("reading the status line: {e}"))?;
    let status = parse_status(&line).ok_or_else(|| format!("bad status line {line:?}"))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line)
            .map_err(|e| format!("reading a header: {e}"))?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l
            .split_once(':')
            .ok_or_else(|| format!("bad header {l:?}"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let len: usize = resp
        .header("content-length")
        .ok_or("a reply without Content-Length")?
        .parse()
        .map_err(|e| format!("bad Content-Length: {e}"))?;
    resp.body.resize(len, 0);
    r.read_exact(&mut resp.body)
        .map_err(|e| format!("reading the body: {e}"))?;
    Ok(resp)
}

fn parse_status(line: &str) -> Option<u16> {
    let mut it = line.split_whitespace();
    it.next().filter(|v| v.starts_with("HTTP/1."))?;
    it.next()?.parse().ok()
}

/// Sends `raw` on a new connection and reads until the server closes it
/// (the request should carry `Connection: close`). Used by reproducers,
/// which need the exact bytes on the wire.
pub fn raw_request(port: u16, raw: &[u8], timeout: Duration) -> Result<Response, String> {
    let mut s = connect(port, timeout).map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))?;
    s.write_all(raw)
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut all = Vec::new();
    s.read_to_end(&mut all)
        .map_err(|e| format!("reading the reply: {e}"))?;
    let Some(end) = all.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(Response {
            status: 0,
            headers: Vec::new(),
            body: all,
        });
    };
    let head = String::from_utf8_lossy(&all[..end]).to_string();
    let mut lines = head.lines();
    let Some(status) = lines.next().and_then(parse_status) else {
        return Ok(Response {
            status: 0,
            headers: Vec::new(),
            body: all,
        });
    };
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: all[end + 4..].to_vec(),
    })
}

/// A keep-alive connection held across a live patch: the same TCP
/// connection, served by the same worker, must answer before and after.
pub struct KeptConnection {
    reader: BufReader<TcpStream>,
    local_port: u16,
}

impl KeptConnection {
    pub fn open(port: u16) -> Result<KeptConnection, String> {
        let s = connect(port, Duration::from_secs(5)).map_err(|e| format!("connect: {e}"))?;
        let local_port = s.local_addr().map_err(|e| e.to_string())?.port();
        Ok(KeptConnection {
            reader: BufReader::new(s),
            local_port,
        })
    }

    /// GET `path` on this connection; the reply's status.
    pub fn get(&mut self, path: &str) -> Result<u16, String> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        self.reader
            .get_mut()
            .write_all(req.as_bytes())
            .map_err(|e| format!("kept connection (local port {}): {e}", self.local_port))?;
        read_response(&mut self.reader)
            .map(|r| r.status)
            .map_err(|e| format!("kept connection (local port {}): {e}", self.local_port))
    }
}

/// What a load run saw.
#[derive(Default, Debug)]
pub struct LoadStats {
    pub ok: u64,
    pub failed: u64,
    /// The first few failures, for the report.
    pub errors: Vec<String>,
    pub secs: f64,
}

/// Bounds of a load run: it stops at whichever comes first.
pub struct LoadLimits {
    pub threads: usize,
    pub max_requests: u64,
    pub max_time: Duration,
    /// Each connection is closed after this many requests (so accepting
    /// new connections is under load too, not only keep-alive reads).
    pub per_connection: u64,
}

/// A running load: `threads` clients GET `paths` in turn from 127.0.0.1:port
/// until `finish`, the request bound or the time bound.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<LoadStats>>,
    started: Instant,
}

impl Load {
    pub fn start(port: u16, paths: &[&str], limits: &LoadLimits) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + limits.max_time;
        let threads = (0..limits.threads)
            .map(|i| {
                let (stop, sent) = (stop.clone(), sent.clone());
                let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
                let (max, per_conn) = (limits.max_requests, limits.per_connection);
                std::thread::spawn(move || {
                    let mut st = LoadStats::default();
                    let mut conn: Option<BufReader<TcpStream>> = None;
                    let mut on_conn = 0;
                    let mut n = i;
                    while !stop.load(Ordering::Relaxed)
                        && Instant::now() < deadline
                        && sent.fetch_add(1, Ordering::Relaxed) < max
                    {
                        let path = &paths[n % paths.len()];
                        n += 1;
                        match one(port, &mut conn, path) {
                            Ok((200, close)) => {
                                st.ok += 1;
                                on_conn += 1;
                                if close || on_conn >= per_conn {
                                    conn = None;
                                    on_conn = 0;
                                }
                            }
                            Ok((status, _)) => {
                                fail(&mut st, format!("GET {path}: status {status}"), &mut conn)
                            }
                            Err(e) => fail(&mut st, format!("GET {path}: {e}"), &mut conn),
                        }
                        if conn.is_none() {
                            on_conn = 0;
                        }
                    }
                    st
                })
            })
            .collect();
        Load {
            stop,
            threads,
            started: Instant::now(),
        }
    }

    /// Stops the clients and sums what they saw.
    pub fn finish(self) -> LoadStats {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = LoadStats::default();
        for t in self.threads {
            let st = t.join().unwrap_or_else(|_| LoadStats {
                failed: 1,
                errors: vec!["a load thread panicked".into()],
                ..Default::default()
            });
            all.ok += st.ok;
            all.failed += st.failed;
            all.errors.extend(st.errors);
        }
        all.errors.truncate(3);
        all.secs = self.started.elapsed().as_secs_f64();
        all
    }
}

fn fail(st: &mut LoadStats, why: String, conn: &mut Option<BufReader<TcpStream>>) {
    st.failed += 1;
    if st.errors.len() < 3 {
        st.errors.push(why);
    }
    *conn = None;
}

/// One request on the thread's connection (opened if there is none):
/// (status, whether the server closes the connection after it).
fn one(
    port: u16,
    conn: &mut Option<BufReader<TcpStream>>,
    path: &str,
) -> Result<(u16, bool), String> {
    if conn.is_none() {
        let s = connect(port, Duration::from_secs(5)).map_err(|e| format!("connect: {e}"))?;
        *conn = Some(BufReader::new(s));
    }
    let r = conn.as_mut().expect("connected above");
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    r.get_mut()
        .write_all(req.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let resp = read_response(r)?;
    let close = resp
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    Ok((resp.status, close))
}

/// One step of a scripted upstream's reply.
#[derive(Clone)]
pub enum Step {
    /// Write these bytes.
    Send(&'static [u8]),
    /// Wait, so the next bytes arrive in another read on nginx's side.
    Pause(Duration),
}

/// A scripted upstream on 127.0.0.1: for every connection it reads what
/// arrives first (the request), plays its steps and closes. It counts the
/// connections, so a reproducer can tell whether nginx reached it at all.
pub struct Upstream {
    pub port: u16,
    pub connections: Arc<AtomicU64>,
}

impl Upstream {
    pub fn spawn(steps: Vec<Step>) -> Result<Upstream, String> {
        let l = TcpListener::bind(local(0)).map_err(|e| format!("upstream bind: {e}"))?;
        let port = l.local_addr().map_err(|e| e.to_string())?.port();
        let connections = Arc::new(AtomicU64::new(0));
        let count = connections.clone();
        let steps = Arc::new(Mutex::new(steps));
        // The thread lives as long as the corpus run; each connection is
        // short and handled in turn.
        std::thread::spawn(move || {
            for mut c in l.incoming().map_while(Result::ok) {
                count.fetch_add(1, Ordering::Relaxed);
                let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
                let mut buf = [0u8; 65536];
                let _ = c.read(&mut buf);
                let script = steps.lock().map(|s| s.clone()).unwrap_or_default();
                for s in script {
                    match s {
                        Step::Send(b) => {
                            if c.write_all(b).is_err() {
                                break;
                            }
                        }
                        Step::Pause(d) => std::thread::sleep(d),
                    }
                }
            }
        });
        Ok(Upstream { port, connections })
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

/// A port on 127.0.0.1 that nothing listens on right now (nginx binds it
/// next; the short window is acceptable for a test run).
pub fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind(local(0)).map_err(|e| format!("cannot find a free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// Whether 127.0.0.1:port accepts connections.
pub fn accepts(port: u16) -> bool {
    connect(port, Duration::from_millis(200)).is_ok()
}
