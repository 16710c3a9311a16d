//! IAM's Query API: `SimulatePrincipalPolicy`, which the agent asks whether its principal
//! may call each action it needs, and `GetRole`, by which it learns its role's ARN.
//!
//! IAM is global: the SDK signs it for `us-east-1`, and a request scoped to another region is
//! refused (`SignatureDoesNotMatch`, 403) as AWS refuses it. The principals are the lab role
//! (its ARN carries its path: [`LAB_ROLE_ARN`] under `/`, or [`lab_role_arn`] of
//! `LabOptions::role_path`) and the lab user [`LAB_USER_ARN`]; any other `PolicySourceArn`,
//! the role's ARN without its path included, is `NoSuchEntity` (404), as AWS answers for a
//! role with a path (tests/FIDELITY.md, row P8). `GetRole` knows the lab role by its name
//! ([`LAB_ROLE_NAME`]) and answers its `Role`: `Path`, `RoleName`, `RoleId`, `Arn`,
//! `CreateDate`, `AssumeRolePolicyDocument`; another name is `NoSuchEntity`. Every action is
//! `allowed` unless `iam-deny` denies it, then `implicitDeny` (no policy allows it; nothing
//! denies it explicitly). With `ResourceArns`, each result carries one
//! `ResourceSpecificResults` member per resource, and its `EvalResourceName` is the resource
//! when there is one, else `*`. `ContextEntries` are read and logged, never evaluated (the
//! lab's policy has no conditions).

use std::sync::Arc;

use axum::http::HeaderMap;
use axum::response::Response;
use hyper::body::Bytes;
use serde_json::json;

use super::query::{self, Params};
use super::xml::Xml;
use super::{ApiError, AwsService};
use crate::Shared;
#[cfg(doc)]
use crate::config::LAB_ROLE_ARN;
use crate::config::{LAB_ROLE_ID, LAB_ROLE_NAME, LAB_USER_ARN, lab_role_arn};

const NAMESPACE: &str = "https://iam.amazonaws.com/doc/2010-05-08/";
/// The region IAM's one endpoint signs for.
const SIGNING_REGION: &str = "us-east-1";
/// `MaxItems`: IAM's default page and its allowed range.
const DEFAULT_MAX_ITEMS: usize = 100;
const MAX_ITEMS: std::ops::RangeInclusive<i64> = 1..=1000;
/// When the lab role was created, as `GetRole` says.
const ROLE_CREATED: &str = "2024-01-01T00:00:00Z";
/// The lab role's trust policy: EC2 instances may assume it, as a host's instance role.
const TRUST_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
/// What the lab implements, for `InvalidAction`.
const IMPLEMENTED: &str = "SimulatePrincipalPolicy, GetRole";

/// `POST /` signed for `iam`.
pub(crate) fn handle(lab: Arc<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (mut call, params, scope) = query::begin(&lab.aws, AwsService::Iam, &headers, &body);
    let role_arn = lab_role_arn(&lab.role_path);
    if call.action == "GetRole" {
        let name = params.get("RoleName");
        call.request = json!({ "role_name": name });
        // Denied on the role it names, which IAM knows by its ARN (path and all).
        call.resource = name.map(|n| {
            if n == LAB_ROLE_NAME {
                role_arn.clone()
            } else {
                format!("arn:aws:iam::{}:role/{n}", super::ACCOUNT_ID)
            }
        });
    } else {
        call.request = json!({
            "policy_source_arn": params.get("PolicySourceArn"),
            "action_names": params.list("ActionNames"),
            "resource_arns": params.list("ResourceArns"),
            "context_keys": context_keys(&params),
        });
        call.resource = params.get("PolicySourceArn").map(str::to_string);
    }
    let outcome = (|| -> Result<String, ApiError> {
        let scope = scope?;
        if scope.region != SIGNING_REGION {
            return Err(ApiError::forbidden(
                "SignatureDoesNotMatch",
                format!(
                    "Credential should be scoped to a valid region, not '{}'. IAM signs for \
                     {SIGNING_REGION}.",
                    scope.region
                ),
            ));
        }
        if call.action.is_empty() {
            return Err(query::missing_action());
        }
        call.gate()?;
        match call.action.as_str() {
            "SimulatePrincipalPolicy" => simulate(&lab, &role_arn, &params, call.request_id()),
            "GetRole" => get_role(&lab.role_path, &params, call.request_id()),
            _ => Err(query::invalid_action(IMPLEMENTED)),
        }
    })();
    call.finish(outcome)
}

/// `ContextEntries.member.N.ContextKeyName`, in N order.
fn context_keys(params: &Params) -> Vec<String> {
    let mut keys: Vec<(u32, String)> = params
        .0
        .iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix("ContextEntries.member.")?;
            let n = rest.strip_suffix(".ContextKeyName")?;
            Some((n.parse().ok()?, v.clone()))
        })
        .collect();
    keys.sort_by_key(|(n, _)| *n);
    keys.into_iter().map(|(_, k)| k).collect()
}

