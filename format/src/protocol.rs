//! The control protocol between `hpctl` (or any client) and the in-process
//! loader `libhotpatch.a`. This file is the one definition: `build.rs` turns
//! every `pub const` line below into a `#define` in the generated C header
//! `hp_protocol.h` that the loader includes.
//!
//! # Transport
//! The loader listens on the Linux *abstract* Unix stream socket
//! `"\0hotpatch.<pid>"` ([`HP_SOCKET_PREFIX`] + decimal pid, no trailing NUL
//! in the address). It serves one connection at a time and accepts a peer
//! only if the peer's uid (`SO_PEERCRED`) is the process's effective uid or
//! root; anyone else gets an `ERR` reply and the connection is closed. For
//! an accepted peer it calls `prctl(PR_SET_PTRACER, peer)`, so that the
//! client may stop the threads even under Yama's `ptrace_scope=1`.
//!
//! # Requests (one per connection)
//! * `APPLY <nbytes> [<option>...]\n` followed by exactly `nbytes` bytes: a
//!   patch object (patch format v1, see [`crate`]). `nbytes` ≤
//!   [`HP_MAX_PATCH_SIZE`].
//! * `REVERT [<option>...]\n`: undo the most recently applied patch.
//! * `LIST\n`: list applied patches, oldest first.
//!
//! Options (any order, each at most once):
//! * `CONSISTENT <ms>` (the default, with [`HP_DEFAULT_CONSISTENT_TIMEOUT_MS`]):
//!   switch only at a moment when no thread has a frame in the code being
//!   replaced (for revert: in the patch's code), retrying until `ms`
//!   (≤ [`HP_MAX_CONSISTENT_TIMEOUT_MS`]); otherwise change nothing and fail
//!   naming the function and the thread. A consistent revert also unmaps
//!   the patch's code.
//! * `LAZY`: switch at once; calls already running finish in the old code
//!   (the reply names the threads doing so).
//! * `CALLSITES` (APPLY only): besides the entry jumps, rewrite every direct
//!   call/jmp that targets a replaced function (the client finds them, see
//!   `TARGETS` below).
//! * `CLIENTSTOP`: the client can stop the threads itself (ptrace); the
//!   loader asks it to with `STOP` instead of using its own signal.
//!
//! # The conversation before the reply
//! While it works on an APPLY or REVERT, the loader may send the client
//! these lines and wait for the answer (only when the request allowed it):
//! * `TARGETS <nfuncs> <ncode> <bias>\n`, then `nfuncs` lines
//!   `F <addr>` (runtime entry of each replaced function, in the patch's
//!   order) and `ncode` lines `C <lo> <hi>` (code of earlier patches). The
//!   client decodes the object the functions are in (the executable, or the
//!   shared library a patch is for: the file mapped at the first function;
//!   its link-time addresses plus `bias` are runtime addresses) and those
//!   ranges, and answers `SITES <k>\n` and `k`
//!   lines `<addr> <func-index> <instruction bytes in hex>`: each direct
//!   call/jmp/jcc with a 32-bit displacement to one of the functions. The
//!   loader checks every site's bytes before using it.
//! * `STOP <tid>\n`: stop every thread of the process except `tid` (the
//!   listener) now. The client answers `REGS <n>\n` and `n` lines
//!   `<tid> <r0> ... <r16>` (hex, DWARF register order: rax rdx rcx rbx rsi
//!   rdi rbp rsp r8..r15 rip), or `NOSTOP <reason>\n` if it cannot (the loader
//!   then stops them with its signal).
//! * `RESUME\n`: let every thread go; the client answers `RESUMED\n`.
//!
//! Numbers in these lines are hexadecimal without `0x`, except counts and
//! the tid, which are decimal. If the client disappears, ptrace detaches and
//! the threads run on; the loader then writes nothing.
//!
//! The request line is at most [`HP_MAX_REQUEST_LINE`] bytes including the
//! newline. The loader reads with a per-read timeout of [`HP_IO_TIMEOUT_MS`]
//! and an overall deadline of [`HP_REQUEST_DEADLINE_MS`] for the request
//! itself, so a stalled client cannot block the listener forever.
//!
//! # Reply
//! The first line is `OK` or `OK <text>` on success, `ERR <one-line reason>`
//! on failure. Optional detail lines follow. The loader then closes the
//! connection (end of reply = EOF).
//!
//! * APPLY → `OK applied <id>: <n> functions` (plus ` (consistent: no
//!   thread was running them)` or, with call sites, ` (<k> call sites)`);
//!   detail lines name threads still running a replaced function after a
//!   lazy switch: `thread <tid> is running old <f>(); it finishes in the old
//!   code`, and `thread <tid>: stack walk stopped early (...)` when a stack
//!   could not be walked to its end.
//! * REVERT → `OK reverted <id>` or `ERR no patch applied`; detail lines as
//!   for APPLY (`thread <tid> is running patch <id>'s <f>(); ...`).
//! * LIST → `OK`, then one line per applied patch, oldest first:
//!   `<id> <function>[#<sites>] ...` (a static function is written
//!   `<file>::<name>`, see [`crate::HP_LOCAL_SEP`]; `#<sites>` is present
//!   when the patch rewrote call sites: how many for that function; see
//!   [`parse_list_line`]).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::time::Duration;

