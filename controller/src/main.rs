//! `ferrolb-controller`: allocates EXTERNAL-IPs from `IPAddressPool`s to LoadBalancer Services.
#![forbid(unsafe_code)]

use std::io::Write;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ferrolb-controller",
    version,
    about = "ferrolb controller: allocates LoadBalancer IPs from IPAddressPools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print every ferrolb CustomResourceDefinition as a YAML stream (`... crds | kubectl apply -f -`).
    Crds,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crds => {
            let yaml = ferrolb_crds::crd::all_yaml()?;
            std::io::stdout().lock().write_all(yaml.as_bytes())?;
        }
    }
    Ok(())
}
