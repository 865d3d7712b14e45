//! `vitc inspect`: the IR and a summary, after any stage up to compression.

use anyhow::{Context, Result, bail};
use clap::Args;
use vitc::ir::printer::print_graph;
use vitc::ir::summary::Summary;

use super::ModelArgs;
use super::compress::{CompressArgs, normalize_for};

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Show the IR after this stage: "import", "canonicalize", one pass of
    /// canonicalization (fold-constants, simplify, fuse-layernorm,
    /// fuse-gelu, fuse-linear, fuse-attention), or "compress". The default
    /// is "compress" when a compression option is given, else "import".
    #[arg(long)]
    pub after: Option<String>,

    /// Print only the summary, not the IR.
    #[arg(long)]
    pub summary_only: bool,

    #[command(flatten)]
    pub compress: CompressArgs,
}

pub fn inspect(args: InspectArgs) -> Result<()> {
    if let Some(stage) = &args.after
        && stage != "compress"
        && !super::is_load_stage(stage)
    {
        let passes = vitc::passes::PassManager::canonicalize().pass_names();
        bail!(
            "--after '{stage}' is not a stage; use import, canonicalize, one of: {}, or compress (with compression options)",
            passes.join(", ")
        );
    }
    let compression = args.compress.compression(normalize_for(&args.model.model)?)?;
    let after = match (&args.after, &compression) {
        (None, Some(_)) => "compress".to_string(),
        (None, None) => "import".to_string(),
        (Some(stage), Some(_)) if stage != "compress" => {
            bail!("compression options print the IR after compression; drop --after '{stage}' or use --after compress")
        }
        (Some(stage), None) if stage == "compress" => {
            bail!("--after compress needs compression options: --recipe, --preset or a pass option such as --int8")
        }
        (Some(stage), _) => stage.clone(),
    };
    let graph = match &compression {
        Some(compression) => {
            let mut graph = args.model.load("canonicalize")?;
            vitc::compress::compress_for(&args.model.model, &mut graph, compression)
                .with_context(|| format!("cannot compress {}", args.model.model.display()))?;
            graph
        }
        None => args.model.load(&after)?,
    };
    if !args.summary_only {
        print!("{}", print_graph(&graph));
        println!();
    }
    println!("model: {} (after {after})", args.model.model.display());
    print!("{}", Summary::of(&graph));
    Ok(())
}
