#!/usr/bin/env python3
"""Prepare lutq's natural-photo evaluation data from photos shipped in PyPI packages.

Writes, under data/photos/:
  sources/<photo>_<S>.npy   uint8 RGB HWC, the photo resized so its short side is S
                            (S in SCALES; torchvision resize = PIL bilinear with antialias)
  names.txt                 photo names, one a line, in the order of photos.npy
  photos.npy                float32 (11,3,224,224): centre 224x224 crop of the S=256 source,
                            /255, ImageNet mean/std, NCHW
  crops.csv                 split,photo,scale,x,y,flip: reproducible random crops (fixed seed),
                            128 calibration + 96 evaluation, no tuple in both
  mobilenet_v2_onnxruntime.npy  float32 (11,1000): onnxruntime logits of
                            models/mobilenet_v2.onnx on photos.npy (skipped with a warning
                            when that model does not exist yet)

A crop (x, y, flip) of a source is source[y:y+224, x:x+224], mirrored left-right when flip=1,
then normalised exactly like photos.npy. The centre crop is at x=(W-224)//2, y=(H-224)//2
(floor), so that photos.npy equals the centre crops of the S=256 sources bit for bit; the Rust
crate lutq-dataio materialises the crops the same way.

Usage (from the repository root):  python scripts/prepare_photos.py
"""

from __future__ import annotations

import csv
import hashlib
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "data" / "photos"

CROP = 224
SCALES = (256, 320)
CENTRE_SCALE = 256
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
SEED = 20240611
N_CALIB = 128
N_EVAL = 96

# (name, loader description) in the committed order.
PHOTO_NAMES = [
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "motorcycle_left",
    "motorcycle_right",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "china",
    "flower",
]


def photo_source_files() -> dict[str, Path]:
    """The file inside its package that each photo is read from."""
    import skimage
    import sklearn

    sk = Path(skimage.__file__).parent / "data"
    sl = Path(sklearn.__file__).parent / "datasets" / "images"
    return {
        "astronaut": sk / "astronaut.png",
        "chelsea": sk / "chelsea.png",
        "coffee": sk / "coffee.png",
        "rocket": sk / "rocket.jpg",
        "motorcycle_left": sk / "motorcycle_left.png",
        "motorcycle_right": sk / "motorcycle_right.png",
        "hubble_deep_field": sk / "hubble_deep_field.jpg",
        "immunohistochemistry": sk / "ihc.png",
        "retina": sk / "retina.jpg",
        "china": sl / "china.jpg",
        "flower": sl / "flower.jpg",
    }


def load_photos() -> list[tuple[str, np.ndarray]]:
    """The 11 photos as uint8 RGB HWC arrays, through the packages' own loaders."""
    import skimage.data as skd
    from sklearn.datasets import load_sample_images

    left, right, _disp = skd.stereo_motorcycle()
    sample = load_sample_images()
    by_file = {Path(f).name: img for f, img in zip(sample.filenames, sample.images)}
    photos = {
        "astronaut": skd.astronaut(),
        "chelsea": skd.chelsea(),
        "coffee": skd.coffee(),
        "rocket": skd.rocket(),
        "motorcycle_left": left,
        "motorcycle_right": right,
        "hubble_deep_field": skd.hubble_deep_field(),
        "immunohistochemistry": skd.immunohistochemistry(),
        "retina": skd.retina(),
        "china": by_file["china.jpg"],
        "flower": by_file["flower.jpg"],
    }
    out = []
    for name in PHOTO_NAMES:
        img = np.ascontiguousarray(photos[name])
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, (name, img.shape)
        out.append((name, img))
    return out


def resize_short(img: np.ndarray, short: int) -> np.ndarray:
    """Resize so that the short side is `short` (torchvision semantics: PIL bilinear with
    antialias, long side = int(short * long / short_in))."""
    import torchvision.transforms.functional as TF
    from PIL import Image
    from torchvision.transforms import InterpolationMode

    pil = Image.fromarray(img)
    out = TF.resize(pil, short, interpolation=InterpolationMode.BILINEAR, antialias=True)
    arr = np.asarray(out, dtype=np.uint8)
    assert min(arr.shape[:2]) == short, arr.shape
    return np.ascontiguousarray(arr)


def centre_xy(src: np.ndarray) -> tuple[int, int]:
    h, w = src.shape[:2]
    return (w - CROP) // 2, (h - CROP) // 2


