//! The `placement` check: does this agent run where the outage it watches for leaves it
//! standing? An agent in the primary's region goes down, or is cut off, with it. No AWS call:
//! the agent's region is `[agent] region`, or what the daemon found at start
//! (`aws::own_region`: the environment, else the instance metadata).
//!
//! Alone there, it never fails over in the one outage it exists for. With peers, the quorum
//! decides, and the agent cannot know where its peers run: only where it runs itself. With
//! the health-check switch, its verdicts stop with the region, and its health check then
//! counts for the primary: the agents that make the quorum must run elsewhere.

use super::{CheckStatus, Finding, WithFix, finding};
use crate::config::{Config, WatchConfig};

const CHECK: &str = "placement";

/// Where the agents should run, for the fixes.
const ELSEWHERE: &str = "the DR region's cluster or hosts, or a third region (README, Kubernetes: where the agents run)";

/// The `placement` check of `w`.
pub(super) fn placement(config: &Config, w: &WatchConfig) -> Finding {
    let Some(region) = &config.agent.region else {
        return finding(
            w,
            CHECK,
            CheckStatus::Ok,
            "not checked: this agent's region is not known here ([agent] region is not set; the daemon finds its own from AWS_REGION or the instance metadata)".into(),
        );
    };
    let primary = &w.primary.region;
    if region != primary {
        return finding(
            w,
            CHECK,
            CheckStatus::Ok,
            format!("this agent runs in {region}, outside the primary's region {primary}"),
        );
    }
    if w.switch.health_check().is_some() {
        return finding(
            w,
            CHECK,
            CheckStatus::Warn,
            format!(
                "this agent runs in {region}, the primary's region: in its outage the agent's verdicts stop, and its health check counts for the primary"
            ),
        )
        .fix(format!(
            "run the agents that make the quorum outside {region}: {ELSEWHERE}"
        ));
    }
    if config.agent.peers.is_empty() {
        return finding(
            w,
            CHECK,
            CheckStatus::Warn,
            format!(
                "this agent runs in {region}, the primary's region, with no peers: it goes down with the region it watches, and then nothing fails over"
            ),
        )
        .fix(format!(
            "run an acting agent outside {region} ({ELSEWHERE}), or several with peers and a quorum"
        ));
    }
    finding(
        w,
        CHECK,
        CheckStatus::Ok,
        format!(
            "this agent runs in {region}, the primary's region, with {} peer entries: most of the agents of the quorum must run elsewhere",
            config.agent.peers.len()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HealthCheckSwitch, SwitchConfig};

    fn config(region: Option<&str>, peers: &[&str]) -> Config {
        let text = "[agent]\nid = \"a\"\nstate_dir = \"/tmp/x\"\n\
             [[watch]]\nname = \"s\"\nrecord = \"v.app.internal.\"\nhosted_zone_id = \"Z1\"\n\
             [watch.primary]\nregion = \"us-east-1\"\ncache_name = \"app\"\nendpoint = \"app.example\"\n\
             [watch.dr]\nregion = \"us-west-2\"\ncache_name = \"app-dr\"\n";
        let mut config = Config::parse(
            text,
            std::path::Path::new("/etc/valkey-dr/agent.toml"),
            &crate::config::ProcessEnv,
        )
        .expect("valid");
        config.agent.region = region.map(str::to_owned);
        config.agent.peers = peers.iter().map(|p| (*p).to_owned()).collect();
        config
    }

    #[test]
    fn an_agent_alone_in_the_primary_region_is_warned_and_one_elsewhere_is_not() {
        let c = config(None, &[]);
        let f = placement(&c, &c.watches[0]);
        assert_eq!(f.result, CheckStatus::Ok);
        assert!(f.found.starts_with("not checked"), "{}", f.found);

        let c = config(Some("us-east-1"), &[]);
        let f = placement(&c, &c.watches[0]);
        assert_eq!(f.result, CheckStatus::Warn, "{f:?}");
        assert!(f.found.contains("with no peers"), "{}", f.found);
        assert!(f.fix.as_deref().unwrap().contains("outside us-east-1"));

        let c = config(Some("us-east-1"), &["10.0.1.12:9187"]);
        assert_eq!(placement(&c, &c.watches[0]).result, CheckStatus::Ok);

        let c = config(Some("us-west-2"), &[]);
        let f = placement(&c, &c.watches[0]);
        assert_eq!(f.result, CheckStatus::Ok);
        assert!(f.found.contains("outside the primary's region us-east-1"));
    }

    #[test]
    fn a_health_check_agent_in_the_primary_region_is_warned_even_with_peers() {
        let mut c = config(Some("us-east-1"), &["10.0.1.12:9187"]);
        c.watches[0].switch = SwitchConfig::HealthCheck(HealthCheckSwitch {
            metric_region: "us-west-2".into(),
            namespace: "ValkeyDR".into(),
            evaluation_periods: 1,
            datapoints_to_alarm: 1,
        });
        let f = placement(&c, &c.watches[0]);
        assert_eq!(f.result, CheckStatus::Warn, "{f:?}");
        assert!(f.found.contains("verdicts stop"), "{}", f.found);
    }
}
