//! `cargo xtask demo [--keep]`: from a fresh machine, build everything, start a 3-node lab with
//! ferrolb, create a Service and curl its EXTERNAL-IP from the client (logic in
//! `ferrolb_tests::demo`).

use anyhow::Result;
use ferrolb_tests::{bins, cluster, demo};

pub fn run(keep: bool) -> Result<()> {
    demo::check_examples()?;
    crate::deps::ensure(true)?;
    match bins::build_if_missing()? {
        Some(took) => eprintln!("==> control plane: built in {:.0} s", took.as_secs_f64()),
        None => eprintln!(
            "==> control plane: cached in {}",
            bins::bin_dir()?.display()
        ),
    }
    cluster::build_ferrolb()?;
    demo::run_demo(&bins::workspace_root().join("target/cluster"), keep)
}
