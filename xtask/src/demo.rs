//! `cargo xtask demo [--keep]`: from a fresh machine, build everything, start 3 real nodes,
//! `helm install` ferrolb with the locally built images, create a Service over echo pods and curl
//! its EXTERNAL-IP from the client (logic in `ferrolb_tests::demo`).

use anyhow::Result;
use ferrolb_tests::{bins, demo};

pub fn run(keep: bool) -> Result<()> {
    demo::check_examples()?;
    crate::deps::ensure_testbed(true)?;
    demo::run_demo(&bins::workspace_root().join("target/cluster"), keep)
}
