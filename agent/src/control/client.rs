//! The admin API's client: one bounded HTTP/1.1 exchange per call, as the CLI and the peers
//! use it, over TCP or over the agent's unix socket in `state_dir`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::http::header;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::request::ControlAction;
use super::status::{ControlAnswer, StatusDocument};
use super::token::AdminToken;

/// Where a running agent's admin API is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminEndpoint {
    /// `admin_listen` (or what the agent recorded for port 0).
    Tcp(SocketAddr),
    /// The unix socket in `state_dir` (`admin.sock`), which only the agent's user can open.
    Socket(PathBuf),
}

impl std::fmt::Display for AdminEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminEndpoint::Tcp(address) => write!(f, "{address}"),
            AdminEndpoint::Socket(path) => write!(f, "{}", path.display()),
        }
    }
}

impl AdminEndpoint {
    /// The setting that points the CLI here, for error messages.
    fn setting(&self) -> String {
        match self {
            AdminEndpoint::Tcp(address) => format!("admin_listen = \"{address}\""),
            AdminEndpoint::Socket(path) => format!(
                "state_dir = \"{}\" (its socket; controls = \"socket\")",
                path.parent().unwrap_or(path).display()
            ),
        }
    }
}

/// Why the CLI could not talk to a running agent. Each message names the address and what to
/// check; the source (if any) is printed after it by `{:#}`.
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    /// The method or path could not form a request (a bug in the caller).
    #[error("invalid admin request `{method} {path_and_query}`")]
    InvalidRequest {
        /// The method as given.
        method: String,
        /// The path and query as given.
        path_and_query: String,
        /// What was wrong with them.
        #[source]
        source: hyper::http::Error,
    },
    /// Nothing accepted the connection.
    #[error(
        "cannot connect to the agent's admin server at {admin}: is `valkey-dr run` running \
         with {}?", admin.setting()
    )]
    Connect {
        /// The admin endpoint tried.
        admin: AdminEndpoint,
        /// The connect failure (usually "connection refused").
        #[source]
        source: std::io::Error,
    },
    /// The connection opened but the HTTP exchange failed.
    #[error(
        "the HTTP exchange with {admin} failed: is {} the address of `valkey-dr run`, and not \
         another program?", admin.setting()
    )]
    Http {
        /// The admin endpoint tried.
        admin: AdminEndpoint,
        /// What hyper saw.
        #[source]
        source: hyper::Error,
    },
    /// The answer was larger than the client reads (or broke off mid-body).
    #[error(
        "the answer from {admin} was cut off or larger than {limit} bytes: is {} the address of `valkey-dr run`, and not another program?", admin.setting()
    )]
    TooLarge {
        /// The admin endpoint tried.
        admin: AdminEndpoint,
        /// The most bytes read.
        limit: usize,
    },
    /// No full answer arrived in time.
    #[error(
        "the agent's admin server at {admin} did not answer within {}: is `valkey-dr run` \
         with {} overloaded or stopped (SIGSTOP)? check its logs",
        crate::text::duration(*.timeout), admin.setting()
    )]
    Timeout {
        /// The admin endpoint tried.
        admin: AdminEndpoint,
        /// The bound that expired.
        timeout: Duration,
    },
}

/// The most bytes of an answer the admin client reads: `/status` for hundreds of watches is
/// well under it, and a peer (or a program that is not an agent) cannot make the caller hold
/// more.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// One HTTP/1.1 request to a running agent's admin server over TCP, as the peers send it:
/// [`request_to`] an [`AdminEndpoint::Tcp`].
pub async fn request(
    admin: SocketAddr,
    method: &str,
    path_and_query: &str,
    token: Option<&AdminToken>,
    timeout: Duration,
) -> Result<(u16, String), AdminClientError> {
    request_limited(
        admin,
        method,
        path_and_query,
        token,
        timeout,
        MAX_ANSWER_BYTES,
    )
    .await
}

/// [`request`] reading at most `limit` bytes of the body: the reading stops, and the call
/// fails with [`AdminClientError::TooLarge`], as soon as more arrive. The peers read 4 KiB.
pub async fn request_limited(
    admin: SocketAddr,
    method: &str,
    path_and_query: &str,
    token: Option<&AdminToken>,
    timeout: Duration,
    limit: usize,
) -> Result<(u16, String), AdminClientError> {
    let admin = AdminEndpoint::Tcp(admin);
    send(&admin, method, path_and_query, token, timeout, limit).await
}

/// One HTTP/1.1 request to a running agent's admin server, for the CLI: the status code and
/// the body. A control request needs the owner's `token`. Connecting, sending and reading
/// the whole body are bounded together by `timeout`. One connection per request: the CLI
/// sends one and exits.
pub async fn request_to(
    admin: &AdminEndpoint,
    method: &str,
    path_and_query: &str,
    token: Option<&AdminToken>,
    timeout: Duration,
) -> Result<(u16, String), AdminClientError> {
    send(
        admin,
        method,
        path_and_query,
        token,
        timeout,
        MAX_ANSWER_BYTES,
    )
    .await
}

