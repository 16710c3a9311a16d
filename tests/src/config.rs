//! The `agent.toml` the lab writes: a ready config for the agent against this lab.
//!
//! The shape is fixed (the agent's config parser is written against it); only values change.
//! Every string goes through TOML's own quoting, so a directory with quotes or backslashes in
//! its name still yields a valid file.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// The private zone's id in the lab's Route 53.
pub const HOSTED_ZONE_ID: &str = "ZLAB00000000000001";
/// The DR cache a failover creates.
pub const DR_CACHE: &str = "app-sessions-dr";
/// The DR region.
pub const DR_REGION: &str = "us-west-2";
/// The account every lab ARN names.
pub const LAB_ACCOUNT_ID: &str = "123456789012";
/// The IAM role the lab's agent runs as: what `SimulatePrincipalPolicy` knows as a principal
/// (with the path `/`; see [`lab_role_arn`] for a role under another path).
pub const LAB_ROLE_ARN: &str = "arn:aws:iam::123456789012:role/valkey-dr-lab";
/// That role's name, the one an assumed-role session's ARN carries.
pub const LAB_ROLE_NAME: &str = "valkey-dr-lab";
/// That role's id (`RoleId`, and the first half of [`LAB_CALLER_USER_ID`]).
pub const LAB_ROLE_ID: &str = "AROALAB0000000000000001";
/// The lab's IAM user, the other principal `SimulatePrincipalPolicy` knows.
pub const LAB_USER_ARN: &str = "arn:aws:iam::123456789012:user/valkey-dr-lab";
/// Who STS `GetCallerIdentity` says the caller is: a session of [`LAB_ROLE_ARN`].
pub const LAB_CALLER_ARN: &str = "arn:aws:sts::123456789012:assumed-role/valkey-dr-lab/lab-agent";
/// The caller's `UserId` (the role's id, then the session name).
pub const LAB_CALLER_USER_ID: &str = "AROALAB0000000000000001:lab-agent";
/// The VPC every lab subnet and security group is in, in every region.
pub const LAB_VPC_ID: &str = "vpc-lab0001";
/// The subnets of every region, with their availability zone's letter: `subnet-lab0001` in
/// `{region}a`, `subnet-lab0002` in `{region}b`, `subnet-lab0003` in `{region}a`.
pub const LAB_SUBNETS: [(&str, char); 3] = [
    ("subnet-lab0001", 'a'),
    ("subnet-lab0002", 'b'),
    ("subnet-lab0003", 'a'),
];
/// The subnets `[watch.dr]` names (two zones).
pub const LAB_DR_SUBNET_IDS: [&str; 2] = ["subnet-lab0001", "subnet-lab0002"];
/// The security group of every region.
pub const LAB_SECURITY_GROUP_ID: &str = "sg-lab0001";
/// Its name.
pub const LAB_SECURITY_GROUP_NAME: &str = "valkey-dr-lab";
/// The KMS key id of every region's one key.
pub const LAB_KMS_KEY_ID: &str = "6f1e2d3c-4b5a-4978-8a6b-5c4d3e2f1a0b";
/// That key's alias, the `kms_key_id` `[watch.dr]` names.
pub const LAB_KMS_ALIAS: &str = "alias/valkey-dr-lab";
/// The ElastiCache user group of every region.
pub const LAB_USER_GROUP_ID: &str = "valkey-dr-lab-users";
/// The access string of the lab's users unless [`crate::LabOptions::access_string`] says
/// otherwise: everything, as ElastiCache's own default user has.
pub const LAB_ACCESS_STRING: &str = "on ~* +@all";
/// The serverless cache snapshot of every region (of the primary cache's configuration).
pub const LAB_SNAPSHOT_NAME: &str = "valkey-dr-lab-snapshot";
/// The `snapshot_retention_limit` of the DR spec and of the live primary.
pub const LAB_SNAPSHOT_RETENTION_LIMIT: i64 = 1;

/// The lab role's ARN under IAM path `path` (`/` or `/…/`): IAM puts the path between
/// `role` and the name, as in `arn:aws:iam::ACCOUNT:role/aws-reserved/sso.amazonaws.com/NAME`.
pub fn lab_role_arn(path: &str) -> String {
    format!("arn:aws:iam::{LAB_ACCOUNT_ID}:role{path}{LAB_ROLE_NAME}")
}

/// The lab key's ARN in `region`.
pub fn lab_kms_key_arn(region: &str) -> String {
    format!("arn:aws:kms:{region}:{LAB_ACCOUNT_ID}:key/{LAB_KMS_KEY_ID}")
}

/// The lab key alias's ARN in `region`.
pub fn lab_kms_alias_arn(region: &str) -> String {
    format!("arn:aws:kms:{region}:{LAB_ACCOUNT_ID}:{LAB_KMS_ALIAS}")
}

