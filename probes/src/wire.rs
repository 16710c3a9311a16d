//! The probe's own RESP2 client: exactly what a probe sends (`AUTH`, then `PING`, `SET … EX
//! 60` and `GET`, pipelined in one write) and the replies it can get, over any stream.
//!
//! A general client (redis-rs's multiplexed connection) costs a driver task, channels and
//! several allocations per command; a probe that keeps its connection and runs every second on
//! every path of 100 watches spent most of its CPU there. This one reuses its buffers, so a
//! round on a kept connection allocates nothing, and it reads at most [`MAX_REPLY_BYTES`] a
//! round: a reply announced or found longer fails as "too large" without being read.

use std::io;
use std::io::Write as _;
use std::ops::Range;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// The most a connection reads from the server in one round, in bytes.
///
/// A healthy exchange is a few dozen bytes (`+PONG`, `+OK`, a 32-byte value). A server that
/// answers with megabytes (a broken proxy, a key overwritten with a blob, a hostile endpoint)
/// must cost the agent no more than this: without a bound, a 400 MiB `GET` reply took the
/// agent to 1 GB of RSS.
pub(crate) const MAX_REPLY_BYTES: usize = 64 * 1024;

/// How much one read asks for: a healthy round's replies are about 60 bytes, and a large one
/// is refused at the cap anyway. Kept small because every kept connection holds a buffer of
/// this size.
const READ_CHUNK: usize = 512;

/// A stream a probe can talk over: TCP, or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One reply, its bytes a range of the connection's read buffer (valid until the next read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// `+text`.
    Simple(Range<usize>),
    /// `-CODE detail`.
    Error(Range<usize>),
    /// `:n`.
    Int(i64),
    /// `$n` and its bytes.
    Bulk(Range<usize>),
    /// `$-1` (or `*-1`).
    Nil,
    /// `*n`: never a reply to what a probe sends; its elements are left unread, since the
    /// connection is dropped after it.
    Array,
    /// A type byte RESP2 does not have (a RESP3 type, or garbage).
    Other(u8),
}

/// Why no reply could be read.
#[derive(Debug)]
pub(crate) enum WireError {
    /// Reading or writing failed.
    Io(io::Error),
    /// The server closed the connection.
    Closed,
    /// The reply is longer than [`MAX_REPLY_BYTES`] (announced, or read so far).
    TooLarge,
    /// The bytes are not RESP.
    Unparseable(&'static str),
}

/// A connection to the cache, with the buffers it reuses.
pub(crate) struct Wire {
    io: Box<dyn Io>,
    /// The commands of the next send.
    out: Vec<u8>,
    /// Bytes read and not yet consumed start at `start`.
    buf: Vec<u8>,
    start: usize,
    /// Bytes read since [`Wire::start_round`].
    read: usize,
    /// The probe key and value of the current round.
    pub(crate) key: String,
    pub(crate) value: String,
}

impl Wire {
    pub(crate) fn new(io: impl Io + 'static) -> Wire {
        Wire {
            io: Box::new(io),
            out: Vec::with_capacity(256),
            buf: Vec::with_capacity(READ_CHUNK),
            start: 0,
            read: 0,
            key: String::with_capacity(96),
            value: String::with_capacity(32),
        }
    }

    /// A new round: its replies may again take [`MAX_REPLY_BYTES`].
    pub(crate) fn start_round(&mut self) {
        self.read = 0;
    }

    /// Queues one command for the next [`Wire::send`].
    pub(crate) fn command(&mut self, args: &[&[u8]]) {
        let _ = write!(self.out, "*{}\r\n", args.len());
        for arg in args {
            let _ = write!(self.out, "${}\r\n", arg.len());
            self.out.extend_from_slice(arg);
            self.out.extend_from_slice(b"\r\n");
        }
    }

