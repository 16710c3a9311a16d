//! The `permissions` check: may the agent's own principal make every call of
//! `valkey-dr iam-policy`? Asked of IAM's `SimulatePrincipalPolicy`, one question per
//! statement of the policy for the config's mode, about the principal as IAM knows it: a
//! role by the ARN `GetRole` answers, path and all, which its session's ARN leaves out. First,
//! the caller's partition (its ARN, from STS) must be the configured regions': the policy's
//! ARNs name theirs.

use serde_json::Value;

use super::{Aws, CheckStatus, Finding, Identity, WithFix, call, failed_call, finding};
use crate::config::{Config, WatchConfig};
use crate::executor::sdk::bounded;

/// Who IAM simulates for a caller ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Principal {
    /// The role of an assumed-role session. IAM knows a role by an ARN that carries its path
    /// (`role/aws-reserved/sso.amazonaws.com/NAME` for every IAM Identity Center role), and
    /// the session's ARN leaves the path out: only `GetRole` can say the ARN to simulate.
    Role {
        /// The role's name, what `GetRole` takes.
        name: String,
        /// The role's ARN as if its path were `/`, to name it before IAM has said more.
        pathless: String,
    },
    /// A user (its ARN carries its path), or a role ARN given as it is.
    Arn(String),
}

/// The principal a caller ARN names; `None` for callers IAM cannot simulate (the account's
/// root, a federated user).
fn principal(caller: &str) -> Option<Principal> {
    let parts: Vec<&str> = caller.splitn(6, ':').collect();
    let [_, partition, service, _, account, resource] = parts.as_slice() else {
        return None;
    };
    match (*service, resource.split('/').collect::<Vec<_>>().as_slice()) {
        ("sts", ["assumed-role", role, _session]) => Some(Principal::Role {
            name: (*role).to_owned(),
            pathless: format!("arn:{partition}:iam::{account}:role/{role}"),
        }),
        ("iam", ["user", ..]) | ("iam", ["role", ..]) => Some(Principal::Arn(caller.to_owned())),
        _ => None,
    }
}

/// The ARN IAM knows `principal` by: a role's is read with `GetRole` (issue 22, defect 5: the
/// ARN built from the session's ARN is `NoSuchEntity` for a role with a path). `Err` is the
/// finding when IAM does not say.
async fn principal_arn(
    w: &WatchConfig,
    iam: &aws_sdk_iam::Client,
    aws: &Aws<'_>,
    principal: Principal,
) -> Result<String, Finding> {
    let (name, pathless) = match principal {
        Principal::Arn(arn) => return Ok(arn),
        Principal::Role { name, pathless } => (name, pathless),
    };
    let check = "permissions";
    // Asked once per run: every watch has the same caller.
    let ask = async {
        call(
            "iam:GetRole",
            None,
            &pathless,
            iam.get_role().role_name(&name).send(),
        )
        .await
        .map(|out| out.role().map(|role| role.arn().to_owned()))
    };
    match aws.roles.get(&name, ask).await {
        Ok(answer) => match answer {
            Some(arn) => Ok(arn),
            None => Err(finding(
                w,
                check,
                CheckStatus::Unknown,
                format!("IAM's GetRole answered no role for {name}"),
            )),
        },
        Err(f) if f.denied() => Err(finding(w, check, CheckStatus::Unknown, f.error.to_string())
            .fix(format!(
                "allow iam:GetRole on the agent's own role ({pathless}, with its path if it has one) \
                 so that preflight can learn the ARN IAM simulates (see `valkey-dr iam-policy`)"
            ))),
        Err(f) if f.code_is(&["NoSuchEntity"]) => Err(finding(
            w,
            check,
            CheckStatus::Unknown,
            format!("IAM does not know the role {name} of the agent's session: {}", f.error),
        )),
        Err(f) => Err(failed_call(w, check, &f, false)),
    }
}