/// [`request_to`], reading at most `limit` bytes of the body.
async fn send(
    admin: &AdminEndpoint,
    method: &str,
    path_and_query: &str,
    token: Option<&AdminToken>,
    timeout: Duration,
    limit: usize,
) -> Result<(u16, String), AdminClientError> {
    // A socket has no host name; `localhost` is one the server takes for its own.
    let host = match admin {
        AdminEndpoint::Tcp(address) => address.to_string(),
        AdminEndpoint::Socket(_) => "localhost".to_owned(),
    };
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(header::HOST, host);
    if let Some(token) = token {
        req = req.header(header::AUTHORIZATION, token.bearer());
    }
    let req =
        req.body(Empty::<Bytes>::new())
            .map_err(|source| AdminClientError::InvalidRequest {
                method: method.to_owned(),
                path_and_query: path_and_query.to_owned(),
                source,
            })?;
    let exchanged = async {
        match admin {
            AdminEndpoint::Tcp(address) => match tokio::net::TcpStream::connect(address).await {
                Ok(stream) => exchange(admin, stream, req, limit).await,
                Err(source) => Err(connect(admin, source)),
            },
            AdminEndpoint::Socket(path) => match tokio::net::UnixStream::connect(path).await {
                Ok(stream) => exchange(admin, stream, req, limit).await,
                Err(source) => Err(connect(admin, source)),
            },
        }
    };
    tokio::time::timeout(timeout, exchanged)
        .await
        .map_err(|_| AdminClientError::Timeout {
            admin: admin.clone(),
            timeout,
        })?
}

fn connect(admin: &AdminEndpoint, source: std::io::Error) -> AdminClientError {
    AdminClientError::Connect {
        admin: admin.clone(),
        source,
    }
}

/// The exchange on an open connection, TCP or unix: one code path for both.
async fn exchange<S>(
    admin: &AdminEndpoint,
    stream: S,
    req: hyper::Request<Empty<Bytes>>,
    limit: usize,
) -> Result<(u16, String), AdminClientError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let http = |source| AdminClientError::Http {
        admin: admin.clone(),
        source,
    };
    // The head is bounded with the body: hyper's own default would read ~400 KiB of it.
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(limit.saturating_add(4096).clamp(8192, 400 * 1024))
        .handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let response = async {
        let response = sender.send_request(req).await.map_err(http)?;
        let status = response.status().as_u16();
        let body = http_body_util::Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|_| AdminClientError::TooLarge {
                admin: admin.clone(),
                limit,
            })?;
        Ok((
            status,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        ))
    };
    // Drive the connection here rather than on a spawned task, so that nothing outlives the
    // call when the timeout drops it.
    let mut response = std::pin::pin!(response);
    tokio::select! {
        biased;
        result = &mut response => result,
        ended = conn => {
            ended.map_err(http)?;
            response.await
        }
    }
}

/// Why a running agent's answer could not be had.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No exchange happened.
    #[error(transparent)]
    Exchange(#[from] AdminClientError),
    /// The agent answered with an error status: its body says why.
    #[error("the agent refused (HTTP {status}): {body}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The body, as the agent sent it.
        body: String,
    },
    /// A 200 whose body this version cannot read.
    #[error("the agent's answer at {admin} is not one this version of valkey-dr reads")]
    Unreadable {
        /// The admin endpoint.
        admin: AdminEndpoint,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// A running agent's admin API, as the CLI drives it.
#[derive(Debug, Clone)]
pub struct AdminClient {
    /// Where it listens.
    pub endpoint: AdminEndpoint,
    /// The owner's token, which `/status` and the controls need; `None` when it could not be
    /// read (the agent then refuses, and says why).
    pub token: Option<AdminToken>,
}

impl AdminClient {
    /// `GET /status`, with the owner's token.
    pub async fn status(&self, timeout: Duration) -> Result<StatusDocument, AgentError> {
        self.call("GET", "/status", self.token.as_ref(), timeout)
            .await
    }

    /// `POST` of `action` for `watch` (every watch when `None`), with the owner's token.
    pub async fn control(
        &self,
        token: &AdminToken,
        action: &ControlAction,
        watch: Option<&str>,
        timeout: Duration,
    ) -> Result<ControlAnswer, AgentError> {
        let path = action.request_path(watch);
        self.call("POST", &path, Some(token), timeout).await
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        token: Option<&AdminToken>,
        timeout: Duration,
    ) -> Result<T, AgentError> {
        let admin = &self.endpoint;
        match request_to(admin, method, path, token, timeout).await? {
            (200, body) => serde_json::from_str(&body).map_err(|source| AgentError::Unreadable {
                admin: admin.clone(),
                source,
            }),
            (status, body) => Err(AgentError::Refused { status, body }),
        }
    }
}