def crop_normalise(src: np.ndarray, x: int, y: int, flip: int) -> np.ndarray:
    """uint8 HWC source -> float32 (3,224,224), the one definition of a crop."""
    win = src[y : y + CROP, x : x + CROP, :]
    assert win.shape == (CROP, CROP, 3), (src.shape, x, y)
    if flip:
        win = win[:, ::-1, :]
    f = win.astype(np.float32) / np.float32(255.0)
    f = (f - MEAN) / STD
    return np.ascontiguousarray(f.transpose(2, 0, 1), dtype=np.float32)


def build_sources() -> dict[tuple[str, int], np.ndarray]:
    return {(name, s): resize_short(img, s) for name, img in load_photos() for s in SCALES}


def photo_batch(sources: dict[tuple[str, int], np.ndarray]) -> np.ndarray:
    crops = []
    for name in PHOTO_NAMES:
        src = sources[(name, CENTRE_SCALE)]
        x, y = centre_xy(src)
        crops.append(crop_normalise(src, x, y, 0))
    return np.stack(crops).astype(np.float32)


def crop_recipes(sources: dict[tuple[str, int], np.ndarray]) -> list[tuple[str, str, int, int, int, int]]:
    """Random crops: photos assigned round-robin within each split, scale/x/y/flip drawn
    from a fixed-seed PCG64; every (photo, scale, x, y, flip) tuple appears at most once."""
    rng = np.random.Generator(np.random.PCG64(SEED))
    seen: set[tuple[str, int, int, int, int]] = set()
    rows = []
    for split, n in (("calib", N_CALIB), ("eval", N_EVAL)):
        for i in range(n):
            name = PHOTO_NAMES[i % len(PHOTO_NAMES)]
            while True:
                scale = int(SCALES[rng.integers(len(SCALES))])
                h, w = sources[(name, scale)].shape[:2]
                x = int(rng.integers(0, w - CROP + 1))
                y = int(rng.integers(0, h - CROP + 1))
                flip = int(rng.integers(0, 2))
                key = (name, scale, x, y, flip)
                if key not in seen:
                    seen.add(key)
                    break
            rows.append((split, name, scale, x, y, flip))
    calib = {r[1:] for r in rows if r[0] == "calib"}
    evals = {r[1:] for r in rows if r[0] == "eval"}
    assert not (calib & evals) and len(calib) == N_CALIB and len(evals) == N_EVAL
    return rows


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    (OUT / "sources").mkdir(parents=True, exist_ok=True)
    sources = build_sources()
    total = 0
    for (name, s), arr in sources.items():
        p = OUT / "sources" / f"{name}_{s}.npy"
        np.save(p, arr)
        total += p.stat().st_size
    print(f"sources: {len(sources)} files, {total} bytes")
    assert total <= 8_000_000, total

    (OUT / "names.txt").write_text("".join(n + "\n" for n in PHOTO_NAMES))
    batch = photo_batch(sources)
    assert batch.shape == (len(PHOTO_NAMES), 3, CROP, CROP) and batch.dtype == np.float32
    np.save(OUT / "photos.npy", batch)

    rows = crop_recipes(sources)
    with open(OUT / "crops.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["split", "photo", "scale", "x", "y", "flip"])
        w.writerows(rows)
    print(f"crops.csv: {sum(r[0] == 'calib' for r in rows)} calib, {sum(r[0] == 'eval' for r in rows)} eval")

    model = ROOT / "models" / "mobilenet_v2.onnx"
    if model.exists():
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
        logits = sess.run(["logits"], {"input": batch})[0].astype(np.float32)
        assert logits.shape == (len(PHOTO_NAMES), 1000)
        np.save(OUT / "mobilenet_v2_onnxruntime.npy", logits)
        from torchvision.models import MobileNet_V2_Weights

        cats = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
        prob = np.exp(logits - logits.max(1, keepdims=True))
        prob /= prob.sum(1, keepdims=True)
        for name, row, p in zip(PHOTO_NAMES, logits, prob):
            k = int(row.argmax())
            print(f"top1 {name}: {k} {cats[k]} (p={p[k]:.3f})")
    else:
        print(f"warning: {model} missing, mobilenet_v2_onnxruntime.npy not written", file=sys.stderr)

    for p in sorted(OUT.rglob("*")):
        if p.is_file():
            print(f"{sha256(p)}  {p.relative_to(ROOT)}  {p.stat().st_size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
