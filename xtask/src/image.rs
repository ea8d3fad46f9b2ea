//! `cargo xtask image [ferrolb|echo|pause]...`: the container images as OCI archives under
//! `target/images/`, built without a Docker daemon (see `ferrolb_tests::image`).

use std::time::Instant;

use anyhow::Result;
use ferrolb_tests::image::{self, BuildOptions, ImageKind};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Images to build (default: all of ferrolb, echo, pause).
    images: Vec<ImageKind>,
    /// Use the release binaries already in target/release instead of running cargo build.
    #[arg(long)]
    no_build: bool,
}

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let opts = BuildOptions {
        images: if args.images.is_empty() {
            ImageKind::ALL.to_vec()
        } else {
            args.images
        },
        cargo_build: !args.no_build,
        ..BuildOptions::default()
    };
    let built = image::build_all(&opts)?;
    eprintln!(
        "==> {} image(s) in {:.0} s",
        built.len(),
        started.elapsed().as_secs_f64()
    );
    for image in &built {
        println!("{}", image.name);
        println!("  archive:    {}", image.archive.display());
        println!("  digest:     {}", image.digest);
        println!(
            "  compressed: {} ({} bytes; limit {})",
            image::human_size(image.compressed_size),
            image.compressed_size,
            image::human_size(image::MAX_COMPRESSED_SIZE)
        );
    }
    Ok(())
}
