//! `kubectl ferrolb explain` (pure): why a Service has, or has no, EXTERNAL-IP and who answers
//! for it, in sentences with the fix. Everything comes from the API (see [`crate::facts`]): the
//! Service's type, class and the conditions ferrolb writes on it (`IPAllocated` by the
//! controller, `Announced` by the speakers), its Warning Events, the controller's Lease and the
//! speaker pods.

use ferrolb_crds::contract::annotation::{ADDRESS_POOL, ALLOW_SHARED_IP};
use ferrolb_crds::contract::condition::{ANNOUNCED, IP_ALLOCATED};
use ferrolb_crds::contract::label::{EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS, SERVICE_NAME};
use ferrolb_crds::contract::reason;
use ferrolb_crds::{ingress_ips, service_condition};
use k8s_openapi::api::core::v1::Service;
use serde::Serialize;

use crate::facts::{ControllerFact, EventFact, SpeakerFact};

/// What `explain` reads about one Service.
#[derive(Clone, Debug)]
pub struct ServiceFacts {
    /// The Service.
    pub service: Service,
    /// Its Warning Events, newest first.
    pub warnings: Vec<EventFact>,
    /// The controller's leader election.
    pub controller: ControllerFact,
    /// The speaker pods.
    pub speakers: Vec<SpeakerFact>,
    /// Where ferrolb runs.
    pub ferrolb_namespace: String,
}

/// Where the Service stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// It has its addresses and a node (or BGP router) announces them.
    Serving,
    /// Not of type LoadBalancer.
    NotALoadBalancer,
    /// Another implementation's (`spec.loadBalancerClass`).
    OtherClass,
    /// No address (yet).
    NoAddress,
    /// Addresses, but nobody announces them.
    NotAnnounced,
}

/// One sentence of the explanation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// Whether this is how it should be.
    pub ok: bool,
    /// What is so, naming the objects.
    pub sentence: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fixes: Vec<String>,
}

impl Finding {
    fn ok(sentence: String) -> Finding {
        Finding {
            ok: true,
            sentence,
            fixes: Vec::new(),
        }
    }

    fn problem(sentence: String, fixes: Vec<String>) -> Finding {
        Finding {
            ok: false,
            sentence,
            fixes,
        }
    }
}

/// The explanation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// `namespace/name`.
    pub service: String,
    /// Where it stands.
    pub verdict: Verdict,
    /// Its EXTERNAL-IPs.
    pub addresses: Vec<String>,
    /// What is so, in order: the type, the addresses, the announcement, recent warnings.
    pub findings: Vec<Finding>,
}

/// Explains `f.service`.
pub fn explain(f: &ServiceFacts) -> Explanation {
    let svc = &f.service;
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    let key = format!("{ns}/{name}");
    let spec = svc.spec.clone().unwrap_or_default();
    let addresses = ingress_ips(svc);
    let mut out = Explanation {
        service: key.clone(),
        verdict: Verdict::Serving,
        addresses: addresses.clone(),
        findings: Vec::new(),
    };
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if kind != "LoadBalancer" {
        out.verdict = Verdict::NotALoadBalancer;
        out.findings.push(Finding::problem(
            format!(
                "Service {key} is of type {kind}: only Services of type LoadBalancer get an EXTERNAL-IP."
            ),
            vec![format!(
                "kubectl patch service {name} -n {ns} -p '{{\"spec\":{{\"type\":\"LoadBalancer\"}}}}'"
            )],
        ));
        return out;
    }

    match service_condition(svc, IP_ALLOCATED) {
        None => {
            out.verdict = Verdict::NoAddress;
            out.findings.push(no_allocation_yet(
                f,
                &key,
                spec.load_balancer_class.as_deref(),
            ));
            if spec.load_balancer_class.is_some() {
                out.verdict = Verdict::OtherClass;
            }
        }
        Some(c) if c.status != "True" => {
            out.verdict = Verdict::NoAddress;
            out.findings.push(Finding::problem(
                format!(
                    "Service {key} has no EXTERNAL-IP: {} ({}, since {}).",
                    c.message.trim_end_matches('.'),
                    c.reason,
                    c.last_transition_time.0
                ),
                allocation_fixes(&c.reason, &name, &ns),
            ));
        }
        Some(c) => out.findings.push(Finding::ok(format!(
            "Service {key} has {} ({}, since {}).",
            addresses.join(", "),
            c.message.trim_end_matches('.'),
            c.last_transition_time.0
        ))),
    }

    if out.verdict == Verdict::Serving {
        match service_condition(svc, ANNOUNCED) {
            None => {
                out.verdict = Verdict::NotAnnounced;
                out.findings.push(no_report_yet(f, &addresses));
            }
            Some(c) if c.status != "True" => {
                out.verdict = Verdict::NotAnnounced;
                out.findings.push(Finding::problem(
                    format!(
                        "Nobody announces {}: {} ({}, since {}).",
                        addresses.join(", "),
                        c.message
                            .trim_start_matches(&format!(
                                "nobody announces {}: ",
                                addresses.join(", ")
                            ))
                            .trim_end_matches('.'),
                        c.reason,
                        c.last_transition_time.0
                    ),
                    announcement_fixes(&c.reason, &c.message, &name, &ns, &f.ferrolb_namespace),
                ));
            }
            Some(c) => out.findings.push(Finding::ok(format!(
                "Who answers: {} (since {}).",
                c.message.trim_end_matches('.'),
                c.last_transition_time.0
            ))),
        }
    }

    // A Warning that repeats a condition's message adds nothing.
    let said: Vec<&str> = [IP_ALLOCATED, ANNOUNCED]
        .into_iter()
        .filter_map(|t| service_condition(svc, t))
        .map(|c| c.message.trim_end_matches('.'))
        .collect();
    let news = f
        .warnings
        .iter()
        .filter(|w| !said.contains(&w.message.trim_end_matches('.')));
    for w in news.take(5) {
        out.findings.push(Finding {
            ok: out.verdict == Verdict::Serving,
            sentence: format!(
                "Warning {} from {} ({}x, last {}): {}",
                w.reason, w.source, w.count, w.last, w.message
            ),
            fixes: Vec::new(),
        });
    }
    out
}

