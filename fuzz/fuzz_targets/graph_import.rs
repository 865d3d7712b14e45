//! Structurally generated ONNX graphs (valid protobuf, arbitrary graph):
//! cycles, dangling operands, duplicate names, wrong operand counts and
//! absurd shapes and attributes, run through every stage.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vitc_tests::fuzzing::harness::run_spec_bytes;

fuzz_target!(|bytes: &[u8]| {
    run_spec_bytes(bytes);
});
