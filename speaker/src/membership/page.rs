//! The `/membership` page: this speaker's [`LiveView`] in the form `kubectl ferrolb status`
//! reads ([`ferrolb_crds::membership_view`]).

use ferrolb_crds::membership_view::{self, MembershipView};

use super::view::{LiveView, ViewSource};

/// `view`, as `node`'s speaker serves it.
pub fn page(node: &str, view: &LiveView) -> String {
    let page = MembershipView {
        node: node.to_string(),
        source: match view.source {
            ViewSource::Mesh => membership_view::ViewSource::Mesh,
            ViewSource::NodeFallback => membership_view::ViewSource::NodeFallback,
        },
        live: view.live.iter().cloned().collect(),
    };
    serde_json::to_string(&page).expect("a struct of strings serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_lists_the_live_nodes_in_order() {
        let view = LiveView {
            live: ["node3", "node1"].map(String::from).into_iter().collect(),
            source: ViewSource::Mesh,
        };
        let parsed: MembershipView = serde_json::from_str(&page("node1", &view)).unwrap();
        assert_eq!(parsed.node, "node1");
        assert_eq!(parsed.live, ["node1", "node3"]);
        assert_eq!(parsed.source, membership_view::ViewSource::Mesh);
    }
}
