//! The Helm chart's RBAC on a real apiserver, and identities that hold exactly it.
//!
//! ```text
//!  helm template <release> charts/ferrolb -n <ns> ──> ServiceAccount, ClusterRole(Binding),
//!      Role(Binding) only ──kubectl apply──> apiserver ──kubectl create token──> kubeconfig
//! ```
//!
//! Tests run the real controller and speakers under the chart's permissions, not as admin, so a
//! missing or excess rule shows up as a failing test. [`controller_kubeconfig`] and
//! [`speaker_kubeconfig`] do it all in one call.
//!
//! Names: the chart names its objects after the release (`<release>-ferrolb-controller`, or
//! `<release>-controller` when the release name contains `ferrolb`; `-speaker` likewise),
//! ClusterRoles included, so tests with different release names never collide on the shared
//! control plane.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::bins;
use crate::control_plane::ControlPlane;
use crate::process::{run, run_input, wait_for};

/// The Lease the controller's replicas elect a leader with (`--lease-name` in the chart).
pub const CONTROLLER_LEASE: &str = "ferrolb-controller";

/// Kinds [`apply_rbac`] applies; everything else the chart renders is left out.
pub const RBAC_KINDS: [&str; 5] = [
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];

/// Field manager of the testbed's applies.
const FIELD_MANAGER: &str = "ferrolb-testbed";

/// How long minted tokens stay valid; longer than any test run.
const TOKEN_DURATION: &str = "24h";

/// `helm template <release> charts/ferrolb --namespace <namespace> --set <s>...`: the rendered
/// YAML stream. `set` entries are `key=value`, as for `helm --set`.
pub fn render_chart(release: &str, namespace: &str, set: &[&str]) -> Result<String> {
    let mut cmd = Command::new(bins::binary("helm")?);
    cmd.args(["template", release])
        .arg(bins::workspace_root().join("charts/ferrolb"))
        .args(["--namespace", namespace]);
    for s in set {
        cmd.args(["--set", s]);
    }
    run(&mut cmd)
        .with_context(|| format!("rendering the chart as release {release} in {namespace}"))
}

