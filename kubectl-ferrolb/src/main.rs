//! `kubectl-ferrolb`, run as `kubectl ferrolb` (kubectl finds plugins named `kubectl-*` on the
//! PATH).
//!
//! Exit codes: 0 all is well; 1 the API could not be read (or the Service does not exist);
//! 2 bad arguments; 3 the command ran and found a problem (`explain`: the Service is not served;
//! `status`: no live controller, a speaker not ready, or a Service not served).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use kubectl_ferrolb::explain::{Verdict, explain};
use kubectl_ferrolb::migrate::{self, Untranslated, translate};
use kubectl_ferrolb::read::{self, Target};
use kubectl_ferrolb::render::{self, Colour, Format};
use kubectl_ferrolb::status::status;

const EXAMPLES: &str = "\
Examples:
  # Pools' use, who announces each Service's IP and since when, controller and speakers
  kubectl ferrolb status
  kubectl ferrolb status -o json

  # Why Service web in namespace shop has no EXTERNAL-IP, or who answers for it
  kubectl ferrolb explain svc/web -n shop
  kubectl ferrolb explain web -n shop -o yaml

  # ferrolb's manifests for MetalLB's configuration in the cluster, or in files
  kubectl ferrolb migrate metallb > ferrolb-config.yaml
  kubectl ferrolb migrate metallb -f metallb-config.yaml | kubectl apply -f -

Exit codes: 0 all is well, 1 the API could not be read, 2 bad arguments,
3 a problem was found (explain: the Service is not served; status: something is not healthy;
migrate: something could not be translated, named on stderr).";

