//! Arbitrary bytes as an ONNX file: protobuf decoding, then every later
//! stage for the inputs that decode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vitc_tests::fuzzing::harness::run_model_bytes;

fuzz_target!(|bytes: &[u8]| {
    run_model_bytes(bytes);
});
