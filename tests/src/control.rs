//! The control server (`POST /fault`, `GET /lab`, `GET /calls`) and its client.
//!
//! The server is the lab's one HTTP server on 127.0.0.1; the AWS API emulation (`aws`) adds
//! its routes to the same [`router`], so the control address is also the SDK's endpoint URL.
//! [`serve`] runs it one task per connection, so that one held answer (`commit-then-drop`)
//! never delays another request, and so that it can close a connection without writing the
//! answer, which is how an answer lost on the way looks to a client.
//! The client is what `valkey-dr-lab fault` and `calls` use: hyper over a loopback TCP
//! connection, and nothing else, because the lab never talks beyond loopback.

use std::error::Error as _;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::aws::DroppedAnswer;
use crate::{Call, Fault, LabError, LabInfo, Shared};

/// `clear` may restart a server (bounded at 15 s) and rebind a front (5 s): leave room.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed `accept` (out of descriptors, say), wait this long before the next one
/// rather than spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The body of a successful `POST /fault`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Applied {
    /// The fault, in the CLI's words (`"kill app-sessions"`).
    pub applied: String,
}

/// The body of a failed request.
#[derive(Debug, Serialize, Deserialize)]
struct Failure {
    error: String,
}

pub(crate) fn router(lab: Arc<Shared>) -> Router {
    Router::new()
        .route("/fault", post(post_fault))
        .route("/lab", get(get_lab))
        .route("/calls", get(get_calls))
        .merge(crate::aws::router())
        .fallback(|| async {
            failure(
                StatusCode::NOT_FOUND,
                "no such route; the control API has POST /fault, GET /lab and GET /calls, \
                 and the AWS APIs POST / (ElastiCache) and /2013-04-01/... (Route 53)"
                    .to_string(),
            )
        })
        .layer(middleware::from_fn(answer_or_hang_up))
        .with_state(lab)
}

/// The connection a request came on, for a handler that must end it without answering.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    /// Cancelled: the connection is closed at once, whatever is in flight.
    hang_up: CancellationToken,
    /// The lab is stopping: nothing is held any longer.
    stopping: CancellationToken,
}

/// Serves `router` on `listener` until `stop`: each connection on a task of its own (tracked
/// by `tracker`, so the lab's shutdown waits for them) with its [`Connection`] in every
/// request's extensions. On `stop`, open connections finish what they are answering and
/// close.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "control server: accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let connection = Connection {
            hang_up: CancellationToken::new(),
            stopping: stop.clone(),
        };
        let hang_up = connection.hang_up.clone();
        let stop = stop.clone();
        // A layer per connection: the router's routes are a handful, and the SDK keeps its
        // connections.
        let service = TowerToHyperService::new(router.clone().layer(Extension(connection)));
        tracker.spawn(async move {
            // The timer gives hyper's 30 s bound on reading a request's head.
            let mut conn = pin!(
                hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), service)
            );
            let mut stopping = false;
            loop {
                tokio::select! {
                    served = conn.as_mut() => {
                        if let Err(e) = served {
                            tracing::debug!(error = %e, "control server: connection ended");
                        }
                        return;
                    }
                    // Dropping the connection closes the socket with nothing written.
                    () = hang_up.cancelled() => return,
                    () = stop.cancelled(), if !stopping => {
                        stopping = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        });
    }
}

/// Passes every answer through, except one marked [`DroppedAnswer`] (`commit-then-drop`):
/// that one is held unwritten until its hold runs out or the lab stops, and then its
/// connection is closed. When the client hangs up first, hyper sees the connection end and
/// drops this future with the answer.
async fn answer_or_hang_up(request: Request, next: Next) -> Response {
    let connection = request.extensions().get::<Connection>().cloned();
    let response = next.run(request).await;
    let Some(DroppedAnswer { hold }) = response.extensions().get::<DroppedAnswer>().copied() else {
        return response;
    };
    let Some(connection) = connection else {
        // Served by something other than `serve`: nothing to hang up, so answer.
        warn!("commit-then-drop: no connection to hang up; answering");
        return response;
    };
    info!(hold = %humantime::format_duration(hold), "commit-then-drop: holding the answer");
    tokio::select! {
        () = tokio::time::sleep(hold) => {}
        () = connection.stopping.cancelled() => {}
    }
    info!("commit-then-drop: closing the connection without an answer");
    connection.hang_up.cancel();
    // The connection's task drops this future once it sees the hang-up.
    std::future::pending().await
}