/// Abstract socket name prefix; the full name is this plus the decimal pid.
pub const HP_SOCKET_PREFIX: &str = "hotpatch.";
/// Largest patch object the loader accepts (64 MiB).
pub const HP_MAX_PATCH_SIZE: u64 = 67108864;
/// Longest request line, newline included.
pub const HP_MAX_REQUEST_LINE: u32 = 256;
/// Timeout of each read/write on the connection, in milliseconds.
pub const HP_IO_TIMEOUT_MS: u32 = 5000;
/// Deadline for receiving a whole request, in milliseconds.
pub const HP_REQUEST_DEADLINE_MS: u32 = 30000;
pub const HP_CMD_APPLY: &str = "APPLY";
pub const HP_CMD_REVERT: &str = "REVERT";
pub const HP_CMD_LIST: &str = "LIST";
/// Option: the whole-stack check with a timeout (the default).
pub const HP_OPT_CONSISTENT: &str = "CONSISTENT";
/// Option: switch future calls at once.
pub const HP_OPT_LAZY: &str = "LAZY";
/// Option: rewrite direct call sites too.
pub const HP_OPT_CALLSITES: &str = "CALLSITES";
/// Option: the client stops the threads (ptrace) when asked.
pub const HP_OPT_CLIENTSTOP: &str = "CLIENTSTOP";
/// Default wait of a consistent apply/revert, in milliseconds.
pub const HP_DEFAULT_CONSISTENT_TIMEOUT_MS: u32 = 5000;
/// Longest wait a consistent apply/revert may ask for, in milliseconds.
pub const HP_MAX_CONSISTENT_TIMEOUT_MS: u32 = 600000;
/// Loader → client: the functions whose call sites to find.
pub const HP_MSG_TARGETS: &str = "TARGETS";
/// Client → loader: the call sites found.
pub const HP_MSG_SITES: &str = "SITES";
/// Loader → client: stop every thread but the one named.
pub const HP_MSG_STOP: &str = "STOP";
/// Client → loader: every other thread is stopped; their registers follow.
pub const HP_MSG_REGS: &str = "REGS";
/// Client → loader: the client cannot stop the threads (reason follows).
pub const HP_MSG_NOSTOP: &str = "NOSTOP";
/// Loader → client: let the threads go.
pub const HP_MSG_RESUME: &str = "RESUME";
/// Client → loader: they run again.
pub const HP_MSG_RESUMED: &str = "RESUMED";
/// In a LIST line, separates a function from its call-site count.
pub const HP_LIST_SITES_SEP: &str = "#";
/// Most call sites one apply may rewrite.
pub const HP_MAX_SITES: u32 = 1048576;
/// Timeout of each step of the conversation (a stop, a site search), in milliseconds.
pub const HP_CONVERSATION_TIMEOUT_MS: u32 = 30000;
pub const HP_REPLY_OK: &str = "OK";
pub const HP_REPLY_ERR: &str = "ERR";

