//! `kubectl ferrolb status` (pure): the controller's leader, the speakers, each pool's use per
//! family, and each LoadBalancer Service's addresses with who announces them since when.

use std::collections::BTreeMap;

use ferrolb_crds::IPAddressPool;
use ferrolb_crds::contract::annotation::ALLOCATED_FROM_POOL;
use ferrolb_crds::contract::condition::{ANNOUNCED, IP_ALLOCATED, POOL_EXHAUSTED, POOL_VALID};
use ferrolb_crds::membership_view::ViewSource;
use ferrolb_crds::{ingress_ips, service_condition};
use k8s_openapi::api::core::v1::Service;
use serde::Serialize;

use crate::facts::{ControllerFact, SpeakerFact};

/// What `status` reads.
#[derive(Clone, Debug)]
pub struct StatusFacts {
    /// The controller's leader election.
    pub controller: ControllerFact,
    /// The speaker pods.
    pub speakers: Vec<SpeakerFact>,
    /// Every IPAddressPool.
    pub pools: Vec<IPAddressPool>,
    /// Every Service (only LoadBalancer ones are shown).
    pub services: Vec<Service>,
}

/// Addresses of one family in one pool.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Held by Services.
    pub used: u128,
    /// Free to hand out.
    pub free: u128,
}

/// One pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolLine {
    /// Its name.
    pub name: String,
    /// IPv4 addresses.
    pub ipv4: Usage,
    /// IPv6 addresses.
    pub ipv6: Usage,
    /// What its conditions report as wrong (invalid, exhausted), or that the controller has not
    /// looked at it yet.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// One LoadBalancer Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceLine {
    /// `namespace/name`.
    pub service: String,
    /// Its EXTERNAL-IPs.
    pub addresses: Vec<String>,
    /// The pool they came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Who announces them (the `Announced` condition), or why nobody does, or why it has none.
    pub announced: String,
    /// Since when that holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Whether it has addresses and someone announces them.
    pub serving: bool,
}

/// The whole picture.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The controller.
    pub controller: ControllerFact,
    /// The speakers.
    pub speakers: Vec<SpeakerFact>,
    /// The pools.
    pub pools: Vec<PoolLine>,
    /// The LoadBalancer Services.
    pub services: Vec<ServiceLine>,
    /// What is wrong with the speakers' views of each other, in sentences: views that differ
    /// (a split view), speakers that hear no heartbeat.
    pub membership_problems: Vec<String>,
}

impl Status {
    /// Whether everything is as it should be: a live leader, speaker pods and every one ready,
    /// the speakers agreeing on who is alive, every Service served.
    pub fn healthy(&self) -> bool {
        self.controller.live
            && !self.speakers.is_empty()
            && self.speakers.iter().all(|s| s.ready)
            && self.membership_problems.is_empty()
            && self.services.iter().all(|s| s.serving)
    }
}

/// What is wrong with the views the speakers serve (pure): a speaker on the Node-readiness
/// fallback, and views that differ, each view with the nodes that hold it. Speakers whose view
/// could not be read are left out (the table says why).
pub fn membership_problems(speakers: &[SpeakerFact]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut views: BTreeMap<&[String], Vec<&str>> = BTreeMap::new();
    for s in speakers {
        let Some(view) = &s.membership else {
            continue;
        };
        if view.source == ViewSource::NodeFallback {
            problems.push(format!(
                "the speaker on {} hears no heartbeat and takes live speakers from Node readiness \
                 (failover as slow as the node controller); check the memberlist port between \
                 nodes and that every speaker has the same key",
                s.node
            ));
        }
        views.entry(&view.live).or_default().push(&s.node);
    }
    if views.len() > 1 {
        let described: Vec<String> = views
            .iter()
            .map(|(live, holders)| format!("{} see {}", holders.join(", "), live.join(", ")))
            .collect();
        problems.push(format!(
            "split view: the speakers disagree about who is alive ({}); speakers that see \
             different live sets may both answer for an address, or none",
            described.join("; ")
        ));
    }
    problems
}

/// The status `f` shows.
pub fn status(f: &StatusFacts) -> Status {
    let mut pools: Vec<PoolLine> = f.pools.iter().map(pool_line).collect();
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    let mut services: Vec<ServiceLine> = f
        .services
        .iter()
        .filter(|s| s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer"))
        .map(service_line)
        .collect();
    services.sort_by(|a, b| a.service.cmp(&b.service));
    let mut speakers = f.speakers.clone();
    speakers.sort_by(|a, b| a.node.cmp(&b.node));
    Status {
        controller: f.controller.clone(),
        membership_problems: membership_problems(&speakers),
        speakers,
        pools,
        services,
    }
}

fn pool_line(pool: &IPAddressPool) -> PoolLine {
    let name = pool.metadata.name.clone().unwrap_or_default();
    let mut problems = Vec::new();
    let (ipv4, ipv6) = match &pool.status {
        Some(s) => {
            for c in &s.conditions {
                let wrong = (c.type_ == POOL_VALID && c.status == "False")
                    || (c.type_ == POOL_EXHAUSTED && c.status == "True");
                if wrong {
                    problems.push(format!("{}: {}", c.reason, c.message));
                }
            }
            (
                Usage {
                    used: s.assigned_ipv4.0,
                    free: s.available_ipv4.0,
                },
                Usage {
                    used: s.assigned_ipv6.0,
                    free: s.available_ipv6.0,
                },
            )
        }
        None => {
            problems.push("no status yet: the controller has not read this pool".to_string());
            (Usage::default(), Usage::default())
        }
    };
    PoolLine {
        name,
        ipv4,
        ipv6,
        problems,
    }
}

fn service_line(svc: &Service) -> ServiceLine {
    let key = format!(
        "{}/{}",
        svc.metadata.namespace.as_deref().unwrap_or_default(),
        svc.metadata.name.as_deref().unwrap_or_default()
    );
    let addresses = ingress_ips(svc);
    let pool = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ALLOCATED_FROM_POOL).cloned());
    let allocated = service_condition(svc, IP_ALLOCATED);
    let announced = service_condition(svc, ANNOUNCED);
    let (text, since, serving) = match (allocated, announced) {
        (Some(a), _) if a.status != "True" => (
            format!("no address: {}", a.message),
            Some(a.last_transition_time.0.to_string()),
            false,
        ),
        (None, _) if addresses.is_empty() => (
            "no address: the controller has not handled it".to_string(),
            None,
            false,
        ),
        (_, Some(c)) => (
            c.message.clone(),
            Some(c.last_transition_time.0.to_string()),
            c.status == "True",
        ),
        (_, None) => ("no speaker has reported on it".to_string(), None, false),
    };
    ServiceLine {
        service: key,
        addresses,
        pool,
        announced: text,
        since,
        serving,
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
