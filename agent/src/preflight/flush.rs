//! The `primary_flush` check: may the probe user run what a failback's `flush_primary` sends
//! (`FLUSHALL ASYNC`) on the primary?
//!
//! Asked of ElastiCache's API, never of the cache: on a serverless cache the one way to ask a
//! Valkey server (`ACL DRYRUN`) is not among the commands it supports, and every
//! way of asking by trying would run it or is refused there (a flush in a transaction), and
//! an error in a command that empties the live primary's sessions is not one to risk from a
//! read-only check. RBAC is the only access control of a serverless cache: the primary's user
//! group names its users, and `DescribeUsers` gives each one's access string, in Valkey's ACL
//! syntax (tests/FIDELITY.md, rows E10 and E11). The string is read here the way the server
//! applies it: rules left to right, the last one that names `FLUSHALL` or one of its
//! categories deciding; key and channel patterns do not matter to a command without keys.

use super::{CheckStatus, Failed, Finding, Live, WithFix, call, failed_call, finding};
use crate::config::{Credential, WatchConfig};
use crate::executor::sdk::SdkCache;

const CHECK: &str = "primary_flush";
const DESCRIBE_USERS: &str = "elasticache:DescribeUsers";

/// The ACL categories `FLUSHALL` belongs to (Valkey's command table).
const FLUSHALL_CATEGORIES: [&str; 4] = ["keyspace", "write", "slow", "dangerous"];

/// `DescribeUsers` pages read at most: a user group holds at most 100 users, and an account
/// far fewer than 20 pages of them.
const MAX_PAGES: usize = 20;

/// What an access string lets its user do with `FLUSHALL ASYNC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// `on`: the user may log in at all (ElastiCache: `off` unless the string says `on`).
    pub(crate) enabled: bool,
    /// `FLUSHALL ASYNC` is allowed, by the root rules or a selector.
    pub(crate) allowed: bool,
    /// The rule that decided, when one named the command or a category of it.
    pub(crate) decided_by: Option<String>,
}

/// Reads `access` as Valkey applies an ACL rule list; `Err` names a rule it does not know.
pub(crate) fn flushall_verdict(access: &str) -> Result<Verdict, String> {
    let mut enabled = false;
    let mut root = Rules::default();
    let mut selectors: Vec<Rules> = Vec::new();
    let mut selector: Option<Vec<&str>> = None;
    for token in access.split_whitespace() {
        if let Some(open) = &mut selector {
            match token.strip_suffix(')') {
                Some(last) => {
                    open.push(last);
                    selectors.push(Rules::of(open)?);
                    selector = None;
                }
                None => open.push(token),
            }
            continue;
        }
        if let Some(first) = token.strip_prefix('(') {
            match first.strip_suffix(')') {
                Some(only) => selectors.push(Rules::of(&[only])?),
                None => selector = Some(vec![first]),
            }
            continue;
        }
        match token.to_ascii_lowercase().as_str() {
            "on" => enabled = true,
            "off" => enabled = false,
            "reset" => {
                enabled = false;
                root = Rules::default();
                selectors.clear();
            }
            "clearselectors" => selectors.clear(),
            _ => root.apply(token)?,
        }
    }
    if selector.is_some() {
        return Err(format!("{access:?} opens a selector it never closes"));
    }
    let deciding = std::iter::once(&root)
        .chain(&selectors)
        .find(|r| r.allowed)
        .unwrap_or(&root);
    Ok(Verdict {
        enabled,
        allowed: deciding.allowed,
        decided_by: deciding.decided_by.clone(),
    })
}

/// One rule set (the root's, or a selector's) as far as `FLUSHALL ASYNC` goes.
#[derive(Debug, Default)]
struct Rules {
    allowed: bool,
    decided_by: Option<String>,
}

impl Rules {
    fn of(tokens: &[&str]) -> Result<Rules, String> {
        let mut rules = Rules::default();
        for token in tokens.iter().filter(|t| !t.is_empty()) {
            rules.apply(token)?;
        }
        Ok(rules)
    }

