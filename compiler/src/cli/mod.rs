//! Command-line arguments and the dispatch to each command.

mod analyze;
mod bench;
mod build;
mod compress;
mod eval;
mod inspect;
mod run;

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use vitc::ir::Graph;
use vitc::onnx::ImportOptions;
use vitc::onnx::tensor::DEFAULT_MAX_TENSOR_BYTES;
use vitc::passes::PassManager;

/// Ahead-of-time compiler for Vision Transformer models exported to ONNX.
#[derive(Parser, Debug)]
#[command(name = "vitc", version, about)]
pub struct Cli {
    /// Log more: -v for per-pass information, -vv for debug details.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the IR of a model and a summary (operators, parameters, FLOPs).
    Inspect(inspect::InspectArgs),
    /// Run a model on one input and write its output as .npy.
    Run(run::RunArgs),
    /// Compile a model to an object file, a C header and a build report.
    Build(build::BuildArgs),
    /// Measure a model's latency with generated code or the interpreter.
    Bench(bench::BenchArgs),
    /// Measure a classifier's accuracy on a labeled dataset.
    Eval(eval::EvalArgs),
    /// Prune one attention or MLP unit at a time and measure the output
    /// error, to choose compression ratios from data.
    Analyze(analyze::AnalyzeArgs),
}

/// Options shared by every command that imports a model.
#[derive(Args, Debug)]
pub struct ModelArgs {
    /// The ONNX model file.
    pub model: PathBuf,

    /// Concrete shape for a graph input, as NAME=D0,D1,... (repeatable).
    /// Without it, a symbolic leading dimension is bound to 1.
    #[arg(long = "input-shape", value_name = "NAME=DIMS")]
    pub input_shapes: Vec<String>,

    /// Largest tensor, in MiB, that the model may declare or compute; larger
    /// ones are rejected before any memory is allocated.
    #[arg(long = "max-tensor-mib", value_name = "MIB", default_value_t = DEFAULT_MAX_TENSOR_BYTES >> 20)]
    pub max_tensor_mib: u64,
}

impl ModelArgs {
    pub fn import_options(&self) -> Result<ImportOptions> {
        let mut input_shapes = HashMap::new();
        for spec in &self.input_shapes {
            let (name, dims) = parse_input_shape(spec)?;
            input_shapes.insert(name, dims);
        }
        let max_tensor_bytes = self.max_tensor_mib.checked_mul(1 << 20).context("--max-tensor-mib is too large")?;
        Ok(ImportOptions { input_shapes, max_tensor_bytes, ..ImportOptions::default() })
    }

    /// Imports the model, then runs the canonicalization passes up to and
    /// including `stop_after` ("import" runs none, "canonicalize" runs all).
    pub fn load(&self, stop_after: &str) -> Result<Graph> {
        if !is_load_stage(stop_after) {
            let passes = PassManager::canonicalize().pass_names();
            bail!("--after '{stop_after}' is not a stage; use import, canonicalize or one of: {}", passes.join(", "));
        }
        let options = self.import_options()?;
        let mut graph = vitc::onnx::import_file(&self.model, &options)
            .with_context(|| format!("cannot import {}", self.model.display()))?;
        vitc::ir::verify::verify(&graph, "import")?;
        match stop_after {
            "import" => {}
            "canonicalize" => {
                PassManager::canonicalize().run(&mut graph)?;
            }
            pass => {
                PassManager::canonicalize().run_until(&mut graph, Some(pass))?;
            }
        }
        Ok(graph)
    }
}

/// Parses `NAME=D0,D1,...`.
fn parse_input_shape(spec: &str) -> Result<(String, Vec<usize>)> {
    let Some((name, dims)) = spec.rsplit_once('=') else {
        bail!("--input-shape '{spec}' must look like NAME=1,3,224,224");
    };
    let dims = dims
        .split(',')
        .map(|d| d.trim().parse::<usize>().with_context(|| format!("--input-shape '{spec}': '{d}' is not a non-negative integer")))
        .collect::<Result<Vec<_>>>()?;
    Ok((name.to_string(), dims))
}

/// Returns whether [`ModelArgs::load`] can stop after `stage`: `import`,
/// `canonicalize` or one canonicalization pass.
pub fn is_load_stage(stage: &str) -> bool {
    stage == "import" || stage == "canonicalize" || PassManager::canonicalize().pass_names().contains(&stage)
}

/// Checks, before any work, that the file `path` given with `option` can
/// be written later: its folder exists and the path is not a folder.
/// It must not be one of `inputs` either, which the command reads first.
pub fn check_output_file(path: &std::path::Path, option: &str, inputs: &[&std::path::Path]) -> Result<()> {
    if path.is_dir() {
        bail!("{option} {}: is a folder; give a file path", path.display());
    }
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    if folder.exists() && !folder.is_dir() {
        bail!("{option} {}: {} is a file, not a folder", path.display(), folder.display());
    }
    if !folder.is_dir() {
        bail!("{option} {}: the folder {} does not exist; create it first", path.display(), folder.display());
    }
    let canonical = |p: &std::path::Path| p.canonicalize().ok();
    if let Some(output) = canonical(path)
        && inputs.iter().any(|input| canonical(input).as_ref() == Some(&output))
    {
        bail!("{option} {}: is also an input of this command, which would be overwritten; give another path", path.display());
    }
    Ok(())
}

pub fn init_logging(verbose: u8) {
    // Cranelift logs every function it compiles at info level; keep it at
    // warn unless RUST_LOG sets another level.
    let default = match verbose {
        0 => "warn",
        1 => "warn,vitc=info",
        _ => "warn,vitc=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour codes only where a terminal shows them, not in logs or pipes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Inspect(args) => inspect::inspect(args),
        Command::Run(args) => run::run(args),
        Command::Build(args) => build::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Analyze(args) => analyze::run(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_shape_parses() {
        let (name, dims) = parse_input_shape("input_image=2,3,224,224").unwrap();
        assert_eq!(name, "input_image");
        assert_eq!(dims, vec![2, 3, 224, 224]);
    }

    #[test]
    fn input_shape_rejects_negative() {
        assert!(parse_input_shape("x=-1,3").is_err());
    }
}
