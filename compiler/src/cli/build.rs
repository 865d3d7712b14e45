//! `vitc build`: compile a model to an object file, a C header and a report.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use vitc::build::{BuildOptions, build, default_name, write_artifacts};

use super::ModelArgs;
use super::compress::{CompressArgs, normalize_for};

#[derive(Args, Debug)]
pub struct BuildArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Output folder for NAME.o, NAME.h and the build reports.
    #[arg(short, long, default_value = "build")]
    pub output: PathBuf,

    /// Target triple, e.g. x86_64-unknown-linux-gnu or
    /// aarch64-unknown-linux-gnu (default: this machine, with its CPU features).
    /// Extra CPU features follow after `+`: aarch64-unknown-linux-gnu+i8mm
    /// lets INT8 kernels use `usdot`.
    #[arg(long)]
    pub target: Option<String>,

    /// Symbol prefix and file name of the outputs (default: the model's
    /// file name, made a C identifier).
    #[arg(long)]
    pub name: Option<String>,

    #[command(flatten)]
    pub compress: CompressArgs,
}

pub fn run(args: BuildArgs) -> Result<()> {
    // Checked before the build, so a wrong path costs no work (and again
    // when writing).
    if args.output.exists() && !args.output.is_dir() {
        anyhow::bail!("-o {}: exists and is not a folder; give a folder for the build outputs", args.output.display());
    }
    let name = args.name.clone().unwrap_or_else(|| default_name(&args.model.model));
    let compression = args.compress.compression(normalize_for(&args.model.model)?)?;
    let options =
        BuildOptions { import: args.model.import_options()?, target: args.target.clone(), name, progress: true, compression };
    let output = build(&args.model.model, &options).with_context(|| format!("cannot build {}", args.model.model.display()))?;
    let paths = write_artifacts(&args.output, &output)
        .with_context(|| format!("cannot write the build outputs to {}", args.output.display()))?;
    print!("{}", output.report);
    println!("wrote:");
    for path in paths {
        println!("  {}", path.display());
    }
    Ok(())
}