/// The documents of a rendered YAML stream as JSON values, empty documents dropped.
pub fn documents(rendered: &str) -> Result<Vec<Value>> {
    use serde::Deserialize;
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(rendered) {
        let value = Value::deserialize(doc).context("parsing the rendered chart")?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// One object of the chart's RBAC, as applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RbacObject {
    /// `ServiceAccount`, `ClusterRole`, ...
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`; `None` for cluster-scoped kinds.
    pub namespace: Option<String>,
    /// The `app.kubernetes.io/component` label (`controller`, later `speaker`).
    pub component: Option<String>,
}

/// The chart's RBAC objects for one release, as applied by [`apply_rbac`].
#[derive(Clone, Debug)]
pub struct ChartRbac {
    /// Release name the chart was rendered with.
    pub release: String,
    /// Release namespace: ServiceAccounts, Roles and RoleBindings live here.
    pub namespace: String,
    /// Every applied object.
    pub objects: Vec<RbacObject>,
}

impl ChartRbac {
    /// The name of the object of `kind` for `component` (say `ServiceAccount`, `controller`).
    pub fn name(&self, kind: &str, component: &str) -> Result<&str> {
        let mut found = self
            .objects
            .iter()
            .filter(|o| o.kind == kind && o.component.as_deref() == Some(component));
        let first = found.next().with_context(|| {
            format!(
                "the chart rendered no {kind} labelled app.kubernetes.io/component={component} \
                 for release {}",
                self.release
            )
        })?;
        if let Some(second) = found.next() {
            bail!(
                "the chart rendered two {kind}s for component {component}: {} and {}",
                first.name,
                second.name
            );
        }
        Ok(&first.name)
    }

    /// The ServiceAccount of `component`.
    pub fn service_account(&self, component: &str) -> Result<&str> {
        self.name("ServiceAccount", component)
    }

    /// `system:serviceaccount:<namespace>:<sa>`: the user name for `kubectl --as`.
    pub fn user(&self, component: &str) -> Result<String> {
        Ok(service_account_user(
            &self.namespace,
            self.service_account(component)?,
        ))
    }

    /// Deletes every applied object (the namespace stays), so a test can revoke the identity.
    pub fn remove(&self, cp: &ControlPlane) -> Result<()> {
        for o in &self.objects {
            let mut cmd = cp.kubectl()?;
            cmd.args([
                "delete",
                &o.kind,
                &o.name,
                "--ignore-not-found",
                "--wait=false",
            ]);
            if let Some(ns) = &o.namespace {
                cmd.args(["-n", ns]);
            }
            run(&mut cmd)?;
        }
        Ok(())
    }
}

/// `system:serviceaccount:<namespace>:<name>`.
pub fn service_account_user(namespace: &str, service_account: &str) -> String {
    format!("system:serviceaccount:{namespace}:{service_account}")
}

fn is_cluster_scoped(kind: &str) -> bool {
    matches!(kind, "ClusterRole" | "ClusterRoleBinding")
}

/// Renders the chart for `release` in `namespace` (with `set` values), creates the namespace if
/// missing, and applies only the RBAC objects ([`RBAC_KINDS`]) with server-side apply. Applying
/// again (same or another test) is harmless.
pub fn apply_rbac(
    cp: &ControlPlane,
    release: &str,
    namespace: &str,
    set: &[&str],
) -> Result<ChartRbac> {
    let rendered = render_chart(release, namespace, set)?;
    let mut items = vec![json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace},
    })];
    let mut objects = Vec::new();
    for mut doc in documents(&rendered)? {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        if !RBAC_KINDS.contains(&kind.as_str()) {
            continue;
        }
        let name = doc["metadata"]["name"]
            .as_str()
            .with_context(|| format!("a rendered {kind} has no metadata.name"))?
            .to_string();
        let ns = if is_cluster_scoped(&kind) {
            None
        } else {
            // The chart sets it from --namespace; set it anyway so nothing lands in `default`.
            doc["metadata"]["namespace"] = json!(namespace);
            Some(namespace.to_string())
        };
        let component = doc["metadata"]["labels"]["app.kubernetes.io/component"]
            .as_str()
            .map(str::to_string);
        objects.push(RbacObject {
            kind,
            name,
            namespace: ns,
            component,
        });
        items.push(doc);
    }
    if objects.is_empty() {
        bail!("the chart rendered no RBAC objects for release {release}");
    }
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    kubectl_stdin(
        cp,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            &format!("--field-manager={FIELD_MANAGER}"),
            "-f",
            "-",
        ],
        &serde_json::to_string(&list)?,
    )
    .with_context(|| format!("applying the chart's RBAC for release {release} in {namespace}"))?;
    Ok(ChartRbac {
        release: release.to_string(),
        namespace: namespace.to_string(),
        objects,
    })
}

/// Runs kubectl with `input` on stdin; stdout, or an error with stderr.
fn kubectl_stdin(cp: &ControlPlane, args: &[&str], input: &str) -> Result<String> {
    run_input(cp.kubectl()?.args(args), input)
}

/// Mints a token for `service_account` in `namespace` (`kubectl create token`, valid 24 h) and
/// writes `dir/<namespace>.<service_account>.kubeconfig` for it: the admin kubeconfig's server and CA, the
/// token as the user, `namespace` as the context's default namespace. Returns once the apiserver
/// accepts the token.
pub fn mint_kubeconfig(
    cp: &ControlPlane,
    namespace: &str,
    service_account: &str,
    dir: &Path,
) -> Result<PathBuf> {
    let token = cp
        .kubectl_run(&[
            "create",
            "token",
            service_account,
            "-n",
            namespace,
            &format!("--duration={TOKEN_DURATION}"),
        ])
        .with_context(|| {
            format!("minting a token for ServiceAccount {namespace}/{service_account}")
        })?;
    let token = token.trim();
    if token.is_empty() {
        bail!("kubectl create token printed no token for {namespace}/{service_account}");
    }

    let admin = std::fs::read_to_string(cp.kubeconfig())
        .with_context(|| format!("reading {}", cp.kubeconfig().display()))?;
    let admin: Value = serde_yaml::from_str(&admin)
        .with_context(|| format!("parsing {}", cp.kubeconfig().display()))?;
    let cluster = admin_cluster(&admin)
        .with_context(|| format!("no current cluster in {}", cp.kubeconfig().display()))?;
    let user = service_account_user(namespace, service_account);
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "ferrolb-testbed", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {
            "cluster": "ferrolb-testbed",
            "user": user,
            "namespace": namespace,
        }}],
        "current-context": user,
    });
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{namespace}.{service_account}.kubeconfig"));
    write_private(&path, &serde_yaml::to_string(&config)?)?;

    // The token is valid at once; wait anyway, so a caller's first request never races.
    let kubectl = bins::binary("kubectl")?;
    wait_for(
        &format!("the apiserver to accept the token of {user}"),
        Duration::from_secs(30),
        || {
            let out = Command::new(&kubectl)
                .arg(format!("--kubeconfig={}", path.display()))
                .args([
                    "auth",
                    "whoami",
                    "-o",
                    "jsonpath={.status.userInfo.username}",
                ])
                .stdin(Stdio::null())
                .output()?;
            Ok(
                (out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == user)
                    .then_some(()),
            )
        },
    )?;
    Ok(path)
}

/// The `cluster` entry (server, CA) of the admin kubeconfig's current context.
fn admin_cluster(admin: &Value) -> Option<Value> {
    let clusters = admin["clusters"].as_array()?;
    let wanted = admin["current-context"].as_str().and_then(|ctx| {
        admin["contexts"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == ctx)?["context"]["cluster"]
            .as_str()
    });
    let entry = match wanted {
        Some(name) => clusters.iter().find(|c| c["name"] == name)?,
        None => clusters.first()?,
    };
    let cluster = entry["cluster"].clone();
    cluster["server"].is_string().then_some(cluster)
}

/// Writes `contents` to `path` readable by the owner only (it holds a bearer token).
fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

/// `kubectl auth can-i <args> --as=<user>` as admin (impersonation): whether `user` may.
/// `args` are can-i's, e.g. `["patch", "services", "--subresource=status", "-n", "x"]` or
/// `["update", "leases/ferrolb-controller", "-n", "x"]`.
pub fn can_i(cp: &ControlPlane, user: &str, args: &[&str]) -> Result<bool> {
    let out = cp
        .kubectl()?
        .args(["auth", "can-i"])
        .args(args)
        .arg(format!("--as={user}"))
        .stdin(Stdio::null())
        .output()?;
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" if out.status.success() => Ok(true),
        "no" => Ok(false),
        other => bail!(
            "kubectl auth can-i {} --as={user}: unexpected answer {other:?} ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

/// The chart's controller identity in one call: applies the chart's RBAC for `release` in
/// `namespace` ([`apply_rbac`], no extra values), mints a kubeconfig for the controller's
/// ServiceAccount into `dir` ([`mint_kubeconfig`]), and returns its path once the apiserver's
/// authorizer grants the rules (list Services cluster-wide, update the Lease in `namespace`).
///
/// Run the controller with `KUBECONFIG=<path>` in its environment and
/// `--lease-namespace <namespace> --lease-name` [`CONTROLLER_LEASE`].
pub fn controller_kubeconfig(
    cp: &ControlPlane,
    release: &str,
    namespace: &str,
    dir: &Path,
) -> Result<PathBuf> {
    component_kubeconfig(
        cp,
        release,
        namespace,
        dir,
        "controller",
        &[
            &["list", "services", "--all-namespaces"],
            &[
                "update",
                &format!("leases/{CONTROLLER_LEASE}"),
                "-n",
                namespace,
            ],
        ],
    )
}

/// The chart's speaker identity in one call, like [`controller_kubeconfig`]: applies the chart's
/// RBAC for `release` in `namespace`, mints a kubeconfig for the speaker's ServiceAccount into
/// `dir`, and returns its path once the authorizer grants the speaker's reads (Services,
/// EndpointSlices, Nodes, pools, L2Advertisements, BGP objects, Secrets of its namespace by
/// name) and its one write (patch Services' status).
///
/// Run [`crate::speaker::Speaker`]s with it, so lab tests exercise exactly the chart's RBAC.
pub fn speaker_kubeconfig(
    cp: &ControlPlane,
    release: &str,
    namespace: &str,
    dir: &Path,
) -> Result<PathBuf> {
    component_kubeconfig(
        cp,
        release,
        namespace,
        dir,
        "speaker",
        &[
            &["watch", "services", "--all-namespaces"],
            &[
                "watch",
                "endpointslices.discovery.k8s.io",
                "--all-namespaces",
            ],
            &["watch", "nodes"],
            &["watch", "ipaddresspools.ferrolb.io"],
            &["watch", "l2advertisements.ferrolb.io"],
            &["watch", "bgppeers.ferrolb.io"],
            &["watch", "bgpadvertisements.ferrolb.io"],
            &["watch", "communities.ferrolb.io"],
            &["watch", "bfdprofiles.ferrolb.io"],
            &[
                "patch",
                "services",
                "--subresource=status",
                "--all-namespaces",
            ],
        ],
    )
}

/// Applies the chart's RBAC for `release` in `namespace`, mints a kubeconfig for `component`'s
/// ServiceAccount into `dir` and returns its path once the authorizer grants each of `granted`.
fn component_kubeconfig(
    cp: &ControlPlane,
    release: &str,
    namespace: &str,
    dir: &Path,
    component: &str,
    granted: &[&[&str]],
) -> Result<PathBuf> {
    let rbac = apply_rbac(cp, release, namespace, &[])?;
    let sa = rbac.service_account(component)?;
    let path = mint_kubeconfig(cp, namespace, sa, dir)?;
    wait_until_granted(cp, &rbac.user(component)?, granted)?;
    Ok(path)
}

/// Waits until `user` may do each of `checks` (can-i argument lists): the RBAC authorizer
/// learns of new roles and bindings through a watch, a moment after they are created.
pub fn wait_until_granted(cp: &ControlPlane, user: &str, checks: &[&[&str]]) -> Result<()> {
    for check in checks {
        wait_for(
            &format!("RBAC to let {user} {}", check.join(" ")),
            Duration::from_secs(30),
            || Ok(can_i(cp, user, check)?.then_some(())),
        )?;
    }
    Ok(())
}

/// A kube client for a kubeconfig file, e.g. one from [`controller_kubeconfig`].
pub async fn client(kubeconfig: &Path) -> Result<kube::Client> {
    let config = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_skip_empty_ones_and_keep_order() {
        let docs = documents("---\n# only a comment\n---\nkind: A\n---\n---\nkind: B\n").unwrap();
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["A", "B"]);
    }

    #[test]
    fn admin_cluster_follows_the_current_context() {
        let admin = json!({
            "clusters": [
                {"name": "other", "cluster": {"server": "https://192.0.2.1"}},
                {"name": "mine", "cluster": {"server": "https://192.0.2.2", "certificate-authority-data": "Q0E="}},
            ],
            "contexts": [{"name": "ctx", "context": {"cluster": "mine", "user": "admin"}}],
            "current-context": "ctx",
        });
        let cluster = admin_cluster(&admin).unwrap();
        assert_eq!(cluster["server"], "https://192.0.2.2");
        assert_eq!(cluster["certificate-authority-data"], "Q0E=");
        assert!(admin_cluster(&json!({"clusters": []})).is_none());
    }

    #[test]
    fn chart_rbac_names_by_kind_and_component() {
        let obj = |kind: &str, name: &str, component: Option<&str>| RbacObject {
            kind: kind.into(),
            name: name.into(),
            namespace: None,
            component: component.map(Into::into),
        };
        let rbac = ChartRbac {
            release: "r".into(),
            namespace: "ns".into(),
            objects: vec![
                obj("ServiceAccount", "r-ferrolb-controller", Some("controller")),
                obj("ServiceAccount", "r-ferrolb-speaker", Some("speaker")),
                obj("ClusterRole", "r-ferrolb-controller", Some("controller")),
            ],
        };
        assert_eq!(
            rbac.user("controller").unwrap(),
            "system:serviceaccount:ns:r-ferrolb-controller"
        );
        assert_eq!(
            rbac.name("ClusterRole", "controller").unwrap(),
            "r-ferrolb-controller"
        );
        let missing = rbac.name("Role", "speaker").unwrap_err().to_string();
        assert!(missing.contains("no Role"), "{missing}");
    }
}
