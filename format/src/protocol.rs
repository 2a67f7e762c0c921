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
//! root; anyone else gets an `ERR` reply and the connection is closed.
//!
//! # Requests (one per connection)
//! * `APPLY <nbytes>\n` followed by exactly `nbytes` bytes: a patch object
//!   (patch format v1, see [`crate::format`]). `nbytes` ≤ [`HP_MAX_PATCH_SIZE`].
//!   Optionally `APPLY <nbytes> CONSISTENT [<timeout_ms>]\n`: switch only
//!   when no stopped thread has a frame (its pc or a return address) in any
//!   replaced function; the loader resumes, waits and stops the threads again
//!   until that holds, up to `timeout_ms` (default
//!   [`HP_DEFAULT_CONSISTENT_TIMEOUT_MS`], at most
//!   [`HP_MAX_CONSISTENT_TIMEOUT_MS`]), then fails naming the function and
//!   the thread.
//! * `REVERT\n`: undo the most recently applied patch (restore the entry
//!   bytes; the patch's code stays mapped). `REVERT CONSISTENT [<timeout_ms>]\n`
//!   waits until no thread has a frame in the patch's code, then restores
//!   and unmaps it.
//! * `LIST\n`: list applied patches, oldest first.
//!
//! The request line is at most [`HP_MAX_REQUEST_LINE`] bytes including the
//! newline. The loader reads with a per-read timeout of [`HP_IO_TIMEOUT_MS`]
//! and an overall deadline of [`HP_REQUEST_DEADLINE_MS`], so a stalled client
//! cannot block the listener forever.
//!
//! # Reply
//! The first line is `OK` or `OK <text>` on success, `ERR <one-line reason>`
//! on failure. Optional detail lines follow. The loader then closes the
//! connection (end of reply = EOF).
//!
//! * APPLY → `OK applied <id>: <n> functions` (plus
//!   ` (consistent: no thread was running them)`); a plain APPLY adds one
//!   detail line per thread still running a replaced function:
//!   `thread <tid> is running old <f>(); it finishes in the old code`, and
//!   `thread <tid>: stack walk stopped early (...)` when a stack could not be
//!   walked to its end.
//! * REVERT → `OK reverted <id>` or `ERR no patch applied`; detail lines as
//!   for APPLY (`thread <tid> is running patch <id>'s <f>(); ...`).
//! * LIST → `OK`, then one line per applied patch, oldest first:
//!   `<id> <function> <function> ...` (a static function is written
//!   `<file>::<name>`, see [`crate::format::HP_LOCAL_SEP`]).

use std::io::{self, Read, Write};
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
/// Option word after `APPLY <n>` / `REVERT`: the whole-stack check.
pub const HP_OPT_CONSISTENT: &str = "CONSISTENT";
/// Default wait of a consistent apply/revert, in milliseconds.
pub const HP_DEFAULT_CONSISTENT_TIMEOUT_MS: u32 = 5000;
/// Longest wait a consistent apply/revert may ask for, in milliseconds.
pub const HP_MAX_CONSISTENT_TIMEOUT_MS: u32 = 600000;
pub const HP_REPLY_OK: &str = "OK";
pub const HP_REPLY_ERR: &str = "ERR";

/// The abstract socket name (without the leading NUL) for a process.
pub fn socket_name(pid: u32) -> String {
    format!("{HP_SOCKET_PREFIX}{pid}")
}

/// One request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Apply(Vec<u8>),
    /// Apply only when no thread runs a replaced function (wait up to the ms).
    ApplyConsistent(Vec<u8>, u32),
    Revert,
    /// Revert only when no thread runs the patch's code, then unmap it.
    RevertConsistent(u32),
    List,
}

impl Request {
    /// The bytes sent on the wire.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::Apply(patch) => {
                let mut v = format!("{HP_CMD_APPLY} {}\n", patch.len()).into_bytes();
                v.extend_from_slice(patch);
                v
            }
            Request::ApplyConsistent(patch, ms) => {
                let mut v = format!("{HP_CMD_APPLY} {} {HP_OPT_CONSISTENT} {ms}\n", patch.len())
                    .into_bytes();
                v.extend_from_slice(patch);
                v
            }
            Request::Revert => format!("{HP_CMD_REVERT}\n").into_bytes(),
            Request::RevertConsistent(ms) => {
                format!("{HP_CMD_REVERT} {HP_OPT_CONSISTENT} {ms}\n").into_bytes()
            }
            Request::List => format!("{HP_CMD_LIST}\n").into_bytes(),
        }
    }
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
    let addr =
        SocketAddr::from_abstract_name(socket_name(pid).as_bytes()).map_err(ClientError::Io)?;
    let mut stream = UnixStream::connect_addr(&addr).map_err(ClientError::NoLoader)?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(ClientError::Io)?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(ClientError::Io)?;
    stream.write_all(&req.encode()).map_err(ClientError::Io)?;
    stream.flush().map_err(ClientError::Io)?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).map_err(ClientError::Io)?;
    let text = String::from_utf8_lossy(&buf);
    Reply::parse(&text).ok_or_else(|| ClientError::BadReply(text.into_owned()))
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
        assert_eq!(Request::Apply(vec![1, 2]).encode(), b"APPLY 2\n\x01\x02");
        assert_eq!(Request::Revert.encode(), b"REVERT\n");
        assert_eq!(Request::List.encode(), b"LIST\n");
        assert_eq!(
            Request::ApplyConsistent(vec![7], 5000).encode(),
            b"APPLY 1 CONSISTENT 5000\n\x07"
        );
        assert_eq!(
            Request::RevertConsistent(250).encode(),
            b"REVERT CONSISTENT 250\n"
        );
    }
}