/// What ferrolb does for your Services, read from the API.
#[derive(Debug, Parser)]
#[command(name = "kubectl ferrolb", version, after_help = EXAMPLES)]
struct Cli {
    /// Path to the kubeconfig file (default: KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    /// The Service's namespace (default: the context's).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    /// The namespace ferrolb is installed in.
    #[arg(long, global = true, default_value = "ferrolb-system")]
    ferrolb_namespace: String,
    /// The controller's leader-election Lease in that namespace.
    #[arg(long, global = true, default_value = "ferrolb-controller")]
    lease: String,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Format::Text)]
    output: Format,
    /// Colour the text: auto (on a terminal, unless NO_COLOR is set), always, never.
    #[arg(long, global = true, value_enum, default_value_t = When::Auto)]
    color: When,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum When {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Pools (used/total per family), LoadBalancer Services (EXTERNAL-IP, pool, who announces
    /// them since when), the controller's leader and the speakers.
    Status,
    /// Why a Service has, or has no, EXTERNAL-IP and who answers for it, with the fix.
    Explain {
        /// The Service: NAME, svc/NAME or service/NAME.
        service: String,
    },
    /// ferrolb's manifests for another load balancer's configuration.
    Migrate {
        #[command(subcommand)]
        from: MigrateFrom,
    },
}

#[derive(Debug, Subcommand)]
enum MigrateFrom {
    /// MetalLB's IPAddressPools, L2Advertisements, BGPPeers, BGPAdvertisements, Communities and
    /// BFDProfiles (metallb.io v1beta1, v1beta2) as ferrolb manifests on stdout (YAML, or -o
    /// json); what cannot be translated is named by object and field on stderr. Each
    /// translated object is checked by the apiserver (server-side dry run) unless --offline.
    Metallb {
        /// Read these files (YAML or JSON, several documents each; - for stdin) instead of the
        /// cluster's objects.
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
        /// No cluster at all: translate the files without the apiserver's check.
        #[arg(long, requires = "files")]
        offline: bool,
    },
}

fn service_name(arg: &str) -> Result<&str, String> {
    match arg.split_once('/') {
        None => Ok(arg),
        Some(("svc" | "service" | "services", name)) if !name.is_empty() => Ok(name),
        Some(_) => Err(format!(
            "{arg}: expected NAME or svc/NAME (only Services can be explained)"
        )),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let colour = match cli.color {
        When::Always => Colour(true),
        When::Never => Colour(false),
        When::Auto => Colour::auto(
            std::io::stdout().is_terminal(),
            std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
        ),
    };
    if let Command::Explain { service } = &cli.command
        && let Err(e) = service_name(service)
    {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    match run(&cli, colour).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(3),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the command; `Ok(false)` when it found a problem.
async fn run(cli: &Cli, colour: Colour) -> anyhow::Result<bool> {
    let target = Target {
        kubeconfig: cli.kubeconfig.clone(),
        context: cli.context.clone(),
        ferrolb_namespace: cli.ferrolb_namespace.clone(),
        lease: cli.lease.clone(),
    };
    let name = match &cli.command {
        Command::Explain { service } => Some(service_name(service).map_err(anyhow::Error::msg)?),
        Command::Status => None,
        Command::Migrate {
            from: MigrateFrom::Metallb { files, offline },
        } => return migrate_metallb(&target, files, *offline, cli.output).await,
    };
    let (client, context_namespace) = read::connect(&target).await?;
    let (text, structured, healthy) = match name {
        Some(name) => {
            let namespace = cli.namespace.clone().unwrap_or(context_namespace);
            let facts = read::service_facts(&client, &target, &namespace, name).await?;
            let e = explain(&facts);
            (
                render::explanation(&e, colour),
                render::structured(&e, cli.output),
                e.verdict == Verdict::Serving,
            )
        }
        None => {
            let s = status(&read::status_facts(&client, &target).await?);
            (
                render::status(&s, colour),
                render::structured(&s, cli.output),
                s.healthy(),
            )
        }
    };
    match cli.output {
        Format::Text => print!("{text}"),
        _ => print!("{}", structured?),
    }
    Ok(healthy)
}

/// `migrate metallb`: the manifests on stdout, what was not translated on stderr.
async fn migrate_metallb(
    target: &Target,
    files: &[PathBuf],
    offline: bool,
    format: Format,
) -> anyhow::Result<bool> {
    let client = if offline {
        None
    } else {
        Some(read::connect(target).await?.0)
    };
    let (objects, missing) = match &client {
        Some(client) if files.is_empty() => read::metallb_objects(client).await?,
        _ => (read::objects_from_files(files)?, Vec::new()),
    };
    let mut m = translate(&objects, &migrate::schemas());
    let checked = match &client {
        Some(client) => read::dry_run(client, &m.objects).await?,
        None => None,
    };
    let unchecked = client.is_some() && checked.is_none();
    if let Some(refused) = checked {
        for (i, words) in &refused {
            let o = &m.objects[*i];
            m.untranslated.push(Untranslated {
                object: format!(
                    "{} {}",
                    o["kind"].as_str().unwrap_or_default(),
                    o["metadata"]["name"].as_str().unwrap_or_default()
                ),
                field: None,
                why: format!("the apiserver refuses ferrolb's version: {words}; left out"),
            });
        }
        // Highest index first, so the earlier indices stay valid.
        for (i, _) in refused.iter().rev() {
            m.objects.remove(*i);
        }
    }
    print!("{}", render::manifests(&m.objects, format)?);
    for note in missing {
        eprintln!("note: {note}");
    }
    for note in &m.notes {
        eprintln!("note: {note}");
    }
    if unchecked {
        eprintln!(
            "note: ferrolb's CRDs are not installed in this cluster, so the apiserver did not \
             check this output; it does when you apply it (install ferrolb first to check it now)"
        );
    }
    for u in &m.untranslated {
        eprintln!("not translated: {u}");
    }
    Ok(m.untranslated.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_named_like_kubectl_names_them() {
        assert_eq!(service_name("web"), Ok("web"));
        assert_eq!(service_name("svc/web"), Ok("web"));
        assert_eq!(service_name("service/web"), Ok("web"));
        assert!(
            service_name("pod/web")
                .unwrap_err()
                .contains("only Services")
        );
        assert!(service_name("svc/").is_err());
    }

    #[test]
    fn the_command_line_parses_kubectl_style() {
        let cli = Cli::try_parse_from([
            "kubectl-ferrolb",
            "explain",
            "svc/web",
            "-n",
            "shop",
            "--context",
            "lab",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.namespace.as_deref(), Some("shop"));
        assert_eq!(cli.context.as_deref(), Some("lab"));
        assert_eq!(cli.output, Format::Json);
        assert!(matches!(cli.command, Command::Explain { ref service } if service == "svc/web"));
        Cli::command_for_tests().debug_assert();
    }

    impl Cli {
        fn command_for_tests() -> clap::Command {
            <Cli as clap::CommandFactory>::command()
        }
    }
}
