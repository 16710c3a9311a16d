//! The admin API's client: one bounded HTTP/1.1 exchange per call, as the CLI and the peers
//! use it.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::header;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::request::ControlAction;
use super::status::{ControlAnswer, StatusDocument};
use super::token::AdminToken;

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
         with admin_listen = \"{admin}\"?"
    )]
    Connect {
        /// The admin address tried.
        admin: SocketAddr,
        /// The connect failure (usually "connection refused").
        #[source]
        source: std::io::Error,
    },
    /// The connection opened but the HTTP exchange failed.
    #[error(
        "the HTTP exchange with {admin} failed: is admin_listen = \"{admin}\" the address of \
         `valkey-dr run`, and not another program?"
    )]
    Http {
        /// The admin address tried.
        admin: SocketAddr,
        /// What hyper saw.
        #[source]
        source: hyper::Error,
    },
    /// The answer was larger than the client reads (or broke off mid-body).
    #[error(
        "the answer from {admin} was cut off or larger than {limit} bytes: is admin_listen = \"{admin}\" the address of `valkey-dr run`, and not another program?"
    )]
    TooLarge {
        /// The admin address tried.
        admin: SocketAddr,
        /// The most bytes read.
        limit: usize,
    },
    /// No full answer arrived in time.
    #[error(
        "the agent's admin server at {admin} did not answer within {}: is `valkey-dr run` \
         with admin_listen = \"{admin}\" overloaded or stopped (SIGSTOP)? check its logs",
        humantime::format_duration(*.timeout)
    )]
    Timeout {
        /// The admin address tried.
        admin: SocketAddr,
        /// The bound that expired.
        timeout: Duration,
    },
}

/// The most bytes of an answer the admin client reads: `/status` for hundreds of watches is
/// well under it, and a peer (or a program that is not an agent) cannot make the caller hold
/// more.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// One HTTP/1.1 request to a running agent's admin server, for the CLI: the status code and
/// the body. A control request needs the owner's `token`. Connecting, sending and reading
/// the whole body are bounded together by `timeout`. One connection per request: the CLI
/// sends one and exits.
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
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(header::HOST, admin.to_string());
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
    tokio::time::timeout(timeout, exchange(admin, req, limit))
        .await
        .map_err(|_| AdminClientError::Timeout { admin, timeout })?
}

async fn exchange(
    admin: SocketAddr,
    req: hyper::Request<Empty<Bytes>>,
    limit: usize,
) -> Result<(u16, String), AdminClientError> {
    let http = |source| AdminClientError::Http { admin, source };
    let stream = tokio::net::TcpStream::connect(admin)
        .await
        .map_err(|source| AdminClientError::Connect { admin, source })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let response = async {
        let response = sender.send_request(req).await.map_err(http)?;
        let status = response.status().as_u16();
        let body = http_body_util::Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|_| AdminClientError::TooLarge { admin, limit })?;
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
        /// The admin address.
        admin: SocketAddr,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// A running agent's admin API, as the CLI drives it.
#[derive(Debug, Clone, Copy)]
pub struct AdminClient {
    /// Where it listens.
    pub address: SocketAddr,
}

impl AdminClient {
    /// `GET /status`.
    pub async fn status(&self, timeout: Duration) -> Result<StatusDocument, AgentError> {
        self.call("GET", "/status", None, timeout).await
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
        let admin = self.address;
        match request(admin, method, path, token, timeout).await? {
            (200, body) => serde_json::from_str(&body)
                .map_err(|source| AgentError::Unreadable { admin, source }),
            (status, body) => Err(AgentError::Refused { status, body }),
        }
    }
}
