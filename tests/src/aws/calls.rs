//! The record of every AWS call the lab answered, for assertions such as "exactly one
//! CreateServerlessCache succeeded" and for reading what an agent did (`GET /calls`,
//! `valkey-dr-lab calls`).

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::AwsService;

/// A long-running `valkey-dr-lab up` keeps only this many calls (the newest); `seq` keeps
/// counting, so a gap shows that older ones were dropped.
const MAX_CALLS: usize = 10_000;

/// One AWS call, as the lab answered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// 1 for the lab's first call, then one more per call.
    pub seq: u64,
    /// When the call arrived, in milliseconds since the lab started.
    pub at_ms: u64,
    /// Which API.
    pub service: AwsService,
    /// The action (`CreateServerlessCache`, `ChangeResourceRecordSets`, ...); empty when the
    /// request named none.
    pub action: String,
    /// The region of the request's SigV4 credential scope; `None` when it had no valid one.
    pub region: Option<String>,
    /// The HTTP status the lab answered.
    pub status: u16,
    /// The AWS error code, for a failed call.
    pub error_code: Option<String>,
    /// What was asked, in short: the cache name, or the change batch's actions, names, types,
    /// TTLs and values.
    pub request: serde_json::Value,
    /// The whole request and answer, as sent over the wire: what the botocore conformance
    /// check (`tests/conformance/botocore_check.py`) validates against AWS's models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpExchange>,
    /// The lab carried the call out and never sent this answer (`commit-then-drop`): the
    /// client saw its connection close, or gave up first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub answer_dropped: bool,
}

/// One request as it arrived: ElastiCache's form parameters are in `body`; Route 53 puts its
/// parameters in the path and query, and a change batch in `body` as XML.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// The path (`/` for ElastiCache; Route 53's names the zone or the change).
    pub path: String,
    /// The raw query string, without `?`; empty when there was none.
    pub query: String,
    /// The body as text (form-encoded, XML or JSON); empty for a `GET`.
    pub body: String,
    /// The `X-Amz-Target` header of a JSON-protocol request (`TrentService.DescribeKey`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// A request and the lab's whole answer to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpExchange {
    /// What was asked.
    pub request: HttpRequest,
    /// The HTTP status of the answer.
    pub status: u16,
    /// The answer's body as text: XML, JSON, or (CloudWatch's CBOR) the answer decoded as
    /// JSON, timestamps as epoch seconds.
    pub body: String,
    /// The answer's bytes in hex when they are binary (CloudWatch's CBOR), for the botocore
    /// check to parse as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_hex: Option<String>,
    /// The answer's `x-amzn-query-error` header (`Code;Sender`), from which the SDKs of a
    /// Query-compatible service (CloudWatch) read the Query error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_error: Option<String>,
}

impl Call {
    /// Whether the call succeeded (HTTP 2xx).
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The log, oldest first.
#[derive(Default)]
pub(crate) struct CallLog {
    inner: Mutex<(u64, VecDeque<Call>)>,
}

impl CallLog {
    /// Appends a call, numbering it.
    pub(crate) fn record(&self, mut call: Call) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.0 += 1;
        call.seq = inner.0;
        if inner.1.len() == MAX_CALLS {
            inner.1.pop_front();
        }
        inner.1.push_back(call);
    }

    /// Every call kept, oldest first.
    pub(crate) fn all(&self) -> Vec<Call> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.1.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(action: &str, status: u16) -> Call {
        Call {
            seq: 0,
            at_ms: 5,
            service: AwsService::Elasticache,
            action: action.to_string(),
            region: Some("us-west-2".to_string()),
            status,
            error_code: None,
            request: serde_json::json!({"cache_name": "x"}),
            http: None,
            answer_dropped: false,
        }
    }

    #[test]
    fn numbers_calls_and_keeps_the_newest() {
        let log = CallLog::default();
        log.record(call("CreateServerlessCache", 200));
        log.record(call("DescribeServerlessCaches", 404));
        let calls = log.all();
        assert_eq!(calls.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert!(calls[0].succeeded() && !calls[1].succeeded());
        let json = serde_json::to_value(&calls[0]).unwrap();
        assert_eq!(json["service"], "elasticache");
        assert_eq!(json["request"]["cache_name"], "x");

        for _ in 0..MAX_CALLS {
            log.record(call("DescribeServerlessCaches", 200));
        }
        let calls = log.all();
        assert_eq!(calls.len(), MAX_CALLS);
        assert_eq!(calls[0].seq, 3);
        assert_eq!(calls.last().unwrap().seq, MAX_CALLS as u64 + 2);
    }
}