    fn apply(&mut self, token: &str) -> Result<(), String> {
        let lower = token.to_ascii_lowercase();
        let allowed = match lower.as_str() {
            "allcommands" | "+@all" => Some(true),
            "nocommands" | "-@all" => Some(false),
            // Keys, channels and passwords: nothing to do with a command that has no keys.
            "allkeys" | "resetkeys" | "allchannels" | "resetchannels" | "nopass" | "resetpass" => {
                None
            }
            t if t.starts_with('~')
                || t.starts_with("%r~")
                || t.starts_with("%w~")
                || t.starts_with("%rw~")
                || t.starts_with('&')
                || t.starts_with('>')
                || t.starts_with('<')
                || t.starts_with('#')
                || t.starts_with('!') =>
            {
                None
            }
            t => {
                let (sign, rest) = match t.split_at_checked(1) {
                    Some(("+", rest)) => (true, rest),
                    Some(("-", rest)) => (false, rest),
                    _ => return Err(format!("{token:?} is not an ACL rule valkey-dr knows")),
                };
                match rest.strip_prefix('@') {
                    Some(category) => FLUSHALL_CATEGORIES.contains(&category).then_some(sign),
                    // `+flushall|async` allows the command with that first argument only,
                    // which is the one the flush sends.
                    None => match rest.split_once('|') {
                        Some(("flushall", arg)) => (sign && arg == "async").then_some(true),
                        Some(_) => None,
                        None => (rest == "flushall").then_some(sign),
                    },
                }
            }
        };
        if let Some(allowed) = allowed {
            self.allowed = allowed;
            self.decided_by = Some(token.to_owned());
        }
        Ok(())
    }
}

/// The ElastiCache user the probe logs in as: its `username`, else `default`.
fn probe_user(w: &WatchConfig) -> &str {
    match &w.probe.credential {
        Credential::Password {
            username: Some(u), ..
        }
        | Credential::Iam { username: u } => u,
        Credential::Password { username: None, .. } | Credential::None => "default",
    }
}

/// The `primary_flush` check, from what `primary` read of the live primary.
pub(super) async fn primary_flush(
    w: &WatchConfig,
    primary_cache: &SdkCache,
    primary: &Result<Option<Live>, Failed>,
) -> Finding {
    let group = match primary {
        Ok(Some(live)) => live.user_group_id.clone(),
        Ok(None) => {
            return finding(
                w,
                CHECK,
                CheckStatus::Unknown,
                "not checked: the primary does not exist (see primary)".into(),
            );
        }
        Err(f) => return failed_call(w, CHECK, f, false),
    };
    let Some(group) = group else {
        return finding(
            w,
            CHECK,
            CheckStatus::Ok,
            format!(
                "{} has no user group: every client may run FLUSHALL, so a failback can empty it",
                w.primary.cache_name
            ),
        );
    };
    let user = probe_user(w);
    let access = match access_string(w, primary_cache, &group, user).await {
        Ok(Some(access)) => access,
        Ok(None) => {
            return finding(
                w,
                CHECK,
                CheckStatus::Fail,
                format!(
                    "user group {group} of {} has no user named {user}: the probe cannot log in, so a failback cannot empty the primary",
                    w.primary.cache_name
                ),
            )
            .fix(format!(
                "add the probe's user {user} to {group}, or set [watch.probe] username"
            ));
        }
        Err(f) => return failed_call(w, CHECK, &f, false),
    };
    judge(w, &group, user, &access)
}