/// No `IPAllocated` condition: another class, no controller, or not yet.
fn no_allocation_yet(f: &ServiceFacts, key: &str, class: Option<&str>) -> Finding {
    let controller_pods = format!(
        "kubectl -n {} get pods -l app.kubernetes.io/component=controller",
        f.ferrolb_namespace
    );
    if let Some(class) = class {
        return Finding::problem(
            format!(
                "Service {key} has spec.loadBalancerClass {class} and ferrolb never wrote its \
                 {IP_ALLOCATED} condition: ferrolb serves only the class its controller was started \
                 with (--lb-class; by default Services without a class), so another load balancer \
                 is expected to serve this one."
            ),
            vec![
                "to have ferrolb serve it, recreate the Service without spec.loadBalancerClass (the field cannot be changed)".to_string(),
                format!("or run ferrolb's controller and speakers with --lb-class {class}"),
            ],
        );
    }
    match &f.controller.leader {
        Some(leader) if f.controller.live => Finding::problem(
            format!(
                "Service {key} has no EXTERNAL-IP yet: the controller ({leader}, the leader) has not \
                 written its {IP_ALLOCATED} condition."
            ),
            vec![
                "it normally does within a second; if not, read its log:".to_string(),
                format!(
                    "kubectl -n {} logs deploy/ferrolb-controller",
                    f.ferrolb_namespace
                ),
            ],
        ),
        _ => Finding::problem(
            format!(
                "Service {key} has no EXTERNAL-IP: no ferrolb controller is running ({}), so \
                 nothing allocates addresses.",
                f.controller.describe()
            ),
            vec![
                controller_pods,
                format!(
                    "kubectl -n {} describe deploy/ferrolb-controller",
                    f.ferrolb_namespace
                ),
            ],
        ),
    }
}

/// No `Announced` condition: no speaker, or not yet.
fn no_report_yet(f: &ServiceFacts, addresses: &[String]) -> Finding {
    let ready = f.speakers.iter().filter(|s| s.ready).count();
    let pods = format!(
        "kubectl -n {} get pods -l app.kubernetes.io/component=speaker -o wide",
        f.ferrolb_namespace
    );
    if ready == 0 {
        Finding::problem(
            format!(
                "Nobody announces {}: no speaker pod is ready ({} speaker pods in {}), so no \
                 node answers ARP/NDP or talks BGP for it.",
                addresses.join(", "),
                f.speakers.len(),
                f.ferrolb_namespace
            ),
            vec![pods],
        )
    } else {
        Finding::problem(
            format!(
                "No speaker has reported on {} yet ({ready} of {} speaker pods ready): the {ANNOUNCED} \
                 condition is missing.",
                addresses.join(", "),
                f.speakers.len()
            ),
            vec![
                "speakers report within a second; if not, read their logs:".to_string(),
                format!(
                    "kubectl -n {} logs -l app.kubernetes.io/component=speaker --tail=50",
                    f.ferrolb_namespace
                ),
            ],
        )
    }
}