/// The abstract socket name (without the leading NUL) for a process.
pub fn socket_name(pid: u32) -> String {
    format!("{HP_SOCKET_PREFIX}{pid}")
}

/// When the switch may happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only at a moment when no thread runs the code being replaced; wait up
    /// to `timeout_ms` for it.
    Consistent { timeout_ms: u32 },
    /// At once: future calls switch, running calls finish in the old code.
    Lazy,
}

impl Default for Mode {
    fn default() -> Self {
        Mode::Consistent {
            timeout_ms: HP_DEFAULT_CONSISTENT_TIMEOUT_MS,
        }
    }
}

/// How an apply or revert is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    pub mode: Mode,
    /// Rewrite direct call sites of the replaced functions too (apply only).
    pub call_sites: bool,
    /// The client answers `STOP` by stopping the threads itself.
    pub client_stop: bool,
}

impl Options {
    fn words(&self) -> String {
        let mut w = match self.mode {
            Mode::Consistent { timeout_ms } => format!(" {HP_OPT_CONSISTENT} {timeout_ms}"),
            Mode::Lazy => format!(" {HP_OPT_LAZY}"),
        };
        if self.call_sites {
            w += &format!(" {HP_OPT_CALLSITES}");
        }
        if self.client_stop {
            w += &format!(" {HP_OPT_CLIENTSTOP}");
        }
        w
    }

    /// The longest the loader may take before it answers.
    pub fn wait(&self) -> Duration {
        let ms = match self.mode {
            Mode::Consistent { timeout_ms } => timeout_ms,
            Mode::Lazy => 0,
        };
        Duration::from_millis(u64::from(ms))
    }
}

/// One request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Apply {
        patch: Vec<u8>,
        opts: Options,
    },
    /// Undo the newest patch.
    Revert(Options),
    List,
}

impl Request {
    /// The bytes sent on the wire.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::Apply { patch, opts } => {
                let mut v =
                    format!("{HP_CMD_APPLY} {}{}\n", patch.len(), opts.words()).into_bytes();
                v.extend_from_slice(patch);
                v
            }
            Request::Revert(opts) => format!("{HP_CMD_REVERT}{}\n", opts.words()).into_bytes(),
            Request::List => format!("{HP_CMD_LIST}\n").into_bytes(),
        }
    }

    fn options(&self) -> Option<&Options> {
        match self {
            Request::Apply { opts, .. } | Request::Revert(opts) => Some(opts),
            Request::List => None,
        }
    }
}

/// A thread's registers as the client sends them (DWARF order, see the
/// module doc; 16 is rip).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadRegs {
    pub tid: u32,
    pub regs: [u64; 17],
}

/// One direct branch to a replaced function, found by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteLine {
    /// Runtime address of the instruction.
    pub addr: u64,
    /// Index of the replaced function it targets (the `F` lines' order).
    pub func: u32,
    /// The instruction's bytes as the client read them.
    pub bytes: Vec<u8>,
}

/// What the loader asks for in `TARGETS`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Targets {
    /// Runtime entries of the replaced functions.
    pub funcs: Vec<u64>,
    /// Code ranges `[lo, hi)` of earlier patches to search too.
    pub code: Vec<(u64, u64)>,
    /// Runtime address minus link-time address of the object the
    /// functions are in (the executable, or the library a patch is for).
    pub bias: u64,
}

