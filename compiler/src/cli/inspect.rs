//! `vitc inspect`: the IR and a summary.

use anyhow::Result;
use clap::Args;
use vitc::ir::printer::print_graph;
use vitc::ir::summary::Summary;

use super::ModelArgs;

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Show the IR after this stage: "import", "canonicalize", or one pass
    /// of canonicalization (fold-constants, simplify, fuse-layernorm,
    /// fuse-gelu, fuse-linear, fuse-attention).
    #[arg(long, default_value = "import")]
    pub after: String,

    /// Print only the summary, not the IR.
    #[arg(long)]
    pub summary_only: bool,
}

pub fn inspect(args: InspectArgs) -> Result<()> {
    let graph = args.model.load(&args.after)?;
    if !args.summary_only {
        print!("{}", print_graph(&graph));
        println!();
    }
    println!("model: {} (after {})", args.model.model.display(), args.after);
    print!("{}", Summary::of(&graph));
    Ok(())
}
