//! `deploy/ferrolb.yaml`: the chart rendered with its defaults for users who apply plain
//! manifests (release `ferrolb` in `ferrolb-system`), the memberlist key left to a Secret the
//! user creates (a rendered random key would be the same for everyone who applies the file).
//! `--check` fails when the file differs from what the chart renders.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// The file.
pub fn path() -> PathBuf {
    ferrolb_tests::bins::workspace_root().join("deploy/ferrolb.yaml")
}

/// The memberlist key Secret the plain manifests expect.
pub const MEMBERLIST_SECRET: &str = "ferrolb-memberlist";

/// What the file must hold.
pub fn render() -> Result<String> {
    let body = ferrolb_tests::rbac::render_chart(
        "ferrolb",
        "ferrolb-system",
        &[&format!(
            "speaker.memberlist.existingSecret={MEMBERLIST_SECRET}"
        )],
    )?;
    Ok(format!(
        "# ferrolb as plain manifests: the chart (charts/ferrolb) rendered with its defaults by
#   helm template ferrolb charts/ferrolb -n ferrolb-system \\
#     --set speaker.memberlist.existingSecret={MEMBERLIST_SECRET}
# (regenerate with `cargo xtask manifests`; `cargo xtask test` fails when it is stale).
#
# Install:
#   kubectl apply --server-side -f deploy/ferrolb.yaml
#   kubectl -n ferrolb-system create secret generic {MEMBERLIST_SECRET} \\
#     --from-literal=key=\"$(head -c 32 /dev/urandom | base64)\"
# The speakers start once the key exists. Uninstall: kubectl delete -f deploy/ferrolb.yaml
---
# The speakers need hostNetwork and NET_RAW: the namespace enforces the privileged level.
apiVersion: v1
kind: Namespace
metadata:
  name: ferrolb-system
  labels:
    pod-security.kubernetes.io/enforce: privileged
{body}"
    ))
}

/// Writes the file, or with `check` fails when it is stale.
pub fn run(check: bool) -> Result<()> {
    let want = render()?;
    let path = path();
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    if have == want {
        if check {
            eprintln!("==> deploy/ferrolb.yaml matches the chart");
        }
        return Ok(());
    }
    if check {
        bail!(
            "deploy/ferrolb.yaml is stale (the chart changed): run `cargo xtask manifests` and commit"
        );
    }
    std::fs::create_dir_all(path.parent().context("deploy/")?)?;
    std::fs::write(&path, want).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
