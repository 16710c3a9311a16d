//! What the Query-protocol APIs (ElastiCache, STS, IAM) and EC2's dialect of it share: the
//! form parameters of a request, and the `<{Action}Response>` document they answer with.

use std::collections::BTreeMap;

use axum::http::HeaderMap;

use super::calls::HttpRequest;
use super::sigv4::{self, Scope};
use super::xml::Xml;
use super::{ApiError, Aws, AwsService, Exchange};

/// Starts answering a form-encoded `POST /`: the call is logged with its form and action,
/// and the credential scope is read (an error is the answer AWS gives without one).
pub(crate) fn begin<'a>(
    aws: &'a Aws,
    service: AwsService,
    headers: &HeaderMap,
    body: &[u8],
) -> (Exchange<'a>, Params, Result<Scope, ApiError>) {
    let mut call = aws.exchange(service);
    let params = Params::parse(body);
    call.http = HttpRequest {
        method: "POST".to_string(),
        path: "/".to_string(),
        query: String::new(),
        body: String::from_utf8_lossy(body).into_owned(),
        target: None,
    };
    call.action = params.get("Action").unwrap_or_default().to_string();
    let scope = sigv4::credential_scope(headers);
    if let Ok(scope) = &scope {
        call.region = Some(scope.region.clone());
    }
    (call, params, scope)
}

/// AWS's answer to a form without an `Action`.
pub(crate) fn missing_action() -> ApiError {
    ApiError::sender(
        "MissingAction",
        "The request must contain the parameter Action",
    )
}

/// AWS's answer to an action the service does not have; `implemented` lists the lab's.
pub(crate) fn invalid_action(implemented: &str) -> ApiError {
    ApiError::sender(
        "InvalidAction",
        format!(
            "The action or operation requested is invalid. Verify that the action is typed \
             correctly. (valkey-dr-lab implements {implemented}.)"
        ),
    )
}

/// The form parameters of one request.
pub(crate) struct Params(pub(crate) Vec<(String, String)>);

impl Params {
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn required(&self, key: &str) -> Result<&str, ApiError> {
        self.get(key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ApiError::missing_parameter(key))
    }

    pub(crate) fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        self.get(key)
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    ApiError::sender(
                        "InvalidParameterValue",
                        format!("Invalid value for {key}: {v:?} is not an integer."),
                    )
                })
            })
            .transpose()
    }

    /// A Query list: `{prefix}.{member}.N`, in N order, whatever the member is called
    /// (`SubnetIds.SubnetId.1` from the SDK, `SubnetIds.member.1` from older clients).
    /// Whether any parameter is named `prefix.…` (a list or structure given at all).
    pub(crate) fn any_under(&self, prefix: &str) -> bool {
        self.0
            .iter()
            .any(|(k, _)| k.strip_prefix(prefix).is_some_and(|r| r.starts_with('.')))
    }

    pub(crate) fn list(&self, prefix: &str) -> Vec<String> {
        let mut items: Vec<(u32, String)> = self
            .0
            .iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix(prefix)?.strip_prefix('.')?;
                let (_member, n) = rest.split_once('.')?;
                Some((n.parse().ok()?, v.clone()))
            })
            .collect();
        items.sort_by_key(|(n, _)| *n);
        items.into_iter().map(|(_, v)| v).collect()
    }

    /// `Tags.{member}.N.Key` and `.Value`, in N order.
    pub(crate) fn tags(&self) -> Result<Vec<(String, String)>, ApiError> {
        let mut tags: BTreeMap<u32, (Option<String>, Option<String>)> = BTreeMap::new();
        for (k, v) in &self.0 {
            let Some(rest) = k.strip_prefix("Tags.") else {
                continue;
            };
            let parts: Vec<&str> = rest.split('.').collect();
            let [_member, n, field] = parts.as_slice() else {
                continue;
            };
            let Ok(n) = n.parse::<u32>() else { continue };
            let entry = tags.entry(n).or_default();
            match *field {
                "Key" => entry.0 = Some(v.clone()),
                "Value" => entry.1 = Some(v.clone()),
                _ => {}
            }
        }
        tags.into_values()
            .map(|(key, value)| match key {
                Some(key) if !key.is_empty() => Ok((key, value.unwrap_or_default())),
                _ => Err(ApiError::sender(
                    "InvalidParameterValue",
                    "Every tag must have a non-empty Key.",
                )),
            })
            .collect()
    }
}

impl Params {
    /// Reads a form-encoded body.
    pub(crate) fn parse(body: &[u8]) -> Self {
        Self(form_urlencoded::parse(body).into_owned().collect())
    }

    /// An EC2 list: `{prefix}.N` (EC2 flattens its lists: `SubnetId.1`, `GroupId.2`), in N
    /// order.
    pub(crate) fn flat_list(&self, prefix: &str) -> Vec<String> {
        let mut items: Vec<(u32, String)> = self
            .0
            .iter()
            .filter_map(|(k, v)| {
                let n = k.strip_prefix(prefix)?.strip_prefix('.')?;
                Some((n.parse().ok()?, v.clone()))
            })
            .collect();
        items.sort_by_key(|(n, _)| *n);
        items.into_iter().map(|(_, v)| v).collect()
    }

    /// Whether any parameter starts with `prefix.` (a list or structure was given).
    pub(crate) fn has_prefix(&self, prefix: &str) -> bool {
        self.0
            .iter()
            .any(|(k, _)| k.strip_prefix(prefix).is_some_and(|r| r.starts_with('.')))
    }
}

/// `<{action}Response><{action}Result>…</…><ResponseMetadata>…`, the Query protocol's answer.
pub(crate) fn response(
    namespace: &str,
    action: &str,
    request_id: &str,
    result: impl FnOnce(&mut Xml),
) -> String {
    Xml::new().root(&format!("{action}Response"), namespace, |x| {
        x.element(&format!("{action}Result"), result);
        x.element("ResponseMetadata", |x| {
            x.text("RequestId", request_id);
        });
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec2_lists_are_flat_and_ordered() {
        let p = Params::parse(
            b"Action=DescribeSubnets&SubnetId.2=subnet-b&SubnetId.1=subnet-a&Filter.1.Name=x",
        );
        assert_eq!(p.flat_list("SubnetId"), vec!["subnet-a", "subnet-b"]);
        assert!(p.has_prefix("Filter") && !p.has_prefix("GroupId"));
        assert!(p.flat_list("Filter").is_empty());
    }
}
