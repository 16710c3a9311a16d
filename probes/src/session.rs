//! A short connection to a cache for a few commands of the agent's own, beside the probes: the
//! failback's emptying of the old primary (`DBSIZE`, `FLUSHALL ASYNC`) before it takes traffic
//! again. It opens as the direct path does (resolve the endpoint, connect, TLS, `AUTH`), every
//! step within the probe timeout, and then sends one command at a time, each bounded by the
//! caller. What to send, and what a reply means, is the caller's: this crate only carries it.

use std::time::Duration;

use tokio::time::timeout;

use crate::error::server_text;
use crate::wire::{Frame, Wire, WireError};

/// One reply to a [`Session`] command, its text cut and escaped as every server text is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+text`, e.g. `OK`.
    Status(String),
    /// `:n`.
    Integer(i64),
    /// `-CODE detail`: the server refused the command.
    Error {
        /// The error code, its first word (`NOPERM`, `ERR`, ...).
        code: String,
        /// The whole reply.
        text: String,
    },
    /// Anything else (a string, a nil, an array): its type.
    Other(&'static str),
}

/// Why a [`Session`] command got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{command}: {message}")]
pub struct CommandError {
    /// The command's name (never its arguments).
    pub command: String,
    /// What happened.
    pub message: String,
}

/// A connection opened by [`crate::Prober::session`]. Dropping it closes the connection.
pub struct Session {
    pub(crate) wire: Wire,
    /// An earlier command failed, or left part of its reply unread: the connection can no
    /// longer pair a reply with its command.
    pub(crate) broken: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Sends `args` and reads the reply, within `bound`.
    pub async fn command(&mut self, args: &[&str], bound: Duration) -> Result<Reply, CommandError> {
        let name = args
            .first()
            .copied()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let failed = |message: String| CommandError {
            command: name.clone(),
            message,
        };
        if self.broken {
            return Err(failed(
                "not sent: an earlier command on this connection failed".to_owned(),
            ));
        }
        self.broken = true;
        let wire = &mut self.wire;
        wire.start_round();
        let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        wire.command(&bytes);
        let exchange = async {
            wire.send().await?;
            let frame = wire.frame().await?;
            Ok::<_, WireError>(match frame {
                Frame::Simple(r) => Reply::Status(server_text(wire.bytes(&r))),
                Frame::Int(n) => Reply::Integer(n),
                Frame::Error(r) => {
                    let text = server_text(wire.bytes(&r));
                    let code = text.split(' ').next().unwrap_or_default().to_owned();
                    Reply::Error { code, text }
                }
                Frame::Bulk(_) => Reply::Other("a bulk string"),
                Frame::Nil => Reply::Other("nil"),
                Frame::Array => Reply::Other("an array"),
                Frame::Other(_) => Reply::Other("a RESP3 value"),
            })
        };
        let reply = match timeout(bound, exchange).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return Err(failed(describe(e))),
            Err(_) => {
                return Err(failed(format!("no answer within {}", humane(bound))));
            }
        };
        // An array's elements are left unread: the next reply could not be told from them.
        self.broken = matches!(reply, Reply::Other("an array"));
        Ok(reply)
    }
}

fn describe(e: WireError) -> String {
    match e {
        WireError::Io(err) => format!(
            "connection lost: {}",
            server_text(err.to_string().as_bytes())
        ),
        WireError::Closed => "connection lost: the server closed the connection".to_owned(),
        WireError::TooLarge => "the reply exceeded 64 KiB".to_owned(),
        WireError::Unparseable(what) => format!("unreadable reply: {what}"),
    }
}

fn humane(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    fn session(io: tokio::io::DuplexStream) -> Session {
        Session {
            wire: Wire::new(io),
            broken: false,
        }
    }

    #[tokio::test]
    async fn each_command_gets_its_own_reply_and_a_failure_ends_the_session() {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let mut s = session(client);
        let server_side = tokio::spawn(async move {
            let mut got = vec![0u8; 256];
            let n = server.read(&mut got).await.unwrap();
            assert_eq!(&got[..n], b"*1\r\n$6\r\nDBSIZE\r\n");
            server.write_all(b":12\r\n").await.unwrap();
            let n = server.read(&mut got).await.unwrap();
            assert_eq!(&got[..n], b"*2\r\n$8\r\nFLUSHALL\r\n$5\r\nASYNC\r\n");
            server
                .write_all(
                    b"-NOPERM User probe has no permissions to run the 'flushall' command\r\n",
                )
                .await
                .unwrap();
            let n = server.read(&mut got).await.unwrap();
            assert_eq!(&got[..n], b"*1\r\n$4\r\nPING\r\n");
            // No answer: the caller's bound ends it.
            server
        });
        let bound = Duration::from_secs(5);
        assert_eq!(s.command(&["DBSIZE"], bound).await, Ok(Reply::Integer(12)));
        let refused = s.command(&["FLUSHALL", "ASYNC"], bound).await.unwrap();
        assert_eq!(
            refused,
            Reply::Error {
                code: "NOPERM".into(),
                text: "NOPERM User probe has no permissions to run the 'flushall' command".into()
            }
        );
        let hung = s
            .command(&["PING"], Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(hung.command, "PING");
        assert!(hung.message.contains("no answer within"), "{hung}");
        let after = s.command(&["DBSIZE"], bound).await.unwrap_err();
        assert!(after.message.contains("not sent"), "{after}");
        drop(server_side.await.unwrap());
    }
}
