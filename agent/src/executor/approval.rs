//! A person's approval of a held failover, as `valkey-dr approve` (`POST /approve`) gives it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Approval, Approvals};

/// How long [`Approvals::approve`] waits for the executor to write the approval to its
/// journal.
const RECORDED_WITHIN: Duration = Duration::from_secs(10);

/// What an approval came to, as the admin API answers it for one watch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalAnswer {
    /// Whether a held failover took it.
    pub approved: bool,
    /// Whether the executor wrote it to its journal within the bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journalled: Option<bool>,
    /// The failover approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_id: Option<String>,
    /// The step it was held before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// Who approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Why nothing was approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Approvals {
    /// Lets the failover `watch` holds now go on past its hold (a person's approval in
    /// prepare mode, or a person overriding closed gates), and answers once the executor has
    /// written who approved to its journal (bounded). The admin server calls this directly:
    /// a watch task inside a probe round (a whole timeout, in an outage) would delay the
    /// switch by that much.
    pub async fn approve(&self, watch: &str, by: String) -> ApprovalAnswer {
        // From the executor itself, as journalled.
        let Some((id, step)) = self.held() else {
            return ApprovalAnswer {
                approved: false,
                journalled: None,
                failover_id: None,
                before: None,
                by: None,
                error: Some(format!(
                    "no failover of watch {watch} is held: nothing to approve"
                )),
            };
        };
        tracing::warn!(watch, failover_id = %id, by = %by, before = step.as_str(), "approved: the held failover goes on");
        let mut recorded = self.recorded();
        let before = *recorded.borrow_and_update();
        self.give(Approval {
            failover_id: id.clone(),
            step,
            by: by.clone(),
        });
        // The executor takes it at once, even in the middle of a gate check; only a lease
        // renewal against a slow Route 53 can delay it.
        let journalled = tokio::time::timeout(RECORDED_WITHIN, recorded.wait_for(|n| *n > before))
            .await
            .is_ok_and(|r| r.is_ok());
        ApprovalAnswer {
            approved: true,
            journalled: Some(journalled),
            failover_id: Some(id),
            before: Some(step.as_str().to_owned()),
            by: Some(by),
            error: None,
        }
    }
}
