//! Just enough RESP2 to talk to Sentinel and its master: send a command, read one reply,
//! read pub/sub messages. The redis crate is only a dev-dependency of the lab, and these few
//! replies do not justify making it a real one.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A reply is never this big here (`SENTINEL MASTERS` for 100 masters is ~100 KiB); anything
/// bigger is a protocol error, not a reason to grow the buffer forever.
const MAX_REPLY: usize = 8 << 20;

/// One RESP2 value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// Bulk or simple strings as text.
    pub fn text(&self) -> Option<String> {
        match self {
            Resp::Simple(s) => Some(s.clone()),
            Resp::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    pub fn items(&self) -> &[Resp] {
        match self {
            Resp::Array(Some(items)) => items,
            _ => &[],
        }
    }

    /// A flat `[key, value, key, value, ...]` array (what `SENTINEL MASTER` returns): the value
    /// for `key`.
    pub fn field(&self, key: &str) -> Option<String> {
        self.items()
            .chunks(2)
            .find(|kv| kv[0].text().as_deref() == Some(key))
            .and_then(|kv| kv.get(1)?.text())
    }
}

/// One connection; every read and write is bounded by the caller's deadline.
pub struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
}

impl Connection {
    pub async fn connect(addr: SocketAddr, deadline: Instant) -> io::Result<Connection> {
        let stream = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
            .await
            .map_err(|_| timed_out("connect"))??;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            buf: Vec::new(),
        })
    }

    pub async fn send(&mut self, parts: &[&str], deadline: Instant) -> io::Result<()> {
        let mut out = format!("*{}\r\n", parts.len()).into_bytes();
        for part in parts {
            out.extend_from_slice(format!("${}\r\n{part}\r\n", part.len()).as_bytes());
        }
        tokio::time::timeout_at(deadline, self.stream.write_all(&out))
            .await
            .map_err(|_| timed_out("write"))?
    }

    /// The next value on the connection (a reply, or a pub/sub message).
    pub async fn read(&mut self, deadline: Instant) -> io::Result<Resp> {
        loop {
            if let Some((value, used)) = parse(&self.buf)? {
                self.buf.drain(..used);
                return Ok(value);
            }
            if self.buf.len() > MAX_REPLY {
                return Err(io::Error::other("reply larger than 8 MiB"));
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .map_err(|_| timed_out("read"))??;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// A command and its reply; an error reply is an error.
    pub async fn call(&mut self, parts: &[&str], deadline: Instant) -> io::Result<Resp> {
        self.send(parts, deadline).await?;
        match self.read(deadline).await? {
            Resp::Error(e) => Err(io::Error::other(format!("{}: {e}", parts.join(" ")))),
            reply => Ok(reply),
        }
    }
}

/// Parses one value from the front of `buf`: `None` until it is complete.
fn parse(buf: &[u8]) -> io::Result<Option<(Resp, usize)>> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    if end == 0 {
        return Err(bad("empty RESP line"));
    }
    let line = std::str::from_utf8(&buf[1..end]).map_err(|_| bad("non-UTF-8 RESP header"))?;
    let after = end + 2;
    let int = || line.parse::<i64>().map_err(|_| bad("bad RESP length"));
    Ok(match buf[0] {
        b'+' => Some((Resp::Simple(line.to_string()), after)),
        b'-' => Some((Resp::Error(line.to_string()), after)),
        b':' => Some((Resp::Int(int()?), after)),
        b'$' => {
            let len = int()?;
            if len < 0 {
                return Ok(Some((Resp::Bulk(None), after)));
            }
            let len = len as usize;
            if buf.len() < after + len + 2 {
                return Ok(None);
            }
            Some((
                Resp::Bulk(Some(buf[after..after + len].to_vec())),
                after + len + 2,
            ))
        }
        b'*' => {
            let len = int()?;
            if len < 0 {
                return Ok(Some((Resp::Array(None), after)));
            }
            let mut items = Vec::with_capacity((len as usize).min(1024));
            let mut at = after;
            for _ in 0..len {
                match parse(&buf[at..])? {
                    Some((item, used)) => {
                        items.push(item);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            Some((Resp::Array(Some(items)), at))
        }
        _ => return Err(bad("unknown RESP type byte")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pubsub_messages_and_waits_for_the_rest() {
        let msg =
            b"*3\r\n$7\r\nmessage\r\n$6\r\n+sdown\r\n$24\r\nmaster m0 127.0.0.1 6379\r\n:1\r\n";
        let (value, used) = parse(msg).unwrap().unwrap();
        assert_eq!(used, msg.len() - 4);
        let items = value.items();
        assert_eq!(items[1].text().as_deref(), Some("+sdown"));
        assert_eq!(items[2].text().as_deref(), Some("master m0 127.0.0.1 6379"));
        for cut in 0..used {
            assert!(parse(&msg[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        assert_eq!(parse(b":1\r\n").unwrap(), Some((Resp::Int(1), 4)));
        assert!(parse(b"?x\r\n").is_err());
    }

    #[test]
    fn flat_maps_give_fields() {
        let (value, _) = parse(b"*4\r\n$5\r\nflags\r\n$6\r\nmaster\r\n$4\r\nname\r\n$2\r\nm0\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(value.field("flags").as_deref(), Some("master"));
        assert_eq!(value.field("name").as_deref(), Some("m0"));
        assert_eq!(value.field("port"), None);
    }
}