    /// Writes every queued command at once.
    pub(crate) async fn send(&mut self) -> Result<(), WireError> {
        let written = async {
            self.io.write_all(&self.out).await?;
            self.io.flush().await
        }
        .await;
        // The commands can hold a secret (`AUTH`): never keep them past the write.
        self.out.fill(0);
        self.out.clear();
        written.map_err(WireError::Io)
    }

    /// The bytes of a frame's range.
    pub(crate) fn bytes(&self, range: &Range<usize>) -> &[u8] {
        &self.buf[range.clone()]
    }

    /// The next reply.
    pub(crate) async fn frame(&mut self) -> Result<Frame, WireError> {
        loop {
            match parse(&self.buf[self.start..]) {
                Parsed::Complete(frame, used) => {
                    let frame = shift(frame, self.start);
                    self.start += used;
                    return Ok(frame);
                }
                Parsed::Invalid(why) => return Err(WireError::Unparseable(why)),
                Parsed::TooLarge => return Err(WireError::TooLarge),
                Parsed::Incomplete => {}
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            if self.read > MAX_REPLY_BYTES {
                return Err(WireError::TooLarge);
            }
            // One byte past the cap is enough to know it is exceeded: a single read (of a
            // socket buffer several MiB deep) never brings in more.
            let want = READ_CHUNK.min(MAX_REPLY_BYTES + 1 - self.read);
            let len = self.buf.len();
            self.buf.resize(len + want, 0);
            let n = match self.io.read(&mut self.buf[len..]).await {
                Ok(n) => n,
                Err(err) => {
                    self.buf.truncate(len);
                    return Err(WireError::Io(err));
                }
            };
            self.buf.truncate(len + n);
            if n == 0 {
                return Err(WireError::Closed);
            }
            self.read += n;
        }
    }
}

enum Parsed {
    Complete(Frame, usize),
    Incomplete,
    TooLarge,
    Invalid(&'static str),
}

/// `frame` with its ranges moved `by` bytes on.
fn shift(frame: Frame, by: usize) -> Frame {
    let moved = |r: Range<usize>| r.start + by..r.end + by;
    match frame {
        Frame::Simple(r) => Frame::Simple(moved(r)),
        Frame::Error(r) => Frame::Error(moved(r)),
        Frame::Bulk(r) => Frame::Bulk(moved(r)),
        other => other,
    }
}

/// One reply at the start of `b`, with how many bytes it takes.
fn parse(b: &[u8]) -> Parsed {
    let Some(&tag) = b.first() else {
        return Parsed::Incomplete;
    };
    let Some(end) = b.windows(2).position(|w| w == b"\r\n") else {
        return Parsed::Incomplete;
    };
    let line = 1..end;
    let next = end + 2;
    match tag {
        b'+' => Parsed::Complete(Frame::Simple(line), next),
        b'-' => Parsed::Complete(Frame::Error(line), next),
        b':' => match integer(&b[line]) {
            Some(n) => Parsed::Complete(Frame::Int(n), next),
            None => Parsed::Invalid("an integer reply that is not a number"),
        },
        b'$' => match integer(&b[line]) {
            Some(-1) => Parsed::Complete(Frame::Nil, next),
            Some(len) if len >= 0 => {
                let len = len as usize;
                if len > MAX_REPLY_BYTES {
                    return Parsed::TooLarge;
                }
                if b.len() < next + len + 2 {
                    return Parsed::Incomplete;
                }
                if &b[next + len..next + len + 2] != b"\r\n" {
                    return Parsed::Invalid("a bulk string longer than it announced");
                }
                Parsed::Complete(Frame::Bulk(next..next + len), next + len + 2)
            }
            _ => Parsed::Invalid("a bulk string with an invalid length"),
        },
        b'*' => match integer(&b[line]) {
            Some(-1) => Parsed::Complete(Frame::Nil, next),
            Some(_) => Parsed::Complete(Frame::Array, next),
            None => Parsed::Invalid("an array with an invalid length"),
        },
        other => Parsed::Complete(Frame::Other(other), next),
    }
}

fn integer(digits: &[u8]) -> Option<i64> {
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(b: &[u8]) -> (Frame, usize) {
        match parse(b) {
            Parsed::Complete(frame, used) => (frame, used),
            _ => panic!("{b:?} did not parse whole"),
        }
    }

    #[test]
    fn replies_parse_whole_or_not_at_all() {
        assert_eq!(complete(b"+PONG\r\n"), (Frame::Simple(1..5), 7));
        assert_eq!(complete(b"-ERR no\r\n+OK\r\n"), (Frame::Error(1..7), 9));
        assert_eq!(complete(b":42\r\n"), (Frame::Int(42), 5));
        assert_eq!(complete(b"$3\r\nabc\r\n"), (Frame::Bulk(4..7), 9));
        assert_eq!(complete(b"$-1\r\n"), (Frame::Nil, 5));
        assert_eq!(complete(b"*2\r\n$1\r\na\r\n").0, Frame::Array);
        assert_eq!(complete(b"%1\r\n").0, Frame::Other(b'%'));
        for partial in [&b""[..], b"+PON", b"$3\r\nab", b"$3\r\nabc\r"] {
            assert!(matches!(parse(partial), Parsed::Incomplete), "{partial:?}");
        }
        assert!(matches!(parse(b"$3\r\nabcd\r\n"), Parsed::Invalid(_)));
        assert!(matches!(parse(b"$x\r\n"), Parsed::Invalid(_)));
        assert!(matches!(parse(b"$99999999\r\n"), Parsed::TooLarge));
    }

    #[tokio::test]
    async fn commands_are_sent_in_one_write_and_replies_read_in_order() {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let mut wire = Wire::new(client);
        wire.command(&[b"PING"]);
        wire.command(&[b"SET", b"k", b"v", b"EX", b"60"]);
        wire.send().await.unwrap();
        let mut got = vec![0u8; 64];
        let n = server.read(&mut got).await.unwrap();
        assert_eq!(
            &got[..n],
            b"*1\r\n$4\r\nPING\r\n*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\nEX\r\n$2\r\n60\r\n"
        );
        server.write_all(b"+PONG\r\n+O").await.unwrap();
        let pong = wire.frame().await.unwrap();
        assert_eq!(pong, Frame::Simple(1..5));
        assert_eq!(wire.bytes(&(1..5)), b"PONG");
        server.write_all(b"K\r\n").await.unwrap();
        let ok = wire.frame().await.unwrap();
        let Frame::Simple(range) = ok else {
            panic!("{ok:?}")
        };
        assert_eq!(wire.bytes(&range), b"OK");
        drop(server);
        assert!(matches!(wire.frame().await, Err(WireError::Closed)));
    }

    #[tokio::test]
    async fn a_round_reads_at_most_the_cap_and_the_next_round_may_read_again() {
        let (client, mut server) = tokio::io::duplex(256 * 1024);
        let mut wire = Wire::new(client);
        // A simple string with no end: read up to one byte past the cap, then refused.
        server.write_all(b"+").await.unwrap();
        server.write_all(&vec![b'x'; 200 * 1024]).await.unwrap();
        assert!(matches!(wire.frame().await, Err(WireError::TooLarge)));
        assert_eq!(wire.read, MAX_REPLY_BYTES + 1, "taken from the stream");

        let (client, mut server) = tokio::io::duplex(256 * 1024);
        let mut wire = Wire::new(client);
        let big = format!("${}\r\n{}\r\n", 60 * 1024, "y".repeat(60 * 1024));
        server.write_all(big.as_bytes()).await.unwrap();
        assert!(matches!(wire.frame().await, Ok(Frame::Bulk(_))));
        wire.start_round();
        server.write_all(big.as_bytes()).await.unwrap();
        assert!(
            matches!(wire.frame().await, Ok(Frame::Bulk(_))),
            "the cap is per round"
        );
    }
}