/// The client's side of the conversation (see the module doc).
pub trait Helper {
    /// Finds the call sites of `targets`.
    fn call_sites(&mut self, targets: &Targets) -> Result<Vec<SiteLine>, String>;
    /// Stops every thread but `listener`; `Err` answers `NOSTOP`.
    fn stop(&mut self, listener: u32) -> Result<Vec<ThreadRegs>, String>;
    /// Lets every stopped thread go.
    fn resume(&mut self);
}

/// A client that can do nothing: answers `NOSTOP` and no sites.
pub struct NoHelper;

impl Helper for NoHelper {
    fn call_sites(&mut self, _: &Targets) -> Result<Vec<SiteLine>, String> {
        Ok(Vec::new())
    }
    fn stop(&mut self, _: u32) -> Result<Vec<ThreadRegs>, String> {
        Err("this client does not stop threads".into())
    }
    fn resume(&mut self) {}
}

/// A parsed reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub ok: bool,
    /// First line without the `OK`/`ERR` word (may be empty for `OK`).
    pub message: String,
    /// The lines after the first.
    pub details: Vec<String>,
}

impl Reply {
    /// Parses a complete reply (everything up to EOF).
    pub fn parse(text: &str) -> Option<Reply> {
        let mut lines = text.lines();
        let first = lines.next()?;
        let (word, rest) = match first.split_once(' ') {
            Some((w, r)) => (w, r),
            None => (first, ""),
        };
        let ok = match word {
            HP_REPLY_OK => true,
            HP_REPLY_ERR => false,
            _ => return None,
        };
        Some(Reply {
            ok,
            message: rest.to_string(),
            details: lines.map(str::to_string).collect(),
        })
    }
}

impl Reply {
    /// The patch id of a successful REVERT's `reverted <id> ...` line.
    pub fn reverted_id(&self) -> Option<&str> {
        self.message.strip_prefix("reverted ")?.split(' ').next()
    }
}

/// One function of a LIST line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFunction {
    pub name: String,
    /// Call sites redirected, for a patch applied with call sites.
    pub call_sites: Option<usize>,
}

/// One LIST line: a patch and its functions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedPatch {
    pub id: String,
    pub functions: Vec<ListedFunction>,
}

/// Parses `<id> <function>[#<sites>] ...`.
pub fn parse_list_line(line: &str) -> Option<ListedPatch> {
    let mut words = line.split_whitespace();
    let id = words.next()?.to_string();
    let functions = words
        .map(|w| match w.rsplit_once(HP_LIST_SITES_SEP) {
            Some((name, n)) if n.parse::<usize>().is_ok() => ListedFunction {
                name: name.to_string(),
                call_sites: n.parse().ok(),
            },
            _ => ListedFunction {
                name: w.to_string(),
                call_sites: None,
            },
        })
        .collect();
    Some(ListedPatch { id, functions })
}

