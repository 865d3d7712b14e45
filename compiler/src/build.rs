//! The `vitc build` pipeline as a library call: import, canonicalize, lower,
//! generate code, and write `NAME.o`, `NAME.h` and the build report.
//!
//! The object and header depend only on the model, the options and the
//! vitc version, so two builds of the same inputs are byte-identical. The
//! report also records how long each stage took.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::codegen::object::{emit_header, emit_object};
use crate::codegen::target::host_triple;
use crate::error::{Error, Result};
use crate::ir::Graph;
use crate::ir::summary::Summary;
use crate::lower::{Program, print_program};
use crate::onnx::{ImportOptions, import_file};
use crate::passes::PassManager;

/// Settings of one build.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    pub import: ImportOptions,
    /// Target triple; the host when `None`.
    pub target: Option<String>,
    /// Symbol prefix and file stem of the outputs.
    pub name: String,
    /// Show a progress bar on stderr (hidden when stderr is not a terminal).
    pub progress: bool,
    /// Compression applied after canonicalization.
    pub compression: Option<crate::compress::Compression>,
}

/// Time spent in one stage.
#[derive(Clone, Debug, Serialize)]
pub struct StageTime {
    pub stage: String,
    pub milliseconds: f64,
}

/// Summary of a build: its outputs and what they cost.
#[derive(Clone, Debug, Serialize)]
pub struct BuildReport {
    pub model: String,
    /// BLAKE3 hash of the model file, so a build can be matched to its model.
    pub model_blake3: String,
    pub name: String,
    pub target: String,
    pub parameters: u64,
    pub flops: u64,
    /// IR operators after canonicalization.
    pub operators: BTreeMap<String, usize>,
    /// Kernel calls per kernel family.
    pub kernels: BTreeMap<String, usize>,
    pub arena_bytes: usize,
    pub weight_bytes: usize,
    pub object_bytes: usize,
    /// BLAKE3 of the object file, so that `vitc eval --engine object` can
    /// check that this report describes the object beside it.
    pub object_blake3: String,
    pub inputs: Vec<(String, Vec<usize>)>,
    pub outputs: Vec<(String, Vec<usize>)>,
    pub stages: Vec<StageTime>,
    /// What compression removed and what it cost, when a recipe was given.
    pub compression: Option<crate::compress::CompressReport>,
}

/// Everything a build produced, in memory.
pub struct BuildOutput {
    pub graph: Graph,
    pub program: Program,
    pub object: Vec<u8>,
    pub header: String,
    pub report: BuildReport,
}

/// Checks that `name` can be a C identifier prefix.
pub fn validate_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(Error::Input {
            input: "--name".into(),
            message: format!("'{name}' is not a valid C identifier; use letters, digits and '_', not starting with a digit"),
        })
    }
}

/// Derives a C identifier from the model's file stem.
pub fn default_name(model: &Path) -> String {
    let stem = model.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    let mut name: String = stem.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert_str(0, "model_");
    }
    name
}

/// BLAKE3 hash of a model file, as hex.
pub fn model_hash(model: &Path) -> Result<String> {
    let bytes = std::fs::read(model).map_err(|error| Error::Io { path: model.to_path_buf(), error })?;
    Ok(blake3::hash(&bytes).to_hex().to_string())
}

/// Runs the whole pipeline on `model`.
pub fn build(model: &Path, options: &BuildOptions) -> Result<BuildOutput> {
    validate_name(&options.name)?;
    if let Some(compression) = &options.compression {
        compression.check()?;
    }
    let stage_count = if options.compression.is_some() { 6 } else { 5 };
    let progress = if options.progress { ProgressBar::new(stage_count) } else { ProgressBar::hidden() };
    progress.set_style(ProgressStyle::with_template("{spinner} [{bar:20}] {pos}/{len} {msg}").expect("template is valid"));
    let mut stages = Vec::new();
    let timed = |stage: &str, progress: &ProgressBar| {
        progress.set_message(stage.to_string());
        let start = Instant::now();
        let span = tracing::info_span!("stage", name = stage);
        (start, span)
    };

    let (start, span) = timed("import", &progress);
    let mut graph = span.in_scope(|| import_file(model, &options.import))?;
    stages.push(StageTime { stage: "import".into(), milliseconds: start.elapsed().as_secs_f64() * 1e3 });
    progress.inc(1);

    let (start, span) = timed("canonicalize", &progress);
    span.in_scope(|| PassManager::canonicalize().run(&mut graph))?;
    stages.push(StageTime { stage: "canonicalize".into(), milliseconds: start.elapsed().as_secs_f64() * 1e3 });
    progress.inc(1);

    let compression = match &options.compression {
        Some(compression) => {
            let (start, span) = timed("compress", &progress);
            let report = span.in_scope(|| crate::compress::compress_for(model, &mut graph, compression))?;
            stages.push(StageTime { stage: "compress".into(), milliseconds: start.elapsed().as_secs_f64() * 1e3 });
            progress.inc(1);
            Some(report)
        }
        None => None,
    };

    let (start, span) = timed("lower", &progress);
    let program = span.in_scope(|| Program::lower(&graph))?;
    stages.push(StageTime { stage: "lower".into(), milliseconds: start.elapsed().as_secs_f64() * 1e3 });
    progress.inc(1);

    let (start, span) = timed("codegen", &progress);
    let object = span.in_scope(|| emit_object(&program, &options.name, options.target.as_deref()))?;
    stages.push(StageTime { stage: "codegen".into(), milliseconds: start.elapsed().as_secs_f64() * 1e3 });
    progress.inc(1);

    let header = emit_header(&program, &options.name);
    progress.inc(1);
    progress.finish_and_clear();

    let summary = Summary::of(&graph);
    let model_blake3 = model_hash(model)?;
    let report = BuildReport {
        model: model.display().to_string(),
        model_blake3,
        name: options.name.clone(),
        target: options.target.clone().unwrap_or_else(host_triple),
        parameters: summary.parameters,
        flops: summary.flops,
        operators: summary.op_counts,
        kernels: program.kernel_counts().into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        arena_bytes: program.arena_bytes,
        weight_bytes: program.weight_bytes(),
        object_bytes: object.len(),
        object_blake3: blake3::hash(&object).to_hex().to_string(),
        inputs: program.inputs.iter().map(|t| (t.name.clone(), t.shape.clone())).collect(),
        outputs: program.outputs.iter().map(|t| (t.name.clone(), t.shape.clone())).collect(),
        stages,
        compression,
    };
    Ok(BuildOutput { graph, program, object, header, report })
}

