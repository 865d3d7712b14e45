//! Arbitrary bytes as a compression recipe: TOML parsing, validation, a
//! round trip through serialization, and the passes on the MNIST ViT.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vitc_tests::fuzzing::recipe::run_recipe_bytes;

fuzz_target!(|bytes: &[u8]| {
    run_recipe_bytes(bytes);
});
