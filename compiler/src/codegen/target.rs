//! Target selection: the host (features read from CPUID) or a named triple.

use std::str::FromStr;
use std::sync::Arc;

use cranelift_codegen::isa::{self, OwnedTargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use target_lexicon::{Architecture, Triple};

use crate::error::{Error, Result};

/// ISA features assumed for a named x86-64 target: x86-64-v3 (AVX2, FMA),
/// what every x86-64 server CPU since 2015 has. Without FMA and AVX,
/// Cranelift turns each vector `fma` into four library calls.
const X86_64_V3: &[&str] = &["has_sse3", "has_ssse3", "has_sse41", "has_sse42", "has_popcnt", "has_avx", "has_avx2", "has_fma", "has_bmi1", "has_bmi2", "has_lzcnt"];

/// Builds the ISA for `triple` (the host when `None`). A named triple may
/// carry extra CPU features after `+`, e.g. `aarch64-unknown-linux-gnu+i8mm`,
/// each one of Cranelift's `has_*` ISA settings. `pic` selects
/// position-independent code, needed for objects linked into executables.
pub fn isa_for(triple: Option<&str>, pic: bool) -> Result<OwnedTargetIsa> {
    let mut flags = settings::builder();
    let set = |flags: &mut settings::Builder, name: &str, value: &str| {
        flags.set(name, value).map_err(|e| Error::Internal(format!("cranelift setting {name}={value}: {e}")))
    };
    // Kernels are emitted already scheduled and strength-reduced. At
    // "speed", the e-graph pass places pure instructions at their first
    // use, which moved all FMAs of the unrolled GEMM loop after its loads
    // and spilled registers. "none" keeps the emitted order.
    set(&mut flags, "opt_level", "none")?;
    set(&mut flags, "is_pic", if pic { "true" } else { "false" })?;
    set(&mut flags, "use_colocated_libcalls", "false")?;
    let flags = settings::Flags::new(flags);

    let isa = match triple {
        None => cranelift_native::builder()
            .map_err(|e| Error::Codegen(format!("the host CPU is not supported by the code generator: {e}")))?
            .finish(flags),
        Some(spec) => {
            let mut parts = spec.split('+');
            let name = parts.next().unwrap_or_default();
            let features: Vec<&str> = parts.collect();
            let parsed = Triple::from_str(name).map_err(|e| {
                Error::Codegen(format!("unknown target triple '{name}': {e}; try x86_64-unknown-linux-gnu or aarch64-unknown-linux-gnu"))
            })?;
            let mut builder = isa::lookup(parsed.clone()).map_err(|e| {
                Error::Codegen(format!("target '{name}' is not supported ({e}); vitc generates code for x86_64 and aarch64"))
            })?;
            if parsed.architecture == Architecture::X86_64 {
                for feature in X86_64_V3 {
                    builder.enable(feature).map_err(|e| Error::Internal(format!("x86-64 feature {feature}: {e}")))?;
                }
            }
            for feature in features {
                builder.enable(&format!("has_{feature}")).map_err(|_| {
                    Error::Codegen(format!(
                        "unknown CPU feature '{feature}' in target '{spec}'; features are Cranelift's has_* settings without the prefix, \
                         e.g. {name}+{}",
                        if parsed.architecture == Architecture::X86_64 { "avx512vnni" } else { "i8mm+dotprod" }
                    ))
                })?;
            }
            builder.finish(flags)
        }
    };
    isa.map_err(|e| Error::Codegen(format!("cannot configure the code generator: {e}")))
}

/// The host triple as text.
pub fn host_triple() -> String {
    Triple::host().to_string()
}

/// Keeps `Arc` in scope for callers that share an ISA.
pub type SharedIsa = Arc<dyn isa::TargetIsa>;