/// The env var the config names for the password when the lab has one.
pub const DEFAULT_PASSWORD_ENV: &str = "VALKEY_DR_LAB_PASSWORD";

/// What `agent.toml` is made from.
pub(crate) struct AgentConfig<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) dns: SocketAddr,
    pub(crate) record: &'a str,
    pub(crate) ttl: Duration,
    pub(crate) port: u16,
    pub(crate) primary_region: &'a str,
    pub(crate) primary_cache: &'a str,
    pub(crate) primary_endpoint: &'a str,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) ca_file: &'a Path,
    pub(crate) password_env: Option<&'a str>,
    /// The IAM user the lab's caches require tokens for: the probe then signs them.
    pub(crate) iam_user: Option<&'a str>,
    /// The lab's AWS endpoint; the agent's SDK clients talk to it instead of AWS.
    pub(crate) aws_endpoint: &'a str,
}

/// The AWS shared credentials file the lab writes next to `agent.toml`, which names it.
pub const CREDENTIALS_FILE: &str = "aws-credentials";

/// Its content: the lab's dummy keys (those of [`crate::LAB_AWS_ENV`]) as the `default`
/// profile.
pub fn lab_credentials() -> String {
    let key = |name: &str| {
        crate::LAB_AWS_ENV
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
            .unwrap_or_default()
    };
    format!(
        "# Written by valkey-dr-lab up: dummy keys that only this lab accepts.\n[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
        key("AWS_ACCESS_KEY_ID"),
        key("AWS_SECRET_ACCESS_KEY")
    )
}

/// A TOML basic string.
fn quote(value: &str) -> String {
    toml::Value::String(value.to_string()).to_string()
}

fn quote_path(path: &Path) -> String {
    quote(&path.to_string_lossy())
}

fn quote_duration(value: Duration) -> String {
    quote(&humantime::format_duration(value).to_string())
}

impl AgentConfig<'_> {
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            r#"# Written by valkey-dr-lab up: a ready config for this lab. Loopback only.
[agent]
id = "lab-agent"
# Where this agent runs (readiness's placement check): the lab's agent stands for one in the
# DR region, outside the primary's.
region = "us-west-2"
mode = "alert-only"
state_dir = {state_dir}
admin_listen = "127.0.0.1:0"
log_format = "text"

[aws]
endpoint_url = {aws_endpoint}
credentials_file = {credentials_file}

[dns]
nameservers = [{dns}]

[[watch]]
name = "sessions"
record = {record}
hosted_zone_id = {zone_id}
ttl = {ttl}
port = {port}

[watch.primary]
region = {primary_region}
cache_name = {primary_cache}
endpoint = {primary_endpoint}

[watch.dr]
region = {dr_region}
cache_name = {dr_cache}
engine = "valkey"
major_engine_version = "8"
subnet_ids = [{subnet_a}, {subnet_b}]
security_group_ids = [{security_group}]
kms_key_id = {kms_key}
user_group_id = {user_group}
snapshot_retention_limit = {retention}
create_timeout = "5m"

