//! STS's Query API: `GetCallerIdentity`, which tells the agent who it runs as.
//!
//! As on AWS, `GetCallerIdentity` needs no permission: `iam-deny` cannot deny it (the gate
//! skips STS), though `witness-down` and `api-error sts …` still cut it.

use std::sync::Arc;

use axum::http::HeaderMap;
use axum::response::Response;
use hyper::body::Bytes;
use serde_json::json;

use super::{ApiError, AwsService, query};
use crate::Shared;
use crate::config::{LAB_ACCOUNT_ID, LAB_CALLER_ARN, LAB_CALLER_USER_ID};

const NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// `POST /` signed for `sts`.
pub(crate) fn handle(lab: Arc<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (mut call, _params, scope) = query::begin(&lab.aws, AwsService::Sts, &headers, &body);
    call.request = json!({});
    let outcome = (|| -> Result<String, ApiError> {
        scope?;
        if call.action.is_empty() {
            return Err(query::missing_action());
        }
        call.gate()?;
        match call.action.as_str() {
            "GetCallerIdentity" => Ok(query::response(
                NAMESPACE,
                "GetCallerIdentity",
                call.request_id(),
                |x| {
                    x.text("Arn", LAB_CALLER_ARN)
                        .text("UserId", LAB_CALLER_USER_ID)
                        .text("Account", LAB_ACCOUNT_ID);
                },
            )),
            _ => Err(query::invalid_action("GetCallerIdentity")),
        }
    })();
    call.finish(outcome)
}