/// Headers of the C library (C17 and common glibc and POSIX ones) that a
/// generated `NAME.h` would hide from a program compiled with the build
/// folder on its include path.
const SYSTEM_HEADERS: [&str; 37] = [
    "assert", "complex", "ctype", "errno", "fenv", "float", "inttypes", "iso646", "limits", "locale", "math", "setjmp",
    "signal", "stdalign", "stdarg", "stdatomic", "stdbool", "stddef", "stdint", "stdio", "stdlib", "stdnoreturn", "string",
    "tgmath", "threads", "time", "uchar", "wchar", "wctype", "features", "unistd", "pthread", "fcntl", "dlfcn", "sched",
    "malloc", "endian",
];

/// Writes `NAME.o`, `NAME.h`, `NAME.report.txt`, `NAME.report.json` and
/// `NAME.program.txt` (the kernel listing) into `dir`; returns the paths.
pub fn write_artifacts(dir: &Path, output: &BuildOutput) -> Result<Vec<PathBuf>> {
    if dir.exists() && !dir.is_dir() {
        let error = std::io::Error::new(std::io::ErrorKind::InvalidInput, "it exists and is not a folder; give a folder with -o");
        return Err(Error::Write { path: dir.to_path_buf(), error });
    }
    std::fs::create_dir_all(dir).map_err(|error| Error::Write { path: dir.to_path_buf(), error })?;
    let name = &output.report.name;
    if SYSTEM_HEADERS.contains(&name.as_str()) {
        tracing::warn!(
            "the header {name}.h has the name of a C library header, which it hides from C files compiled with -I {}; \
             give the build another name with --name",
            dir.display()
        );
    }
    let json = serde_json::to_string_pretty(&output.report).map_err(|e| Error::Internal(e.to_string()))?;
    let files: [(String, Vec<u8>); 5] = [
        (format!("{name}.o"), output.object.clone()),
        (format!("{name}.h"), output.header.clone().into_bytes()),
        (format!("{name}.report.txt"), output.report.to_string().into_bytes()),
        (format!("{name}.report.json"), json.into_bytes()),
        (format!("{name}.program.txt"), print_program(&output.program).into_bytes()),
    ];
    let mut paths = Vec::new();
    for (file, bytes) in files {
        let path = dir.join(file);
        std::fs::write(&path, bytes).map_err(|error| Error::Write { path: path.clone(), error })?;
        paths.push(path);
    }
    Ok(paths)
}

impl fmt::Display for BuildReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "model:       {}", self.model)?;
        writeln!(f, "name:        {}", self.name)?;
        writeln!(f, "target:      {}", self.target)?;
        for (name, shape) in &self.inputs {
            writeln!(f, "input:       {name} {shape:?}")?;
        }
        for (name, shape) in &self.outputs {
            writeln!(f, "output:      {name} {shape:?}")?;
        }
        writeln!(f, "parameters:  {} ({:.2} M)", self.parameters, self.parameters as f64 / 1e6)?;
        writeln!(f, "FLOPs:       {} ({:.3} G)", self.flops, self.flops as f64 / 1e9)?;
        writeln!(f, "arena:       {} bytes", self.arena_bytes)?;
        writeln!(f, "weights:     {} bytes", self.weight_bytes)?;
        writeln!(f, "object:      {} bytes", self.object_bytes)?;
        writeln!(f, "operators:")?;
        for (name, count) in &self.operators {
            writeln!(f, "  {name:<16} {count}")?;
        }
        writeln!(f, "kernels:")?;
        for (name, count) in &self.kernels {
            writeln!(f, "  {name:<16} {count}")?;
        }
        writeln!(f, "stages:")?;
        for stage in &self.stages {
            writeln!(f, "  {:<16} {:.1} ms", stage.stage, stage.milliseconds)?;
        }
        if let Some(compression) = &self.compression {
            writeln!(f)?;
            write!(f, "{compression}")?;
        }
        Ok(())
    }
}
