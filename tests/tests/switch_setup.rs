//! preflight's checks of the health-check switch's set-up (`[watch.switch] kind =
//! "health_check"`, issue 21): the template `valkey-dr template` prints, deployed into the lab
//! by a small deployer of its resource types through the real SDK clients, passes
//! `route53_record` and `switch`; the same template with its alarms in another region than
//! `metric_region` fails `switch`, naming the alarm and both regions, and so does one whose
//! calculated check counts the wrong number of agents.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use support::TestLab;
use support::deploy::{DR_REGION, HEALTH_CHECK_SWITCH, cli, deploy, resources, template};

/// A lab whose watch keeps a warm standby (built) and switches through health checks.
async fn setup() -> (TestLab, PathBuf) {
    let lab = TestLab::start_with(|o| {
        o.provision_delay = Duration::from_secs(1);
    })
    .await;
    let config = lab.config_variant("switch.toml", &[HEALTH_CHECK_SWITCH]);
    let built = cli(&config, &["standby", "create"]).await;
    assert!(built.0 == 0, "standby create: {}", built.1);
    (lab, config)
}

fn check<'j>(json: &'j Value, name: &str) -> &'j Value {
    json["checks"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["check"] == name))
        .unwrap_or_else(|| panic!("no check {name}: {json:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployed_template_passes_preflight_and_its_alarms_elsewhere_fail_it() {
    let (lab, config) = setup().await;
    // Before the set-up: the record is a simple CNAME.
    let (code, json, output) = support::preflight_json(&config).await;
    assert_eq!(code, 2, "CRITICAL before the set-up: {output}");
    assert_eq!(check(&json, "route53_record")["result"], "fail", "{output}");
    assert_eq!(check(&json, "switch")["result"], "fail", "{output}");

    deploy(&lab, &template(&config).await, DR_REGION).await;
    let (code, json, output) = support::preflight_json(&config).await;
    assert_eq!(check(&json, "route53_record")["result"], "ok", "{output}");
    let switch = check(&json, "switch");
    assert_eq!(switch["result"], "ok", "{output}");
    assert!(
        switch["found"]
            .as_str()
            .unwrap()
            .contains("healthy while 1 of 1 agents' checks are"),
        "{switch:#}"
    );
    assert_eq!(code, 0, "every check passes: {output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_deployed_with_its_alarms_in_another_region_fails_the_switch_check() {
    let (lab, config) = setup().await;
    deploy(&lab, &template(&config).await, "us-east-2").await;
    let (code, json, output) = support::preflight_json(&config).await;
    assert_eq!(code, 2, "CRITICAL: {output}");
    let switch = check(&json, "switch");
    assert_eq!(switch["result"], "fail", "{output}");
    let found = switch["found"].as_str().unwrap();
    assert!(
        found.contains("watches alarm valkey-dr-sessions-lab-agent in us-east-2, not in metric_region us-west-2"),
        "{switch:#}"
    );
    assert!(
        switch["fix"]
            .as_str()
            .unwrap()
            .contains("valkey-dr template --watch sessions"),
        "{switch:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calculated_check_that_counts_the_wrong_agents_fails_the_switch_check() {
    let (lab, config) = setup().await;
    // The template of a config that names a second agent: one child more than this config's
    // agent count, and a threshold for two.
    let mut t = template(&config).await;
    let quorum = resources(&t, "AWS::Route53::HealthCheck")
        .into_iter()
        .find(|(_, p)| p["HealthCheckConfig"]["Type"] == "CALCULATED")
        .map(|(id, _)| id.clone())
        .unwrap();
    t["Resources"][&quorum]["Properties"]["HealthCheckConfig"]["HealthThreshold"] = 2.into();
    deploy(&lab, &t, DR_REGION).await;
    let (_, json, output) = support::preflight_json(&config).await;
    let switch = check(&json, "switch");
    assert_eq!(switch["result"], "fail", "{output}");
    assert!(
        switch["found"].as_str().unwrap().contains(
            "is healthy while 2 children are; with 1 agents and a quorum of 1 it must be 1"
        ),
        "{switch:#}"
    );
}
