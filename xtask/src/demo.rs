//! `cargo xtask demo [--keep]`: from a fresh machine, build everything, start 3 real nodes,
//! `helm install` ferrolb with the locally built images, create a Service over echo pods and curl
//! its EXTERNAL-IP from the client (logic in `ferrolb_tests::demo`).

use anyhow::Result;
use ferrolb_tests::{bins, demo};

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
    demo::run_demo(&bins::workspace_root().join("target/cluster"), keep)
}