/// What the access string of `user` means for the flush.
fn judge(w: &WatchConfig, group: &str, user: &str, access: &str) -> Finding {
    let keep = "or fail back with --keep-data (the old sessions then become valid again)";
    match flushall_verdict(access) {
        Err(why) => finding(
            w,
            CHECK,
            CheckStatus::Unknown,
            format!("user {user} of {group} has access string {access:?}: {why}"),
        )
        .fix("check by hand that it allows FLUSHALL"),
        Ok(v) if !v.enabled => finding(
            w,
            CHECK,
            CheckStatus::Fail,
            format!("user {user} of {group} is off (access string {access:?})"),
        )
        .fix(format!("turn it on (`on` in its access string), {keep}")),
        Ok(v) if !v.allowed => finding(
            w,
            CHECK,
            CheckStatus::Fail,
            format!(
                "user {user} of {group} may not run FLUSHALL (access string {access:?}{}): a failback could not empty the primary",
                v.decided_by
                    .map(|r| format!(", decided by {r}"))
                    .unwrap_or_default()
            ),
        )
        .fix(format!(
            "allow it FLUSHALL in its access string (e.g. add +flushall), {keep}"
        )),
        Ok(_) => finding(
            w,
            CHECK,
            CheckStatus::Ok,
            format!("user {user} of {group} may run FLUSHALL (access string {access:?})"),
        ),
    }
}

/// The access string of the user named `user` in `group`, from `DescribeUsers` in the
/// primary's region; `None` when the group has no such user.
async fn access_string(
    w: &WatchConfig,
    primary_cache: &SdkCache,
    group: &str,
    user: &str,
) -> Result<Option<String>, Failed> {
    let mut marker: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let page = call(
            DESCRIBE_USERS,
            Some(&w.primary.region),
            "",
            primary_cache
                .client()
                .describe_users()
                .set_marker(marker.clone())
                .send(),
        )
        .await?;
        let found = page
            .users()
            .iter()
            .find(|u| u.user_name() == Some(user) && u.user_group_ids().iter().any(|g| g == group));
        if let Some(found) = found {
            return Ok(Some(found.access_string().unwrap_or_default().to_owned()));
        }
        marker = page.marker().filter(|m| !m.is_empty()).map(str::to_owned);
        if marker.is_none() {
            break;
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(access: &str) -> (bool, bool, Option<String>) {
        let v = flushall_verdict(access).unwrap_or_else(|e| panic!("{access}: {e}"));
        (v.enabled, v.allowed, v.decided_by)
    }

    #[test]
    fn the_last_rule_that_names_flushall_or_its_categories_decides() {
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(verdict("on ~* +@all"), (true, true, some("+@all")));
        assert_eq!(verdict("on ~app:* &* +@all"), (true, true, some("+@all")));
        assert_eq!(
            verdict("on ~* +@all -@dangerous"),
            (true, false, some("-@dangerous"))
        );
        assert_eq!(
            verdict("on ~* +@all -flushall"),
            (true, false, some("-flushall"))
        );
        assert_eq!(
            verdict("on ~* -@all +@read +@write"),
            (true, true, some("+@write"))
        );
        assert_eq!(verdict("on ~* +@read"), (true, false, None));
        assert_eq!(
            verdict("on ~* +@all -@keyspace +FLUSHALL"),
            (true, true, some("+FLUSHALL"))
        );
        assert_eq!(
            verdict("on ~* nocommands +flushall|async"),
            (true, true, some("+flushall|async"))
        );
        assert_eq!(
            verdict("on ~* nocommands +flushall|sync"),
            (true, false, some("nocommands"))
        );
        assert_eq!(
            verdict("~* +@all"),
            (false, true, some("+@all")),
            "off unless on"
        );
        assert_eq!(verdict("on ~* +@all off"), (false, true, some("+@all")));
        assert_eq!(
            verdict("on ~* +@all +get -set"),
            (true, true, some("+@all")),
            "other commands change nothing"
        );
    }

    #[test]
    fn a_selector_may_allow_what_the_root_rules_do_not() {
        let v = flushall_verdict("on ~* +@read (~* +@write) (~x +get)").unwrap();
        assert!(v.enabled && v.allowed, "{v:?}");
        assert_eq!(v.decided_by.as_deref(), Some("+@write"));
        let v = flushall_verdict("on ~* +@read (+@write) clearselectors").unwrap();
        assert!(!v.allowed, "{v:?}");
        assert!(flushall_verdict("on ~* (+@write").is_err());
    }

    #[test]
    fn an_unknown_rule_is_said_not_guessed() {
        let e = flushall_verdict("on ~* +@all frobnicate").unwrap_err();
        assert!(e.contains("frobnicate"), "{e}");
    }
}
