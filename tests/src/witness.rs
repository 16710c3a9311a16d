//! The lab's witness: a TCP port that stands for "the outside world the agent must reach
//! before it may judge a region dead". Until the lab emulates the AWS API, the lab's
//! `agent.toml` points a `kind = "tcp"` witness at it; `witness-down` closes the port (the
//! agent's connects are refused, as on a host that lost its network) and `witness-up` reopens
//! it on the same address.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Mutex;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::error::LabError;

/// The witness listener and its accept task.
pub(crate) struct WitnessServer {
    addr: SocketAddr,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl WitnessServer {
    /// Binds 127.0.0.1:0 and starts accepting.
    pub(crate) async fn start() -> Result<Self, LabError> {
        let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let listener = TcpListener::bind(any)
            .await
            .map_err(|source| LabError::Bind {
                what: "the witness",
                addr: any,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| LabError::Bind {
            what: "the witness",
            addr: any,
            source,
        })?;
        Ok(WitnessServer {
            addr,
            task: Mutex::new(Some(tokio::spawn(accept(listener)))),
        })
    }

    /// Where the witness listens (while up).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the port: connects are refused.
    pub(crate) fn down(&self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }

    /// Reopens the port on the same address.
    pub(crate) async fn up(&self) -> Result<(), LabError> {
        if self
            .task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return Ok(());
        }
        let listener = TcpListener::bind(self.addr)
            .await
            .map_err(|source| LabError::Bind {
                what: "the witness",
                addr: self.addr,
                source,
            })?;
        *self.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(tokio::spawn(accept(listener)));
        Ok(())
    }
}

impl Drop for WitnessServer {
    fn drop(&mut self) {
        self.down();
    }
}

/// Accepts and closes: a successful connect is all the agent's witness asks for.
async fn accept(listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        drop(stream);
    }
}