/// Why a request could not be carried out (the loader's own `ERR` replies are
/// a successful exchange: they come back as `Reply { ok: false, .. }`).
#[derive(Debug)]
pub enum ClientError {
    /// Nothing listens on the process's socket.
    NoLoader(io::Error),
    /// The connection broke or timed out.
    Io(io::Error),
    /// The loader answered something that is not a reply.
    BadReply(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::NoLoader(e) => write!(f, "no loader listening: {e}"),
            ClientError::Io(e) => write!(f, "connection to the loader failed: {e}"),
            ClientError::BadReply(s) => write!(f, "unexpected reply from the loader: {s:?}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// Connects to the loader inside `pid`, sends `req` and returns its reply.
/// `timeout` bounds every read and write (an apply stops all threads, which
/// can take up to a few seconds on a busy process).
pub fn send(pid: u32, req: &Request, timeout: Duration) -> Result<Reply, ClientError> {
    converse(pid, req, timeout, &mut NoHelper)
}

/// Like [`send`], answering the loader's questions through `helper`.
pub fn converse(
    pid: u32,
    req: &Request,
    timeout: Duration,
    helper: &mut dyn Helper,
) -> Result<Reply, ClientError> {
    let addr =
        SocketAddr::from_abstract_name(socket_name(pid).as_bytes()).map_err(ClientError::Io)?;
    let mut stream = UnixStream::connect_addr(&addr).map_err(ClientError::NoLoader)?;
    let wait = req.options().map_or(Duration::ZERO, Options::wait);
    stream
        .set_read_timeout(Some(timeout + wait))
        .map_err(ClientError::Io)?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(ClientError::Io)?;
    stream.write_all(&req.encode()).map_err(ClientError::Io)?;
    stream.flush().map_err(ClientError::Io)?;
    let mut conv = Conversation {
        reader: BufReader::new(stream.try_clone().map_err(ClientError::Io)?),
        writer: stream,
    };
    let result = conv.run(helper);
    helper.resume(); // never leave threads stopped, whatever happened
    result
}

struct Conversation {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Conversation {
    /// The next line. Read as bytes: an error reply may quote a symbol
    /// name from a hostile patch that is not UTF-8.
    fn line(&mut self) -> Result<String, ClientError> {
        let mut line = Vec::new();
        let n = self
            .reader
            .read_until(b'\n', &mut line)
            .map_err(ClientError::Io)?;
        if n == 0 {
            return Err(ClientError::BadReply(
                "connection closed without a reply".into(),
            ));
        }
        let text = String::from_utf8_lossy(&line);
        Ok(text.trim_end_matches(['\n', '\r']).to_string())
    }

    fn answer(&mut self, text: &str) -> Result<(), ClientError> {
        self.writer
            .write_all(text.as_bytes())
            .map_err(ClientError::Io)
    }

    /// Answers questions until the reply's first line comes.
    fn run(&mut self, helper: &mut dyn Helper) -> Result<Reply, ClientError> {
        loop {
            let line = self.line()?;
            let (word, rest) = line.split_once(' ').unwrap_or((&line, ""));
            match word {
                HP_MSG_TARGETS => {
                    let targets = self.read_targets(rest)?;
                    let sites = helper.call_sites(&targets).unwrap_or_default();
                    self.answer(&encode_sites(&sites))?;
                }
                HP_MSG_STOP => {
                    let listener = rest.trim().parse().map_err(|_| bad_line(&line))?;
                    let text = match helper.stop(listener) {
                        Ok(threads) => encode_regs(&threads),
                        Err(why) => format!("{HP_MSG_NOSTOP} {}\n", why.replace('\n', " ")),
                    };
                    self.answer(&text)?;
                }
                HP_MSG_RESUME => {
                    helper.resume();
                    self.answer(&format!("{HP_MSG_RESUMED}\n"))?;
                }
                _ => return self.reply(line),
            }
        }
    }

    fn read_targets(&mut self, header: &str) -> Result<Targets, ClientError> {
        let w: Vec<&str> = header.split_whitespace().collect();
        let (Some(nf), Some(nc), Some(bias)) = (
            w.first().and_then(|x| x.parse::<usize>().ok()),
            w.get(1).and_then(|x| x.parse::<usize>().ok()),
            w.get(2).and_then(|x| u64::from_str_radix(x, 16).ok()),
        ) else {
            return Err(bad_line(header));
        };
        let mut t = Targets {
            bias,
            ..Targets::default()
        };
        for _ in 0..nf {
            let l = self.line()?;
            let a = l
                .strip_prefix("F ")
                .and_then(|x| u64::from_str_radix(x, 16).ok());
            t.funcs.push(a.ok_or_else(|| bad_line(&l))?);
        }
        for _ in 0..nc {
            let l = self.line()?;
            let r = l
                .strip_prefix("C ")
                .and_then(|x| x.split_once(' '))
                .and_then(|(a, b)| {
                    Some((
                        u64::from_str_radix(a, 16).ok()?,
                        u64::from_str_radix(b, 16).ok()?,
                    ))
                });
            t.code.push(r.ok_or_else(|| bad_line(&l))?);
        }
        Ok(t)
    }

    fn reply(&mut self, first: String) -> Result<Reply, ClientError> {
        let mut rest = Vec::new();
        self.reader
            .read_to_end(&mut rest)
            .map_err(ClientError::Io)?;
        let text = format!("{first}\n{}", String::from_utf8_lossy(&rest));
        Reply::parse(&text).ok_or(ClientError::BadReply(text))
    }
}

fn bad_line(line: &str) -> ClientError {
    ClientError::BadReply(format!("malformed loader message {line:?}"))
}

fn encode_sites(sites: &[SiteLine]) -> String {
    let mut out = format!("{HP_MSG_SITES} {}\n", sites.len());
    for s in sites {
        let hex: String = s.bytes.iter().map(|b| format!("{b:02x}")).collect();
        out += &format!("{:x} {} {hex}\n", s.addr, s.func);
    }
    out
}

fn encode_regs(threads: &[ThreadRegs]) -> String {
    let mut out = format!("{HP_MSG_REGS} {}\n", threads.len());
    for t in threads {
        out += &t.tid.to_string();
        for r in t.regs {
            out += &format!(" {r:x}");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse() {
        let r = Reply::parse("OK\nfix-1 compute\nfix-2 main.c::helper\n").unwrap();
        assert!(r.ok);
        assert_eq!(r.message, "");
        assert_eq!(r.details, vec!["fix-1 compute", "fix-2 main.c::helper"]);
        let r = Reply::parse("ERR no patch applied\n").unwrap();
        assert!(!r.ok);
        assert_eq!(r.message, "no patch applied");
        assert!(Reply::parse("HELLO\n").is_none());
        assert!(Reply::parse("").is_none());
    }

    #[test]
    fn requests_encode() {
        let lazy = Options {
            mode: Mode::Lazy,
            ..Options::default()
        };
        let apply = Request::Apply {
            patch: vec![1, 2],
            opts: lazy,
        };
        assert_eq!(apply.encode(), b"APPLY 2 LAZY\n\x01\x02");
        assert_eq!(
            Request::Revert(Options::default()).encode(),
            b"REVERT CONSISTENT 5000\n"
        );
        assert_eq!(Request::List.encode(), b"LIST\n");
        let all = Options {
            mode: Mode::Consistent { timeout_ms: 250 },
            call_sites: true,
            client_stop: true,
        };
        assert_eq!(
            Request::Apply {
                patch: vec![7],
                opts: all
            }
            .encode(),
            b"APPLY 1 CONSISTENT 250 CALLSITES CLIENTSTOP\n\x07"
        );
    }

    #[test]
    fn list_lines_parse() {
        let p = parse_list_line("fix-1 compute src/a.c::helper#3").unwrap();
        assert_eq!(p.id, "fix-1");
        assert_eq!(p.functions[0].call_sites, None);
        assert_eq!(p.functions[1].name, "src/a.c::helper");
        assert_eq!(p.functions[1].call_sites, Some(3));
        assert!(parse_list_line("").is_none());
    }

    #[test]
    fn answers_encode() {
        let regs = ThreadRegs {
            tid: 42,
            regs: [0xab; 17],
        };
        let text = encode_regs(&[regs]);
        assert!(text.starts_with("REGS 1\n42 ab ab "), "{text}");
        assert_eq!(text.lines().nth(1).unwrap().split(' ').count(), 18);
        let site = SiteLine {
            addr: 0x1234,
            func: 3,
            bytes: vec![0xe8, 1, 2, 3, 4],
        };
        assert_eq!(encode_sites(&[site]), "SITES 1\n1234 3 e801020304\n");
    }
}