[watch.probe]
interval = {interval}
timeout = {timeout}
key_prefix = "valkey-dr:probe:"
tls = true
ca_file = {ca_file}
tls_server_name = "endpoint"
"#,
            state_dir = quote_path(&self.dir.join("state")),
            aws_endpoint = quote(self.aws_endpoint),
            credentials_file = quote_path(&self.dir.join(CREDENTIALS_FILE)),
            dns = quote(&self.dns.to_string()),
            record = quote(self.record),
            zone_id = quote(HOSTED_ZONE_ID),
            ttl = quote_duration(self.ttl),
            port = self.port,
            primary_region = quote(self.primary_region),
            primary_cache = quote(self.primary_cache),
            primary_endpoint = quote(self.primary_endpoint),
            dr_region = quote(DR_REGION),
            dr_cache = quote(DR_CACHE),
            subnet_a = quote(LAB_DR_SUBNET_IDS[0]),
            subnet_b = quote(LAB_DR_SUBNET_IDS[1]),
            security_group = quote(LAB_SECURITY_GROUP_ID),
            kms_key = quote(LAB_KMS_ALIAS),
            user_group = quote(LAB_USER_GROUP_ID),
            retention = LAB_SNAPSHOT_RETENTION_LIMIT,
            interval = quote_duration(self.interval),
            timeout = quote_duration(self.timeout),
            ca_file = quote_path(self.ca_file),
        );
        if let Some(var) = self.password_env {
            let _ = writeln!(out, "password_env = {}", quote(var));
        }
        if let Some(user) = self.iam_user {
            let _ = writeln!(out, "username = {}\niam_auth = true", quote(user));
        }
        let _ = write!(
            out,
            r#"
# The real witness: DescribeServerlessCaches in the DR region, through the lab's API.
# `valkey-dr-lab fault witness-down` makes every AWS call from the agent fail.
[watch.witness]
kind = "aws"

[watch.policy]
fall = 3
rise = 2
# fall rounds one interval apart span (fall - 1) intervals of failure.
down_after = "{down_after}"
reminder_interval = "1m"
"#,
            down_after = humantime::format_duration(self.interval * 2),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config<'a>(dir: &'a Path, ca: &'a Path, password_env: Option<&'a str>) -> AgentConfig<'a> {
        AgentConfig {
            dir,
            dns: "127.0.0.1:5353".parse().unwrap(),
            record: "valkey.lab.internal.",
            ttl: Duration::from_secs(30),
            port: 6379,
            primary_region: "us-east-1",
            primary_cache: "app-sessions",
            primary_endpoint: "app-sessions-abc123.serverless.use1.cache.amazonaws.com",
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            ca_file: ca,
            password_env,
            iam_user: None,
            aws_endpoint: "http://127.0.0.1:7000",
        }
    }

    #[test]
    fn renders_the_documented_shape() {
        let dir = Path::new("/tmp/lab");
        let ca = dir.join("ca.pem");
        let text = config(dir, &ca, None).render();
        assert!(text.starts_with(
            "# Written by valkey-dr-lab up: a ready config for this lab. Loopback only.\n[agent]\n"
        ));
        assert!(text.contains("state_dir = \"/tmp/lab/state\"\n"), "{text}");
        assert!(text.contains("nameservers = [\"127.0.0.1:5353\"]\n"));
        assert!(
            text.contains("[aws]\nendpoint_url = \"http://127.0.0.1:7000\"\n"),
            "{text}"
        );
        assert!(text.contains("ttl = \"30s\"\nport = 6379\n"));
        assert!(text.contains("interval = \"1s\"\ntimeout = \"500ms\"\n"));
        assert!(text.contains("tls_server_name = \"endpoint\"\n\n# The real witness"));
        assert!(!text.contains("password_env"));
        assert!(text.contains("[watch.witness]\nkind = \"aws\"\n"), "{text}");
        assert!(text.contains("down_after = \"2s\"\n"), "{text}");

        let parsed: toml::Table = toml::from_str(&text).unwrap();
        let watch = &parsed["watch"].as_array().unwrap()[0];
        assert_eq!(
            watch["primary"]["cache_name"].as_str(),
            Some("app-sessions")
        );
        assert_eq!(watch["dr"]["region"].as_str(), Some("us-west-2"));
        assert_eq!(
            watch["dr"]["subnet_ids"].as_array().unwrap().len(),
            LAB_DR_SUBNET_IDS.len()
        );
        assert_eq!(
            watch["dr"]["kms_key_id"].as_str(),
            Some("alias/valkey-dr-lab")
        );
        assert_eq!(
            watch["dr"]["user_group_id"].as_str(),
            Some("valkey-dr-lab-users")
        );
        assert_eq!(
            watch["dr"]["snapshot_retention_limit"].as_integer(),
            Some(1)
        );
        assert_eq!(watch["probe"]["tls"].as_bool(), Some(true));
        assert_eq!(watch["policy"]["fall"].as_integer(), Some(3));
    }

    #[test]
    fn awkward_paths_and_the_password_env_stay_valid_toml() {
        let dir = Path::new("/tmp/it's \"odd\"\\lab");
        let ca = dir.join("ca.pem");
        let text = config(dir, &ca, Some("MY_PASS")).render();
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        let probe = &parsed["watch"].as_array().unwrap()[0]["probe"];
        assert_eq!(probe["ca_file"].as_str(), Some(&*ca.to_string_lossy()));
        assert_eq!(probe["password_env"].as_str(), Some("MY_PASS"));
        assert!(text.contains("tls_server_name = \"endpoint\"\npassword_env = \"MY_PASS\"\n"));
    }

    #[test]
    fn an_iam_user_makes_the_probe_sign_tokens() {
        let dir = Path::new("/tmp/lab");
        let ca = dir.join("ca.pem");
        let text = AgentConfig {
            iam_user: Some("probe"),
            ..config(dir, &ca, None)
        }
        .render();
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        let probe = &parsed["watch"].as_array().unwrap()[0]["probe"];
        assert_eq!(probe["username"].as_str(), Some("probe"));
        assert_eq!(probe["iam_auth"].as_bool(), Some(true));
        assert!(probe.get("password_env").is_none());
        assert!(!config(dir, &ca, None).render().contains("iam_auth"));
    }
}
