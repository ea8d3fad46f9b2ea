use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::json;

use ferrolb_crds::contract::reason;

use super::*;

fn lease(holder: &str, renewed: Timestamp, secs: i32) -> Lease {
    Lease {
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(renewed)),
            lease_duration_seconds: Some(secs),
            ..LeaseSpec::default()
        }),
        ..Lease::default()
    }
}

#[test]
fn a_lease_renewed_within_its_duration_has_a_live_leader() {
    let now = Timestamp::from_second(1_000_000).unwrap();
    let l = lease("controller-a", now - SignedDuration::from_secs(5), 15);
    let f = ControllerFact::from_lease("ferrolb-system/ferrolb-controller", Some(&l), now);
    assert!(f.live);
    assert_eq!(
        f.describe(),
        "controller-a leads (Lease ferrolb-system/ferrolb-controller)"
    );
}

#[test]
fn an_expired_missing_or_empty_lease_has_no_live_leader() {
    let now = Timestamp::from_second(1_000_000).unwrap();
    let old = lease("controller-a", now - SignedDuration::from_secs(16), 15);
    let f = ControllerFact::from_lease("ns/l", Some(&old), now);
    assert!(!f.live);
    assert!(
        f.describe().contains("last renewed by controller-a"),
        "{}",
        f.describe()
    );
    assert!(f.describe().ends_with("has expired"));
    let f = ControllerFact::from_lease("ns/l", None, now);
    assert!(!f.live && !f.lease_found);
    assert_eq!(f.describe(), "Lease ns/l does not exist");
    let f = ControllerFact::from_lease("ns/l", Some(&lease("", now, 15)), now);
    assert!(!f.live);
    assert_eq!(f.describe(), "Lease ns/l has no holder");
}

#[test]
fn a_speaker_pod_is_ready_or_says_why_it_waits() {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "ferrolb-speaker-abc"},
        "spec": {"nodeName": "node1", "containers": []},
        "status": {"phase": "Running",
                   "conditions": [{"type": "Ready", "status": "False"}],
                   "containerStatuses": [{"name": "speaker", "image": "x", "imageID": "", "ready": false,
                                          "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]},
    }))
    .unwrap();
    let s = SpeakerFact::from_pod(&pod);
    assert_eq!(
        (s.pod.as_str(), s.node.as_str(), s.ready, s.state.as_str()),
        ("ferrolb-speaker-abc", "node1", false, "CrashLoopBackOff")
    );
    let ready: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p"}, "spec": {"nodeName": "node2", "containers": []},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }))
    .unwrap();
    let s = SpeakerFact::from_pod(&ready);
    assert!(s.ready);
    assert_eq!(s.state, "Running");
}

#[test]
fn events_give_their_newest_time_count_and_reporter() {
    let core: Event = serde_json::from_value(json!({
        "metadata": {"name": "e"}, "involvedObject": {},
        "type": "Warning", "reason": reason::ALLOCATION_FAILED, "message": "no free address",
        "count": 3, "lastTimestamp": "2026-12-05T06:00:00Z", "firstTimestamp": "2026-12-05T05:00:00Z",
        "source": {"component": "ferrolb-controller"},
    }))
    .unwrap();
    let e = EventFact::from_event(&core);
    assert_eq!(e.count, 3);
    assert_eq!(e.last, "2026-12-05T06:00:00Z");
    assert_eq!(e.source, "ferrolb-controller");
    let series: Event = serde_json::from_value(json!({
        "metadata": {"name": "e"}, "involvedObject": {},
        "type": "Warning", "reason": reason::KERNEL_ANSWERS_FOR_ADDRESS, "message": "m",
        "eventTime": "2026-12-05T05:00:00.000000Z", "reportingComponent": "ferrolb-speaker",
        "series": {"count": 7, "lastObservedTime": "2026-12-05T07:00:00.000000Z"},
    }))
    .unwrap();
    let e = EventFact::from_event(&series);
    assert_eq!((e.count, e.source.as_str()), (7, "ferrolb-speaker"));
    assert_eq!(e.last, "2026-12-05T07:00:00Z");
}