/// IAM's validation error for a required member that is absent.
fn null_member(member: &str) -> ApiError {
    ApiError::sender(
        "ValidationError",
        format!(
            "1 validation error detected: Value null at '{member}' failed to satisfy \
             constraint: Member must not be null"
        ),
    )
}

/// `NoSuchEntity` for a principal the lab does not have, in IAM's words.
fn no_such_entity(arn: &str) -> ApiError {
    let name = arn.rsplit('/').next().unwrap_or(arn);
    let message = if arn.contains(":role/") {
        format!("The role with name {name} cannot be found.")
    } else if arn.contains(":user/") {
        format!("The user with name {name} cannot be found.")
    } else {
        format!("The entity {arn} cannot be found.")
    };
    ApiError::not_found("NoSuchEntity", message)
}

/// `GetRole`: the lab role, by its name.
fn get_role(path: &str, params: &Params, request_id: &str) -> Result<String, ApiError> {
    let name = params
        .get("RoleName")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| null_member("roleName"))?;
    if name != LAB_ROLE_NAME {
        return Err(ApiError::not_found(
            "NoSuchEntity",
            format!("The role with name {name} cannot be found."),
        ));
    }
    // IAM answers policy documents URL-encoded.
    let trust: String = form_urlencoded::byte_serialize(TRUST_POLICY.as_bytes()).collect();
    Ok(query::response(NAMESPACE, "GetRole", request_id, |x| {
        x.element("Role", |x| {
            x.text("Path", path)
                .text("RoleName", LAB_ROLE_NAME)
                .text("RoleId", LAB_ROLE_ID)
                .text("Arn", lab_role_arn(path))
                .text("CreateDate", ROLE_CREATED)
                .text("AssumeRolePolicyDocument", &trust)
                .text("MaxSessionDuration", 3600);
        });
    }))
}

fn simulate(
    lab: &Arc<Shared>,
    role_arn: &str,
    params: &Params,
    request_id: &str,
) -> Result<String, ApiError> {
    let source = params
        .get("PolicySourceArn")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| null_member("policySourceArn"))?;
    let actions = params.list("ActionNames");
    if actions.is_empty() {
        return Err(null_member("actionNames"));
    }
    let resources = params.list("ResourceArns");
    let max_items = match params.int("MaxItems")? {
        None => DEFAULT_MAX_ITEMS,
        Some(n) if MAX_ITEMS.contains(&n) => n as usize,
        Some(n) => {
            return Err(ApiError::sender(
                "ValidationError",
                format!(
                    "1 validation error detected: Value '{n}' at 'maxItems' failed to satisfy \
                     constraint: Member must have value between 1 and 1000"
                ),
            ));
        }
    };
    // The marker is the index of the first action of the page.
    let start = match params.get("Marker").filter(|m| !m.is_empty()) {
        None => 0,
        Some(marker) => marker
            .parse::<usize>()
            .ok()
            .filter(|n| *n < actions.len())
            .ok_or_else(|| {
                ApiError::sender("InvalidInput", format!("Invalid Marker {marker:?}."))
            })?,
    };
    if source != role_arn && source != LAB_USER_ARN {
        return Err(no_such_entity(source));
    }
    let end = (start + max_items).min(actions.len());
    let next = (end < actions.len()).then_some(end);
    let decision = |action: &str| {
        if lab.aws.is_denied(action) {
            "implicitDeny"
        } else {
            "allowed"
        }
    };
    let result_resource = match resources.as_slice() {
        [one] => one.as_str(),
        _ => "*",
    };
    Ok(query::response(
        NAMESPACE,
        "SimulatePrincipalPolicy",
        request_id,
        |x: &mut Xml| {
            x.element("EvaluationResults", |x| {
                for action in &actions[start..end] {
                    let decision = decision(action);
                    x.element("member", |x| {
                        x.text("EvalActionName", action)
                            .text("EvalResourceName", result_resource)
                            .text("EvalDecision", decision)
                            .empty("MatchedStatements")
                            .empty("MissingContextValues");
                        if !resources.is_empty() {
                            x.element("ResourceSpecificResults", |x| {
                                for resource in &resources {
                                    x.element("member", |x| {
                                        x.text("EvalResourceName", resource)
                                            .text("EvalResourceDecision", decision)
                                            .empty("MatchedStatements")
                                            .empty("MissingContextValues");
                                    });
                                }
                            });
                        }
                    });
                }
            })
            .text("IsTruncated", next.is_some())
            .text_opt("Marker", next);
        },
    ))
}
