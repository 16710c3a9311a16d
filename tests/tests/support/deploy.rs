//! The health-check switch's set-up (`[watch.switch] kind = "health_check"`, issue 21), as an
//! operator makes it: `valkey-dr template --format json` deployed into the lab as
//! CloudFormation would, through the real SDK clients, for the four resource types the template
//! holds; the warm standby is built beforehand with `valkey-dr standby create`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_elasticache::config::Credentials;
use serde_json::Value;

use super::{TestLab, run_bounded_within};

/// `standby create` builds in the lab's provision delay; `template` and `preflight` are quick.
pub const CLI_BOUND: Duration = Duration::from_secs(90);
/// Where the template is deployed: the DR region, `metric_region`'s default.
pub const DR_REGION: &str = "us-west-2";

/// The edit of the lab's agent.toml that gives its watch a warm standby and the health-check
/// switch.
pub const HEALTH_CHECK_SWITCH: (&str, &str) = (
    "create_timeout = \"5m\"\n",
    "create_timeout = \"5m\"\nstandby = \"warm\"\n\n[watch.switch]\nkind = \"health_check\"\n",
);

/// `valkey-dr <args> --config <config>`, bounded by [`CLI_BOUND`]: exit code and output.
pub async fn cli(config: &Path, args: &[&str]) -> (i32, String) {
    let mut command = tokio::process::Command::new(super::agent_bin());
    command
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("VALKEY_DR_CONFIG")
        .stdin(Stdio::null());
    let out = run_bounded_within(command, CLI_BOUND).await;
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The SDK's configuration for the lab in `region`, with the lab's dummy keys.
pub async fn sdk(lab: &TestLab, region: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .endpoint_url(&lab.lab.info().aws_endpoint)
        .credentials_provider(Credentials::new("AKIDLAB", "secret", None, None, "lab"))
        .load()
        .await
}

/// The endpoint of the lab's cache `cache` now (the standby is made after the lab starts).
pub fn endpoint(lab: &TestLab, cache: &str) -> String {
    lab.lab
        .current_info()
        .cache(cache)
        .unwrap_or_else(|| panic!("the lab has no cache {cache}"))
        .endpoint
        .clone()
}

/// The template's resources of type `kind`: (logical id, properties).
pub fn resources<'t>(template: &'t Value, kind: &str) -> Vec<(&'t String, &'t Value)> {
    template["Resources"]
        .as_object()
        .expect("Resources")
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .map(|(id, r)| (id, &r["Properties"]))
        .collect()
}

/// The template `valkey-dr template --format json` prints for `config`.
pub async fn template(config: &Path) -> Value {
    let (code, output) = cli(config, &["template", "--format", "json"]).await;
    assert_eq!(code, 0, "{output}");
    serde_json::from_str(&output).unwrap_or_else(|e| panic!("{e}: {output}"))
}

/// Deploys `template` into the lab as CloudFormation would (the lab's own deployer,
/// `valkey_dr_lab::deploy`, through the real SDK clients), with its alarms in `alarm_region`.
pub async fn deploy(lab: &TestLab, template: &Value, alarm_region: &str) {
    valkey_dr_lab::deploy::deploy_switch(&lab.lab.current_info(), template, Some(alarm_region))
        .await
        .unwrap_or_else(|e| panic!("the template deploys into the lab: {e}"));
}