/// What to do about an allocation failure with `reason`.
fn allocation_fixes(why: &str, name: &str, ns: &str) -> Vec<String> {
    let fix: &[&str] = match why {
        reason::NO_POOL => {
            &["create an IPAddressPool: kubectl apply -f pool.yaml (docs/configuration.md)"]
        }
        reason::NO_POOL_MATCHES => &[
            "name a pool with the annotation ADDRESS_POOL",
            "or widen a pool's spec.serviceAllocation (namespaces, namespaceSelectors, serviceSelectors), or set its spec.autoAssign: true",
        ],
        reason::POOL_EXHAUSTED => &[
            "add addresses to the pool's spec.addresses, or add a pool",
            "or delete Services that hold addresses (kubectl ferrolb status shows each pool's use)",
        ],
        reason::POOL_NOT_FOUND => {
            &["correct the annotation ADDRESS_POOL, or create the pool it names"]
        }
        reason::NOT_IN_ANY_POOL => {
            &["add the address to a pool's spec.addresses, or request one that is in a pool"]
        }
        reason::IP_IN_USE => &[
            "request a free address",
            "or, to share it, give both Services the same annotation ALLOW_SHARED_IP with different ports and the same externalTrafficPolicy",
        ],
        reason::PORT_COLLISION => &[
            "Services sharing an address must use different ports: change spec.ports or the requested address",
        ],
        reason::INELIGIBLE_IP => {
            &["request another address, or set the pool's spec.avoidBuggyIPs: false"]
        }
        reason::INVALID_REQUEST => {
            &["correct the request the message names (annotations or spec.loadBalancerIP)"]
        }
        _ => &[],
    };
    let mut fixes: Vec<String> = fix
        .iter()
        .map(|s| {
            s.replace("ADDRESS_POOL", ADDRESS_POOL)
                .replace("ALLOW_SHARED_IP", ALLOW_SHARED_IP)
        })
        .collect();
    fixes.push(format!(
        "kubectl describe service {name} -n {ns} (its Events)"
    ));
    fixes
}

/// What to do about an announcement the speakers report as impossible, from the causes the
/// condition's message names.
fn announcement_fixes(
    why: &str,
    message: &str,
    name: &str,
    ns: &str,
    ferrolb_ns: &str,
) -> Vec<String> {
    let mut fixes = Vec::new();
    if why == reason::NO_INTERFACE {
        fixes.push("check the L2Advertisement's spec.interfaces and the speaker's --exclude-interfaces against the node's interfaces (ip -br link)".to_string());
    }
    if message.contains("no L2Advertisement selects IPAddressPool") {
        let pool = message
            .split("no L2Advertisement selects IPAddressPool ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or("<pool>");
        fixes.push(format!(
            "apply an L2Advertisement (or a BGPAdvertisement) with spec.ipAddressPools: [{pool}]"
        ));
    }
    if message.contains("externalTrafficPolicy is Local") {
        fixes.push(format!(
            "make a pod of the Service ready (kubectl get endpointslices -n {ns} -l {SERVICE_NAME}={name}), or set externalTrafficPolicy: Cluster"
        ));
    }
    if message.contains(EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS) {
        fixes.push(format!(
            "remove the label from a node: kubectl label node <node> {EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS}-"
        ));
    }
    if message.contains("NetworkUnavailable") {
        fixes
            .push("repair the node's network (its CNI plugin sets NetworkUnavailable)".to_string());
    }
    if message.contains("selects the node (spec.nodeSelectors)") {
        fixes.push(
            "widen the advertisement's spec.nodeSelectors to a node that runs a speaker"
                .to_string(),
        );
    }
    if message.contains("no live speaker") {
        fixes.push(format!(
            "kubectl -n {ferrolb_ns} get pods -l app.kubernetes.io/component=speaker -o wide"
        ));
    }
    if message.contains("no BGPAdvertisement announces it") && fixes.is_empty() {
        fixes.push("apply an L2Advertisement or a BGPAdvertisement naming the pool".to_string());
    }
    fixes
}

#[cfg(test)]
#[path = "explain_tests.rs"]
mod tests;
