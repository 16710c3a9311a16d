//! Preflight's `permissions` check against IAM as AWS answers it, end to end: the real binary
//! against a lab whose role lives under a path, as every IAM Identity Center role does
//! (issue 22, defect 5), and the lab's IAM answering `GetRole` and `SimulatePrincipalPolicy`
//! for such a role as AWS does (tests/FIDELITY.md, row P8).

mod support;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_iam::config::Credentials;
use aws_sdk_iam::error::ProvideErrorMetadata;
use serde_json::Value;
use support::TestLab;
use valkey_dr_lab::{Fault, LAB_ROLE_ARN, LAB_ROLE_NAME, lab_role_arn};

/// Where IAM Identity Center puts the roles of its permission sets.
const SSO_PATH: &str = "/aws-reserved/sso.amazonaws.com/";

/// Every check preflight runs.
const CHECKS: usize = valkey_dr::preflight::CHECKS.len();

use support::preflight_json as preflight;

/// The finding of `check` in a run's JSON.
fn check<'a>(json: &'a Value, check: &str) -> &'a Value {
    json["checks"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["check"] == check))
        .unwrap_or_else(|| panic!("no check {check}: {json:#}"))
}

/// The checks of a run with `result`.
fn with(json: &Value, result: &str) -> Vec<String> {
    json["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["result"] == result)
        .map(|c| c["check"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// An IAM client for the lab, signed for us-east-1 as IAM is.
async fn iam_client(lab: &TestLab) -> aws_sdk_iam::Client {
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(&lab.lab.info().aws_endpoint)
        .credentials_provider(Credentials::new("AKIDLAB", "secret", None, None, "test"))
        .load()
        .await;
    aws_sdk_iam::Client::new(&sdk)
}

/// The lab, with its role under a path: `GetRole` answers the ARN with the path, and only that
/// ARN is a principal `SimulatePrincipalPolicy` knows; the ARN an assumed-role session's
/// ARN suggests (no path) is `NoSuchEntity`, as on AWS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lab_knows_a_role_under_a_path_only_by_its_arn_with_the_path() {
    let lab = TestLab::start_with(|o| o.role_path = Some(SSO_PATH.into())).await;
    let iam = iam_client(&lab).await;
    let pathed = lab_role_arn(SSO_PATH);
    assert_eq!(
        pathed,
        format!(
            "arn:aws:iam::{}:role/aws-reserved/sso.amazonaws.com/valkey-dr-lab",
            valkey_dr_lab::LAB_ACCOUNT_ID
        )
    );

    let role = iam
        .get_role()
        .role_name(LAB_ROLE_NAME)
        .send()
        .await
        .expect("GetRole answers")
        .role
        .expect("a role");
    assert_eq!(role.arn(), pathed);
    assert_eq!(role.path(), SSO_PATH);
    assert_eq!(role.role_name(), LAB_ROLE_NAME);
    assert_eq!(role.role_id(), valkey_dr_lab::LAB_ROLE_ID);
    let trust = role.assume_role_policy_document().expect("a trust policy");
    assert!(
        trust.starts_with("%7B%22Version%22"),
        "URL-encoded: {trust}"
    );

    let missing = iam.get_role().role_name("nobody").send().await;
    let err = missing.expect_err("an unknown role");
    assert_eq!(err.code(), Some("NoSuchEntity"), "{err:?}");
    assert_eq!(
        err.message(),
        Some("The role with name nobody cannot be found.")
    );
    assert_eq!(
        err.raw_response().map(|r| r.status().as_u16()),
        Some(404),
        "{err:?}"
    );

    let simulate = |arn: &str| {
        iam.simulate_principal_policy()
            .policy_source_arn(arn)
            .action_names("elasticache:DescribeServerlessCaches")
            .send()
    };
    let err = simulate(LAB_ROLE_ARN)
        .await
        .expect_err("the ARN without the path is no principal");
    assert_eq!(err.code(), Some("NoSuchEntity"), "{err:?}");
    let out = simulate(&pathed).await.expect("the role's real ARN is");
    assert_eq!(
        out.evaluation_results()[0].eval_decision().as_str(),
        "allowed"
    );

    // `iam-deny iam:GetRole` refuses it, on the role.
    lab.fault(Fault::IamDeny {
        action: "iam:GetRole".into(),
    })
    .await;
    let err = iam
        .get_role()
        .role_name(LAB_ROLE_NAME)
        .send()
        .await
        .expect_err("denied");
    assert_eq!(err.code(), Some("AccessDenied"), "{err:?}");
    assert!(
        err.message()
            .unwrap_or_default()
            .contains(&format!("iam:GetRole on resource: {pathed}")),
        "{err:?}"
    );
    let default = TestLab::start().await;
    let role = iam_client(&default)
        .await
        .get_role()
        .role_name(LAB_ROLE_NAME)
        .send()
        .await
        .expect("GetRole answers")
        .role
        .expect("a role");
    assert_eq!((role.arn(), role.path()), (LAB_ROLE_ARN, "/"));
    support::assert_botocore_conformant(&lab).await;
}

/// Issue 22, defect 5: an operator signed in through IAM Identity Center runs as a role under
/// `/aws-reserved/sso.amazonaws.com/`. Preflight simulated `role/NAME`, the ARN the session's
/// ARN suggests, which IAM does not know, so `permissions` was `unknown` for every such
/// operator. It now reads the role's ARN with `iam:GetRole` and simulates that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_with_a_path_is_simulated_by_its_real_arn() {
    let lab = TestLab::start_with(|o| o.role_path = Some(SSO_PATH.into())).await;
    let pathed = lab_role_arn(SSO_PATH);
    let (code, json, output) = preflight(&lab.config()).await;
    assert_eq!(code, 0, "{output}");
    assert_eq!(with(&json, "ok").len(), CHECKS, "{output}");
    let permissions = check(&json, "permissions");
    assert!(
        permissions["found"]
            .as_str()
            .unwrap_or_default()
            .contains(&pathed),
        "{output}"
    );
    let calls = lab.lab.calls();
    let get_role = calls
        .iter()
        .find(|c| c.action == "GetRole")
        .expect("the role was read");
    assert_eq!(get_role.request["role_name"], LAB_ROLE_NAME);
    assert!(
        calls
            .iter()
            .filter(|c| c.action == "SimulatePrincipalPolicy")
            .all(|c| c.request["policy_source_arn"] == pathed.as_str()),
        "only the role's real ARN is simulated"
    );

    // Without iam:GetRole the role's ARN is not known: unknown, and the fix names it.
    lab.fault(Fault::IamDeny {
        action: "iam:GetRole".into(),
    })
    .await;
    let (code, json, output) = preflight(&lab.config()).await;
    assert_eq!(code, 3, "UNKNOWN: {output}");
    assert_eq!(with(&json, "unknown"), ["permissions"], "{output}");
    assert!(
        check(&json, "permissions")["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("iam:GetRole"),
        "{output}"
    );
    support::assert_botocore_conformant(&lab).await;
}