/// The caller's partition against the configured regions'. STS answered in the DR region's
/// partition as the SDK's data places it, so the caller's ARN names the partition the agent
/// really works in; when the two differ, every ARN `valkey-dr iam-policy` prints (and every
/// question below) names the wrong partition and grants nothing there. `None` when they agree.
fn partition_mismatch(w: &WatchConfig, caller: &str) -> Option<Finding> {
    let configured = crate::config::partition(&w.dr.region);
    let theirs = crate::config::arn_partition(caller).filter(|p| *p != configured)?;
    Some(
        finding(
            w,
            "permissions",
            CheckStatus::Fail,
            format!(
                "the credentials are of partition {theirs} ({caller}), but the SDK places \
                 {} and {} in {configured}: the policy `valkey-dr iam-policy` prints names \
                 {configured} ARNs, which grant nothing in {theirs}",
                w.primary.region, w.dr.region
            ),
        )
        .fix(format!(
            "run the agent with credentials of {configured}, or name regions of {theirs} \
             (a region this valkey-dr's SDK does not know is placed in aws: upgrade it)"
        )),
    )
}

/// One statement of `iam-policy`, as a question for `SimulatePrincipalPolicy`.
#[derive(Debug, Clone, PartialEq)]
struct Question {
    actions: Vec<String>,
    resources: Vec<String>,
    context: Vec<(String, Vec<String>, bool)>,
}

/// The statements of `iam-policy` for watch `w`, with `*` accounts replaced by `account` and
/// each condition's values given as the context the agent's own calls would carry.
fn questions(config: &Config, w: &WatchConfig, account: &str) -> Vec<Question> {
    let mut only = config.clone();
    only.watches.retain(|x| x.name == w.name);
    let policy = crate::iam_policy::policy(&only);
    let strings = |v: &Value| -> Vec<String> {
        match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a
                .iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    };
    policy["Statement"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let resources = strings(&s["Resource"])
                .into_iter()
                .filter(|r| r != "*")
                .map(|r| {
                    let mut parts: Vec<String> = r.splitn(6, ':').map(str::to_owned).collect();
                    if parts.len() == 6 && parts[4] == "*" {
                        parts[4] = account.to_owned();
                    }
                    parts.join(":")
                })
                .collect();
            let mut context = Vec::new();
            for (op, keys) in s["Condition"].as_object().into_iter().flatten() {
                let multi = op.starts_with("ForAllValues:") || op.starts_with("ForAnyValue:");
                for (key, values) in keys.as_object().into_iter().flatten() {
                    let mut values = strings(values);
                    if !multi {
                        // A single-valued key: the value this watch's calls carry.
                        let pick = values
                            .iter()
                            .find(|v| **v == w.dr.region)
                            .or(values.first())
                            .cloned();
                        values = pick.into_iter().collect();
                    }
                    context.push((key.clone(), values, multi));
                }
            }
            Question {
                actions: strings(&s["Action"]),
                resources,
                context,
            }
        })
        .collect()
}

