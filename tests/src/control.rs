//! The control server (`POST /fault`, `GET /lab`, `GET /calls`) and its client.
//!
//! The server is the lab's one HTTP server on 127.0.0.1; the AWS API emulation (`aws`) adds
//! its routes to the same [`router`], so the control address is also the SDK's endpoint URL.
//! The client is what `valkey-dr-lab fault` and `calls` use: hyper over a loopback TCP
//! connection, and nothing else, because the lab never talks beyond loopback.

use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::{Call, Fault, LabError, LabInfo, Shared};

/// `clear` may restart a server (bounded at 15 s) and rebind a front (5 s): leave room.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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
        .with_state(lab)
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