fn failure(status: StatusCode, error: String) -> Response {
    (status, Json(Failure { error })).into_response()
}

/// The error and its sources, for a client that only sees text.
fn chain(error: &LabError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn post_fault(
    State(lab): State<Arc<Shared>>,
    body: Result<Json<Fault>, JsonRejection>,
) -> Response {
    let fault = match body {
        Ok(Json(fault)) => fault,
        Err(rejection) => return failure(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    match lab.fault(fault.clone()).await {
        Ok(()) => Json(Applied {
            applied: fault.to_string(),
        })
        .into_response(),
        Err(e) => {
            let status = match e {
                LabError::UnknownCache { .. } => StatusCode::NOT_FOUND,
                LabError::InvalidOption { .. } => StatusCode::BAD_REQUEST,
                LabError::CacheNotRunning { .. } => StatusCode::CONFLICT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            failure(status, chain(&e))
        }
    }
}

async fn get_lab(State(lab): State<Arc<Shared>>) -> Json<LabInfo> {
    Json(lab.snapshot())
}

async fn get_calls(State(lab): State<Arc<Shared>>) -> Json<Vec<Call>> {
    Json(lab.aws.calls())
}

/// Sends a fault to a running lab; returns the lab's description of what it applied.
pub async fn send_fault(control: SocketAddr, fault: &Fault) -> Result<String, LabError> {
    let body = serde_json::to_vec(fault).map_err(|e| LabError::Control {
        addr: control,
        source: Box::new(e),
    })?;
    let reply = request(control, hyper::Method::POST, "/fault", body).await?;
    let applied: Applied = serde_json::from_slice(&reply).map_err(|e| LabError::Control {
        addr: control,
        source: Box::new(e),
    })?;
    Ok(applied.applied)
}

/// Reads a running lab's current description.
pub async fn fetch_info(control: SocketAddr) -> Result<LabInfo, LabError> {
    let reply = request(control, hyper::Method::GET, "/lab", Vec::new()).await?;
    serde_json::from_slice(&reply).map_err(|e| LabError::Control {
        addr: control,
        source: Box::new(e),
    })
}

/// Reads a running lab's AWS call log, oldest first.
pub async fn fetch_calls(control: SocketAddr) -> Result<Vec<Call>, LabError> {
    let reply = request(control, hyper::Method::GET, "/calls", Vec::new()).await?;
    serde_json::from_slice(&reply).map_err(|e| LabError::Control {
        addr: control,
        source: Box::new(e),
    })
}

async fn request(
    control: SocketAddr,
    method: hyper::Method,
    path: &str,
    body: Vec<u8>,
) -> Result<Bytes, LabError> {
    if !control.ip().is_loopback() {
        return Err(LabError::NotLoopback { addr: control });
    }
    let error = |source: Box<dyn std::error::Error + Send + Sync>| LabError::Control {
        addr: control,
        source,
    };
    let stream = timeout(CONNECT_TIMEOUT, TcpStream::connect(control))
        .await
        .map_err(|e| error(Box::new(e)))?
        .map_err(|e| error(Box::new(e)))?;
    let exchange = async {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let driver = tokio::spawn(connection);
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, control.to_string())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        drop(sender);
        driver.abort();
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, bytes))
    };
    let (status, bytes) = timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|e| error(Box::new(e)))?
        .map_err(error)?;
    if status.is_success() {
        return Ok(bytes);
    }
    let message = serde_json::from_slice::<Failure>(&bytes)
        .map(|f| f.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
    Err(LabError::Rejected {
        addr: control,
        status: status.as_u16(),
        message,
    })
}
