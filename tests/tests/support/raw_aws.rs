//! Requests built with the raw SDK, for the suites that speak to the lab's AWS APIs call by
//! call (`lab_fidelity`, `botocore_conformance`).

use aws_sdk_elasticache::types::ServerlessCache;
use aws_sdk_route53::error::SdkError;
use aws_sdk_route53::operation::change_resource_record_sets::ChangeResourceRecordSetsError;
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};
use std::time::Duration;
use tokio::time::{Instant, sleep};
use valkey_dr_lab::config::HOSTED_ZONE_ID;

/// A simple record set.
pub fn rrset(name: &str, rtype: RrType, ttl: i64, values: &[&str]) -> ResourceRecordSet {
    let mut set = ResourceRecordSet::builder()
        .name(name)
        .r#type(rtype)
        .ttl(ttl);
    for value in values {
        set = set.resource_records(
            ResourceRecord::builder()
                .value(*value)
                .build()
                .expect("value"),
        );
    }
    set.build().expect("name and type")
}

/// One change of a batch.
pub fn change(action: ChangeAction, set: ResourceRecordSet) -> Change {
    Change::builder()
        .action(action)
        .resource_record_set(set)
        .build()
        .expect("action and set")
}

/// `ChangeResourceRecordSets` on the lab's zone, with an optional batch comment; the change id.
pub async fn send(
    client: &aws_sdk_route53::Client,
    changes: Vec<Change>,
    comment: Option<&str>,
) -> Result<String, SdkError<ChangeResourceRecordSetsError>> {
    let batch = ChangeBatch::builder()
        .set_comment(comment.map(str::to_owned))
        .set_changes(Some(changes))
        .build()
        .expect("changes");
    let out = client
        .change_resource_record_sets()
        .hosted_zone_id(HOSTED_ZONE_ID)
        .change_batch(batch)
        .send()
        .await?;
    Ok(out.change_info().expect("change info").id().to_owned())
}

/// Polls `name` until it is `available` (the describe lag first hides it), bounded by `limit`.
pub async fn wait_available(
    client: &aws_sdk_elasticache::Client,
    name: &str,
    limit: Duration,
) -> ServerlessCache {
    let until = Instant::now() + limit;
    loop {
        if let Ok(out) = client
            .describe_serverless_caches()
            .serverless_cache_name(name)
            .send()
            .await
            && let Some(cache) = out.serverless_caches().first()
            && cache.status() == Some("available")
        {
            return cache.clone();
        }
        assert!(
            Instant::now() < until,
            "{name} was not available in {limit:?}"
        );
        sleep(Duration::from_millis(100)).await;
    }
}

/// The status of the serverless cache `name`, as `DescribeServerlessCaches` gives it now;
/// `None` when it is gone (or not listed yet).
pub async fn cache_status(client: &aws_sdk_elasticache::Client, name: &str) -> Option<String> {
    let out = client
        .describe_serverless_caches()
        .serverless_cache_name(name)
        .send()
        .await
        .ok()?;
    out.serverless_caches()
        .first()
        .and_then(|c| c.status())
        .map(str::to_owned)
}

/// Polls `name` until its status is `want` (`None`: gone), bounded by 20 s.
pub async fn wait_cache_status(
    client: &aws_sdk_elasticache::Client,
    name: &str,
    want: Option<&str>,
) {
    let until = Instant::now() + Duration::from_secs(20);
    while cache_status(client, name).await.as_deref() != want {
        assert!(
            Instant::now() < until,
            "{name} never {want:?}: {:?}",
            cache_status(client, name).await
        );
        sleep(Duration::from_millis(100)).await;
    }
}

/// `CreateHealthCheck` with `reference` and `config`, which must succeed: the new check's id.
pub async fn create_health_check(
    r53: &aws_sdk_route53::Client,
    reference: &str,
    config: aws_sdk_route53::types::HealthCheckConfig,
) -> String {
    r53.create_health_check()
        .caller_reference(reference)
        .health_check_config(config)
        .send()
        .await
        .expect("CreateHealthCheck")
        .health_check()
        .expect("the check")
        .id()
        .to_owned()
}
