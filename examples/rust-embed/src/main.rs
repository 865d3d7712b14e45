//! Classifies MNIST digits with the MNIST ViT compiled into this binary.
//!
//! usage: mnist-embed IMAGES.u8 [LABELS.txt]
//!
//! The arguments and the output are those of `examples/c/classify.c`.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if !(2..=3).contains(&args.len()) {
        eprintln!("usage: {} IMAGES.u8 [LABELS.txt]", args[0]);
        return ExitCode::from(2);
    }

    match mnist_embed::run(Path::new(&args[1]), args.get(2).map(Path::new)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
