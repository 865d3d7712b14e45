//! `vitc run`: execute a model with the reference interpreter.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use vitc::data::{Normalize, PreprocessSpec, load_image_with, read_npy, write_npy};
use vitc::eval::{Dataset, NormalizeOptions};
use vitc::tensor::Tensor;

use super::ModelArgs;
use super::bench::Engine;

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Input: a .npy tensor, or an image (PNG, JPEG) that is resized to the
    /// model's input and normalized with --mean/--std.
    #[arg(long)]
    pub input: PathBuf,

    /// Where to write the first output, as .npy.
    #[arg(long, short, default_value = "output.npy")]
    pub output: PathBuf,

    /// Per-channel mean subtracted from image pixels scaled to [0, 1]
    /// (default: MODEL.preprocess.json's, else the ImageNet mean for RGB
    /// inputs and 0 for grayscale).
    #[arg(long, value_delimiter = ',')]
    pub mean: Option<Vec<f32>>,

    /// Per-channel standard deviation that image pixels are divided by
    /// (default: MODEL.preprocess.json's, else the ImageNet std for RGB
    /// inputs and 1 for grayscale).
    #[arg(long, value_delimiter = ',')]
    pub std: Option<Vec<f32>>,

    /// Run the graph as imported instead of after canonicalization
    /// (interpreter only).
    #[arg(long)]
    pub no_canonicalize: bool,

    /// Generated code compiled in memory (jit) or the reference interpreter.
    #[arg(long, value_enum, default_value_t = Engine::Jit)]
    pub engine: Engine,
}

pub fn run(args: RunArgs) -> Result<()> {
    if args.no_canonicalize && args.engine == Engine::Jit {
        bail!("--no-canonicalize needs --engine interpreter: generated code is built from the canonical graph");
    }
    let stage = if args.no_canonicalize { "import" } else { "canonicalize" };
    let graph = args.model.load(stage)?;
    let inputs = graph.inputs().to_vec();
    let [input] = inputs[..] else {
        bail!("the model has {} inputs; vitc run feeds exactly one", inputs.len());
    };
    let fact = graph.fact(input).clone();

    let tensor = load_input(&args, &fact.shape)?;
    let non_finite = tensor.as_f32().map_or(0, |a| a.iter().filter(|v| !v.is_finite()).count());
    if non_finite > 0 {
        tracing::warn!(values = non_finite, "the input contains NaN or infinite values, so the outputs are likely NaN too");
    }
    let (outputs, elapsed) = match args.engine {
        Engine::Interpreter => {
            let start = Instant::now();
            let outputs = vitc::interp::run(&graph, &[(input, tensor)])?;
            (outputs, start.elapsed())
        }
        Engine::Jit => run_jit(&graph, &tensor)?,
    };

    let output = outputs.first().context("the model has no outputs")?;
    let nan = output.as_f32().map_or(0, |a| a.iter().filter(|v| v.is_nan()).count());
    if nan > 0 {
        tracing::warn!(values = nan, total = output.len(), "the output contains NaN values");
    }
    write_npy(&args.output, output)?;
    println!(
        "output {} {:?} written to {} ({:.1} ms, {:?})",
        graph.value(graph.outputs()[0]).name,
        output.shape(),
        args.output.display(),
        elapsed.as_secs_f64() * 1e3,
        args.engine
    );
    print_top_classes(output);
    Ok(())
}

/// Compiles the graph in memory and runs it once on all cores.
fn run_jit(graph: &vitc::ir::Graph, input: &Tensor) -> Result<(Vec<Tensor>, std::time::Duration)> {
    let expected = graph.fact(graph.inputs()[0]);
    let name = &graph.value(graph.inputs()[0]).name;
    if input.dtype() != expected.dtype {
        bail!(
            "input '{name}': expected a {expected} tensor, got {}{:?}; give f32 values (or u8 pixels, f64)",
            input.dtype(),
            input.shape()
        );
    }
    if input.shape() != expected.shape.as_slice() {
        bail!(
            "input '{name}': expected a {expected} tensor, got {}{:?}; bind another shape with --input-shape {name}=..",
            input.dtype(),
            input.shape()
        );
    }
    let program = vitc::lower::Program::lower(graph)?;
    let mut jit = vitc::codegen::jit::JitModel::compile(&program, "run")?;
    let data: Vec<f32> = input.as_f32().context("generated code takes an f32 input")?.iter().copied().collect();
    let mut outputs: Vec<Vec<f32>> = program.outputs.iter().map(|t| vec![0.0; t.numel()]).collect();
    let pool = vitc_runtime::ThreadPool::new(0)?;
    let start = Instant::now();
    {
        let mut slices: Vec<&mut [f32]> = outputs.iter_mut().map(|o| o.as_mut_slice()).collect();
        jit.model.run(&[&data], &mut slices, Some(&pool))?;
    }
    let elapsed = start.elapsed();
    let tensors = outputs
        .into_iter()
        .zip(&program.outputs)
        .map(|(data, info)| Ok(Tensor::F32(ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&info.shape), data)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok((tensors, elapsed))
}

/// Reads the input: an f32 `.npy` as it is, another `.npy` (u8 pixels,
/// f64 values) through the same preprocessing as `vitc eval`'s datasets,
/// or an image file.
fn load_input(args: &RunArgs, shape: &[usize]) -> Result<Tensor> {
    let spec = PreprocessSpec::for_model(&args.model.model)?.unwrap_or_default();
    let extension = args.input.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if extension == "npy" {
        let tensor = read_npy(&args.input)?;
        if matches!(tensor, Tensor::F32(_)) || shape.is_empty() {
            return Ok(tensor);
        }
        let normalize =
            NormalizeOptions { mean: args.mean.clone().or(spec.mean.clone()), std: args.std.clone().or(spec.std.clone()), layout: spec.layout() };
        let dataset = Dataset::open_unlabeled(&args.input, &shape[1..], &normalize, usize::MAX)?;
        let mut values = vec![0.0f32; dataset.len() * dataset.sample_len()];
        dataset.load_batch(0..dataset.len(), &mut values)?;
        let mut full_shape = shape.to_vec();
        full_shape[0] = dataset.len();
        return Ok(Tensor::F32(ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&full_shape), values)?));
    }
    let [1, channels, height, width] = shape[..] else {
        bail!("an image can feed only an input of shape [1, C, H, W]; this model's input is {shape:?}. Pass a .npy tensor instead");
    };
    let default = if channels == 3 { Normalize::imagenet() } else { Normalize::identity(channels) };
    let mean = args.mean.clone().or(spec.mean.clone()).unwrap_or(default.mean);
    let std = args.std.clone().or(spec.std.clone()).unwrap_or(default.std);
    Ok(load_image_with(&args.input, channels, height, width, &Normalize { mean, std }, &spec.layout())?)
}

/// For a `[1, K]` classifier output, prints the five largest logits.
fn print_top_classes(output: &Tensor) {
    let Some(data) = output.as_f32() else { return };
    if data.ndim() != 2 || data.shape()[0] != 1 || data.shape()[1] < 2 {
        return;
    }
    let mut ranked: Vec<(usize, f32)> = data.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let top: Vec<String> = ranked.iter().take(5).map(|(i, v)| format!("{i}: {v:.4}")).collect();
    println!("top classes: {}", top.join(", "));
}