pub(super) async fn permissions(
    config: &Config,
    w: &WatchConfig,
    aws: &Aws<'_>,
    id: &Identity,
) -> Finding {
    let check = "permissions";
    let Some(principal) = principal(&id.arn) else {
        return finding(
            w,
            check,
            CheckStatus::Unknown,
            format!(
                "{} is not a role or user whose policies IAM can simulate",
                id.arn
            ),
        )
        .fix("run the agent as an IAM role or user");
    };
    if let Some(mismatch) = partition_mismatch(w, &id.arn) {
        return mismatch;
    }
    let iam = iam_client(w, aws).await;
    let principal = match principal_arn(w, &iam, aws, principal).await {
        Ok(arn) => arn,
        Err(unknown) => return unknown,
    };
    let mut denied = Vec::new();
    let mut asked = 0;
    for q in questions(config, w, &id.account) {
        // A statement every watch shares (Route 53's lease, IAM's own, the global reads) is
        // simulated once per run: the key is the whole question.
        let key = format!("{principal}\n{q:?}");
        let ask = async {
            call(
                "iam:SimulatePrincipalPolicy",
                None,
                &principal,
                iam.simulate_principal_policy()
                    .policy_source_arn(&principal)
                    .set_action_names(Some(q.actions.clone()))
                    .set_resource_arns((!q.resources.is_empty()).then(|| q.resources.clone()))
                    .set_context_entries(context_entries(&q))
                    .send(),
            )
            .await
            .map(|out| denials(out.evaluation_results()))
        };
        let found = match aws.simulations.get(&key, ask).await {
            Ok(found) => found,
            Err(f) if f.denied() => {
                return finding(w, check, CheckStatus::Unknown, f.error.to_string()).fix(format!(
                    "allow iam:SimulatePrincipalPolicy on {principal} so that preflight can check every permission a failover needs"
                ));
            }
            Err(f) if f.code_is(&["NoSuchEntity"]) => {
                return finding(
                    w,
                    check,
                    CheckStatus::Unknown,
                    format!("IAM does not know {principal}: {}", f.error),
                );
            }
            Err(f) => return failed_call(w, check, &f, false),
        };
        asked += q.actions.len();
        denied.extend(found);
    }
    if denied.is_empty() {
        finding(
            w,
            check,
            CheckStatus::Ok,
            format!("{principal} may make all {asked} calls of `valkey-dr iam-policy`"),
        )
    } else {
        finding(
            w,
            check,
            CheckStatus::Fail,
            format!("{principal} is denied: {}", denied.join("; ")),
        )
        .fix("attach the policy `valkey-dr iam-policy` prints to the agent's role")
    }
}

/// An IAM client for watch `w`. IAM is global: its requests are signed for the partition's
/// IAM region whatever the agent's own region is (the endpoint rules do the same; an
/// endpoint_url override does not), and that region is the rules' own
/// (`config::iam_signing_region`).
async fn iam_client(w: &WatchConfig, aws: &Aws<'_>) -> aws_sdk_iam::Client {
    let sdk = aws.sdk(&w.dr.region).await;
    let mut conf = aws_sdk_iam::config::Builder::from(&sdk);
    conf.set_timeout_config(Some(bounded(&sdk)));
    // A loaded config's regions are in a partition the table names (`Validator::region`).
    let partition = crate::config::partition_of(&w.dr.region);
    let region = partition.map_or("us-east-1", |p| p.iam_region);
    conf.set_region(Some(aws_config::Region::from_static(region)));
    aws_sdk_iam::Client::from_conf(conf.build())
}

/// A question's condition context, as `SimulatePrincipalPolicy` takes it; `None` for none.
fn context_entries(q: &Question) -> Option<Vec<aws_sdk_iam::types::ContextEntry>> {
    use aws_sdk_iam::types::{ContextEntry, ContextKeyTypeEnum};
    let context: Vec<ContextEntry> = q
        .context
        .iter()
        .map(|(key, values, multi)| {
            ContextEntry::builder()
                .context_key_name(key)
                .set_context_key_values(Some(values.clone()))
                .context_key_type(if *multi {
                    ContextKeyTypeEnum::StringList
                } else {
                    ContextKeyTypeEnum::String
                })
                .build()
        })
        .collect();
    (!context.is_empty()).then_some(context)
}

