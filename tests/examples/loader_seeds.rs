//! Writes seed ONNX files for the `onnx_loader` fuzz target from the inputs
//! of the `graph_import` target: each input that decodes into a graph spec
//! and passes the loader becomes one `.onnx` file.
//!
//! Usage: `cargo run --release -p vitc-tests --example loader_seeds -- GRAPH_CORPUS_DIR OUT_DIR`

use std::path::PathBuf;

use onnx_protobuf::Message;
use vitc_tests::fuzzing::harness::{Stage, run_model_bytes};
use vitc_tests::fuzzing::spec::GraphSpec;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(input), Some(output)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: loader_seeds GRAPH_CORPUS_DIR OUT_DIR");
    };
    let output = PathBuf::from(output);
    std::fs::create_dir_all(&output)?;
    let mut written = 0;
    for entry in std::fs::read_dir(&input)? {
        let path = entry?.path();
        let Ok(spec) = GraphSpec::from_bytes(&std::fs::read(&path)?) else { continue };
        let bytes = spec.to_model().write_to_bytes()?;
        if run_model_bytes(&bytes) > Stage::Import {
            let name = path.file_name().expect("a corpus entry has a file name");
            std::fs::write(output.join(name).with_extension("onnx"), bytes)?;
            written += 1;
        }
    }
    println!("wrote {written} seed models to {}", output.display());
    Ok(())
}
