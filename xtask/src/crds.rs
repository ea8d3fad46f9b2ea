//! CRD YAML under the chart and the API reference (docs/reference.md), generated from the
//! `ferrolb-crds` types.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use ferrolb_crds::crd;

/// Where the CRDs live: the chart's `crds` subchart, so `helm upgrade` updates them.
pub fn dir() -> PathBuf {
    ferrolb_tests::bins::workspace_root().join("charts/ferrolb/charts/crds/templates")
}

pub fn run(check: bool) -> Result<()> {
    let dir = dir();
    let mut stale = Vec::new();
    for c in crd::all() {
        let path = dir.join(crd::file_name(&c));
        let want = crd::to_yaml(&c)?;
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have != want {
            if check {
                stale.push(path.display().to_string());
            } else {
                std::fs::create_dir_all(&dir)?;
                std::fs::write(&path, want)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    // The configuration reference, generated from the same schemas.
    let path = ferrolb_tests::bins::workspace_root().join("docs/reference.md");
    let want = ferrolb_crds::reference::markdown();
    if std::fs::read_to_string(&path).unwrap_or_default() != want {
        if check {
            stale.push(path.display().to_string());
        } else {
            std::fs::write(&path, want).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
    }
    if !stale.is_empty() {
        bail!(
            "CRD YAML or docs/reference.md is stale (the types changed): {}; run `cargo xtask crds` and commit",
            stale.join(", ")
        );
    }
    if check {
        eprintln!("==> CRD YAML and docs/reference.md match the types");
    }
    Ok(())
}