/// Every action a simulation did not allow, with the resources it was denied on.
fn denials(results: &[aws_sdk_iam::types::EvaluationResult]) -> Vec<String> {
    use aws_sdk_iam::types::PolicyEvaluationDecisionType;
    let mut denied = Vec::new();
    for r in results {
        if *r.eval_decision() == PolicyEvaluationDecisionType::Allowed {
            continue;
        }
        let on: Vec<&str> = r
            .resource_specific_results()
            .iter()
            .filter(|x| *x.eval_resource_decision() != PolicyEvaluationDecisionType::Allowed)
            .map(|x| x.eval_resource_name())
            .collect();
        denied.push(if on.is_empty() {
            format!("{} ({})", r.eval_action_name(), r.eval_decision().as_str())
        } else {
            format!(
                "{} on {} ({})",
                r.eval_action_name(),
                on.join(", "),
                r.eval_decision().as_str()
            )
        });
    }
    denied
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch_in(primary: &str, dr: &str) -> Config {
        let text = format!(
            "[agent]\nid = \"a\"\nstate_dir = \"/tmp/x\"\n\
             [[watch]]\nname = \"s\"\nrecord = \"v.app.internal.\"\nhosted_zone_id = \"Z1\"\n\
             [watch.primary]\nregion = \"{primary}\"\ncache_name = \"app\"\nendpoint = \"app.example\"\n\
             [watch.dr]\nregion = \"{dr}\"\ncache_name = \"app-dr\"\n"
        );
        Config::parse(
            &text,
            std::path::Path::new("/etc/valkey-dr/agent.toml"),
            &crate::config::ProcessEnv,
        )
        .expect("valid")
    }

    /// Issue 22, defect 6: STS's answer names the partition the agent works in; regions the
    /// config places elsewhere make every ARN of the policy wrong, and preflight says so.
    /// A config of one watch (DR key by alias) in `mode`.
    fn one_watch(mode: &str) -> Config {
        let text = format!(
            "[agent]\nid = \"a\"\nstate_dir = \"/tmp/x\"\nmode = \"{mode}\"\n\
             [[watch]]\nname = \"s\"\nrecord = \"v.app.internal.\"\nhosted_zone_id = \"Z1\"\n\
             [watch.primary]\nregion = \"us-east-1\"\ncache_name = \"app\"\nendpoint = \"app.example\"\n\
             [watch.dr]\nregion = \"us-west-2\"\ncache_name = \"app-dr\"\nkms_key_id = \"alias/k\"\n"
        );
        Config::parse(
            &text,
            std::path::Path::new("/etc/valkey-dr/agent.toml"),
            &crate::config::ProcessEnv,
        )
        .expect("valid")
    }

    #[test]
    fn a_caller_of_another_partition_than_the_regions_fails_permissions() {
        let aws = watch_in("us-east-1", "us-west-2");
        let iso = watch_in("us-iso-east-1", "us-iso-west-1");
        let session = |p: &str| format!("arn:{p}:sts::123456789012:assumed-role/dr/s");
        assert_eq!(partition_mismatch(&aws.watches[0], &session("aws")), None);
        assert_eq!(
            partition_mismatch(&iso.watches[0], &session("aws-iso")),
            None
        );
        let f = partition_mismatch(&aws.watches[0], &session("aws-iso")).expect("a mismatch");
        assert_eq!(f.result, CheckStatus::Fail);
        assert!(
            f.found.contains("partition aws-iso") && f.found.contains("names aws ARNs"),
            "{f:?}"
        );
        assert!(
            f.fix
                .as_deref()
                .unwrap_or_default()
                .contains("credentials of aws")
        );
        let f = partition_mismatch(&iso.watches[0], &session("aws")).expect("a mismatch");
        assert!(f.found.contains("us-iso-west-1 in aws-iso"), "{f:?}");
    }

    /// A session names its role without the role's path: the role is looked up by name.
    #[test]
    fn principals_come_from_caller_arns() {
        assert_eq!(
            principal("arn:aws:sts::123456789012:assumed-role/valkey-dr/i-0abc"),
            Some(Principal::Role {
                name: "valkey-dr".into(),
                pathless: "arn:aws:iam::123456789012:role/valkey-dr".into(),
            })
        );
        assert_eq!(
            principal("arn:aws-cn:sts::123456789012:assumed-role/AWSReservedSSO_Ops_0a1b/jane"),
            Some(Principal::Role {
                name: "AWSReservedSSO_Ops_0a1b".into(),
                pathless: "arn:aws-cn:iam::123456789012:role/AWSReservedSSO_Ops_0a1b".into(),
            })
        );
        assert_eq!(
            principal("arn:aws:iam::123456789012:user/ops/agent"),
            Some(Principal::Arn(
                "arn:aws:iam::123456789012:user/ops/agent".into()
            ))
        );
        assert_eq!(principal("arn:aws:iam::123456789012:root"), None);
        assert_eq!(principal("not an arn"), None);
    }

    /// Issue 23: an alert-only agent's read-only role failed its own `permissions` check,
    /// which asked about writes that mode never makes.
    #[test]
    fn an_alert_only_agent_is_asked_only_about_reads() {
        let config = one_watch("alert-only");
        let qs = questions(&config, &config.watches[0], "123456789012");
        let asked: Vec<&String> = qs.iter().flat_map(|q| &q.actions).collect();
        for write in [
            "route53:ChangeResourceRecordSets",
            "elasticache:CreateServerlessCache",
            "elasticache:DeleteServerlessCache",
            "elasticache:AddTagsToResource",
            "ec2:CreateVpcEndpoint",
            "kms:CreateGrant",
        ] {
            assert!(!asked.iter().any(|a| *a == write), "{write} in {asked:?}");
        }
        for read in [
            "route53:ListResourceRecordSets",
            "elasticache:DescribeServerlessCaches",
            "kms:DescribeKey",
            "iam:SimulatePrincipalPolicy",
            "iam:GetRole",
        ] {
            assert!(asked.iter().any(|a| *a == read), "{read} not in {asked:?}");
        }
    }

    #[test]
    fn permissions_are_asked_statement_by_statement_with_their_context() {
        let config = one_watch("prepare");
        let qs = questions(&config, &config.watches[0], "123456789012");
        let switch = qs
            .iter()
            .find(|q| q.actions == ["route53:ChangeResourceRecordSets"])
            .expect("the switch is asked");
        assert_eq!(switch.resources, ["arn:aws:route53:::hostedzone/Z1"]);
        let (_, names, multi) = switch
            .context
            .iter()
            .find(|(k, _, _)| k == "route53:ChangeResourceRecordSetsNormalizedRecordNames")
            .expect("the record names are the context");
        assert!(*multi);
        assert!(names.contains(&"v.app.internal".to_owned()), "{names:?}");
        let create = qs
            .iter()
            .find(|q| {
                q.actions
                    .contains(&"elasticache:CreateServerlessCache".to_owned())
            })
            .unwrap();
        assert_eq!(
            create.resources,
            ["arn:aws:elasticache:us-west-2:123456789012:serverlesscache:app-dr"],
            "the account replaces *"
        );
        let ec2 = qs
            .iter()
            .find(|q| q.actions.contains(&"ec2:DescribeSubnets".to_owned()))
            .unwrap();
        assert!(
            ec2.resources.is_empty(),
            "Resource * is left to the API's default"
        );
        assert_eq!(
            ec2.context,
            [(
                "aws:RequestedRegion".to_owned(),
                vec!["us-west-2".to_owned()],
                false
            )]
        );
        let kms = qs
            .iter()
            .find(|q| q.actions == ["kms:DescribeKey"])
            .expect("preflight's own read of the key is asked too");
        assert!(kms.context.is_empty());
        assert!(
            qs.iter()
                .any(|q| q.actions == ["iam:SimulatePrincipalPolicy"]),
            "preflight may ask"
        );
        let get_role = qs
            .iter()
            .find(|q| q.actions == ["iam:GetRole"])
            .expect("preflight's read of its own role is asked too");
        assert_eq!(
            get_role.resources,
            ["arn:aws:iam::123456789012:role/*"],
            "the account replaces *"
        );
    }
}
