//! `vitc bench`: time a model's generated code (JIT) or the interpreter,
//! optionally after compression with the options of `vitc build`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use vitc::codegen::jit::JitModel;
use vitc::lower::Program;
use vitc_runtime::ThreadPool;

use super::ModelArgs;
use super::compress::{CompressArgs, normalize_for};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    /// Generated native code, compiled in memory.
    Jit,
    /// The reference interpreter.
    Interpreter,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Thread counts to measure, e.g. 1,2.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub threads: Vec<usize>,

    /// Timed runs per thread count.
    #[arg(long, default_value_t = 30)]
    pub iterations: usize,

    /// Untimed runs before timing.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,

    /// What runs the model: generated code or the interpreter.
    #[arg(long, value_enum, default_value_t = Engine::Jit)]
    pub engine: Engine,

    /// Write the generated kernels' symbols to /tmp/perf-PID.map, so that
    /// `perf record` + `perf report` attribute samples to kernels and nodes.
    #[arg(long)]
    pub perf_map: bool,

    #[command(flatten)]
    pub compress: CompressArgs,
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.iterations == 0 {
        bail!("--iterations must be at least 1");
    }
    if args.threads.iter().any(|&t| t == 0 || t > 256) {
        bail!("--threads values must be between 1 and 256");
    }
    if args.perf_map && args.engine != Engine::Jit {
        bail!("--perf-map names the kernels of generated code; use it with --engine jit (the default)");
    }
    if args.perf_map {
        // `perf record` sets PERF_BUILDID_DIR, and cranelift-jit then maps
        // every JIT function by its bare name, including those of calibration
        // runs, whose freed addresses the benchmarked model reuses. Only the
        // benchmarked model's kernels should be named.
        // SAFETY: no other thread exists yet: the thread pools and the
        // calibration workers start later.
        unsafe { std::env::remove_var("PERF_BUILDID_DIR") };
    }
    let compression = args.compress.compression(normalize_for(&args.model.model)?)?;
    let mut graph = args.model.load("canonicalize")?;
    if let Some(compression) = &compression {
        let start = Instant::now();
        let report = vitc::compress::compress_for(&args.model.model, &mut graph, compression)
            .with_context(|| format!("cannot compress {}", args.model.model.display()))?;
        println!(
            "compressed in {:.1} s: {}, encoder FLOPs {} -> {}",
            start.elapsed().as_secs_f64(),
            compression.recipe.passes.iter().map(|p| p.kind()).collect::<Vec<_>>().join(" + "),
            report.encoder_flops_before,
            report.encoder_flops_after
        );
    }
    let shape = graph.fact(graph.inputs()[0]).shape.clone();
    let len: usize = shape.iter().product();
    let input: Vec<f32> = (0..len).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    println!("model: {} input {:?}, engine {:?}", args.model.model.display(), shape, args.engine);

    match args.engine {
        Engine::Jit => {
            let start = Instant::now();
            let program = Program::lower(&graph)?;
            let mut jit = JitModel::compile(&program, "bench")?;
            println!("compiled in {:.0} ms", start.elapsed().as_secs_f64() * 1e3);
            if args.perf_map {
                let path = jit.write_perf_map().context("cannot write the perf map")?;
                println!("kernel symbols: {}", path.display());
            }
            for &threads in &args.threads {
                let pool = if threads > 1 { Some(ThreadPool::new(threads)?) } else { None };
                let times = measure(args.warmup, args.iterations, || {
                    jit.model.run_simple(&input, pool.as_ref()).map(|_| ())
                })?;
                report(threads, &times);
            }
        }
        Engine::Interpreter => {
            let tensor = vitc::tensor::Tensor::F32(ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), input)?);
            let feeds = [(graph.inputs()[0], tensor)];
            let times = measure(args.warmup, args.iterations, || vitc::interp::run(&graph, &feeds).map(|_| ()))?;
            report(0, &times);
        }
    }
    Ok(())
}

fn measure<E: std::error::Error + Send + Sync + 'static>(
    warmup: usize,
    iterations: usize,
    mut f: impl FnMut() -> Result<(), E>,
) -> Result<Vec<Duration>> {
    for _ in 0..warmup {
        f()?;
    }
    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed());
    }
    times.sort();
    Ok(times)
}

fn report(threads: usize, times: &[Duration]) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let median = ms(times[times.len() / 2]);
    let label = if threads == 0 { "interpreter".to_string() } else { format!("{threads} thread(s)") };
    println!(
        "{label:>12}: median {median:8.2} ms   min {:8.2} ms   max {:8.2} ms   ({} runs, {:.1} runs/s)",
        ms(times[0]),
        ms(times[times.len() - 1]),
        times.len(),
        1e3 / median
    );
}
