#!/usr/bin/env python3
"""The ImageNet accuracy protocol of `cargo xtask accuracy`: calibration and evaluation crops
from *disjoint source photos* (issue 16).

    python scripts/prepare_protocol.py [--out data/full/protocol]

Reads 62 photographs from pinned package files (every file checked by sha256), splits them
into 29 calibration photos and 33 evaluation photos (the table PHOTOS below; never one photo,
nor two photos of one scene, in both), and writes

  data/protocol/photos.csv   name,set,scene,package,file,sha256,licence (committed)
  data/protocol/crops.csv    split,index,photo,x,y,side,flip: every crop's recipe (committed)
  data/protocol/files.csv    file,shape,sha256 of the NPY files below (committed)
  <out>/calib.npy            float32 (256, 3, 224, 224): calibration crops of the calibration
                             photos (round-robin, so the first 64 cover all 29 photos)
  <out>/eval.npy             float32 (192, 3, 224, 224): crops of the evaluation photos
  <out>/eval_calib_photos.npy float32 (192, 3, 224, 224): other crops of the calibration photos
                             (other windows, other seed): the old "same photos" protocol
  <out>/centered/*.npy       the same crops normalised (v - 127) / 128 (EfficientNet-Lite)

A crop: a random square window whose side is a uniform 35-100 % of the photo's short side, a
random left-right flip, PIL's bilinear resize (antialiased when shrinking) to 224x224, then
v/255, ImageNet mean/std in float32, NCHW -- the recipe of scripts/zoo/sources.py
`random_square_crops` with torchvision's ImageNet normalisation. Deterministic (PCG64 seeds).

Needs (see data/README.md, "data/protocol"):
  pip install numpy==2.4.6 pillow==13.0.0
  pip install --no-deps scikit-image==0.26.0 scikit-learn==1.9.1 matplotlib==3.11.2
  apt-get install lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 mate-backgrounds \
      plasma-workspace-wallpapers enlightenment-data
The PyPI packages are only read (their image files), never imported.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.util
import io
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "data" / "protocol"

SIZE = 224
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# split -> (photo set, number of crops, PCG64 seed)
SPLITS = {
    "calib": ("calib", 256, 20261204),
    "eval": ("eval", 192, 20261205),
    "eval_calib_photos": ("calib", 192, 20261206),
}
NPY = {"calib": "calib.npy", "eval": "eval.npy", "eval_calib_photos": "eval_calib_photos.npy"}

SKI = "scikit-image 0.26.0"
SKL = "scikit-learn 1.9.1"
MPL = "matplotlib 3.11.2"
L16 = "Debian lomiri-wallpapers-16.04 20.04.0-2"
L20 = "Debian lomiri-wallpapers-20.04 20.04.0-2"
MATE = "Debian mate-backgrounds 1.26.0-1"
PLASMA = "Debian plasma-workspace-wallpapers 4:5.27.5-2"
E = "Debian enlightenment-data 0.25.4-2"
BG = "/usr/share/backgrounds/"
MATE_DIR = "/usr/share/backgrounds/mate/nature/"
PLASMA_DIR = "/usr/share/wallpapers/"
E_DIR = "/usr/share/enlightenment/data/backgrounds/"
MATE_LIC = "GPL-2+, {} (mate-backgrounds copyright file)"
PLASMA_LIC = "GPL-2+, KDE Visual Design Group (plasma-workspace-wallpapers copyright file)"
E_LIC = "BSD-2-clause, Enlightenment contributors (enlightenment-data copyright file, Files: *)"

# name, set, scene, package, file, sha256, licence. `scene` groups photos of one scene (the
# stereo pair of motorcycles; Mountain and Peaks show one range): a scene is in one set only.
# For PyPI packages `file` is the path inside the wheel; for Debian ones the installed path.
# enlightenment-data's backgrounds are Eet files: the photo is the first (largest) JPEG stream.
PHOTOS = [
    # --- calibration: the zoo's 11 calibration photos (data/zoo/README.md) ...
    ("astronaut", "calib", "", SKI, "skimage/data/astronaut.png",
     "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5", "public domain (NASA)"),
    ("chelsea", "calib", "", SKI, "skimage/data/chelsea.png",
     "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb", "CC0 (Stefan van der Walt)"),
    ("coffee", "calib", "", SKI, "skimage/data/coffee.png",
     "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7", "CC0 (Rachel Michetti)"),
    ("rocket", "calib", "", SKI, "skimage/data/rocket.jpg",
     "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c", "public domain (SpaceX)"),
    ("motorcycle_left", "calib", "motorcycle", SKI, "skimage/data/motorcycle_left.png",
     "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179",
     "no licence stated (Middlebury 2014 stereo data set); research use"),
    ("hubble_deep_field", "calib", "", SKI, "skimage/data/hubble_deep_field.jpg",
     "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4", "public domain (NASA)"),
    ("immunohistochemistry", "calib", "", SKI, "skimage/data/ihc.png",
     "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef", "no known copyright restrictions"),
    ("retina", "calib", "", SKI, "skimage/data/retina.jpg",
     "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6", "CC0 1.0 (Mikael Häggström)"),
    ("china", "calib", "", SKL, "sklearn/datasets/images/china.jpg",
     "8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29", "CC BY 2.0 (danielbuechele, Flickr)"),
    ("flower", "calib", "", SKL, "sklearn/datasets/images/flower.jpg",
     "a77f6ec41e353afdf8bdff2ea981b2955535d8d83294f8cfa49cf4e423dd5638", "CC BY 2.0 (vultilion, Flickr)"),
    ("grace_hopper", "calib", "", MPL, "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
     "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130", "public domain (U.S. Navy photograph)"),
    # ... plus every other photo of mate-backgrounds, plasma-workspace-wallpapers and
    # enlightenment-data (sorted by name, alternating; Mountain and Peaks kept together).
    ("mate_aqua", "calib", "", MATE, MATE_DIR + "Aqua.jpg",
     "5c30118205982da441bf7e6a1ada636a8a0be879408140b3148280c665ed6bce", MATE_LIC.format("Charles Barbin")),
    ("mate_dune", "calib", "", MATE, MATE_DIR + "Dune.jpg",
     "8a67c2cb0be8c46b70c237311a4fa4d2b4ac7d39568135384787801fa5cc9a91", MATE_LIC.format("Marco Cogoni, Hylke Bons")),
    ("mate_freshflower", "calib", "", MATE, MATE_DIR + "FreshFlower.jpg",
     "972b0a0c4e5e3fa93f4f244fc84bc64b121a5eac3aaa5856f1308c1f38a02f8e", MATE_LIC.format("Jens Ansorg")),
    ("mate_ladybird", "calib", "", MATE, MATE_DIR + "LadyBird.jpg",
     "e35a9a4126ef969c90b29c038058c5a575a20eadd84106a37bf1fa9931e7b61d", MATE_LIC.format("Charles Barbin")),
    ("mate_storm", "calib", "", MATE, MATE_DIR + "Storm.jpg",
     "77ca53077831d3237f73393a91fc879158abc046d852941c26e90de336356957", MATE_LIC.format("Sergey Nazarov")),
    ("mate_wood", "calib", "", MATE, MATE_DIR + "Wood.jpg",
     "19c78500ac00a622e19907ab9cc7d06d46fe08c4a6142759a84195696150ec07", MATE_LIC.format("Jean-François Fortin Tam")),
    ("plasma_bythewater", "calib", "", PLASMA, PLASMA_DIR + "BytheWater/contents/images/2560x1600.jpg",
     "c272434ef39f2abf1ed48a15a8910088020f3165329a5092f3940ec9464bc05f", PLASMA_LIC),
    ("plasma_colorfulcups", "calib", "", PLASMA, PLASMA_DIR + "ColorfulCups/contents/images/2560x1600.jpg",
     "6e0f3a72feb5a4a9fec191b77e34874c3c69e2d93040deb3f07773e73385023d", PLASMA_LIC),
    ("plasma_eveningglow", "calib", "", PLASMA, PLASMA_DIR + "EveningGlow/contents/images/2560x1600.jpg",
     "586682dcb362b9f620068f10138f87d0d3649939aef238adc5807cb951976a7a", PLASMA_LIC),
    ("plasma_grey", "calib", "", PLASMA, PLASMA_DIR + "Grey/contents/images/2560x1600.jpg",
     "88c31d8944b7e6935d1b9a296654c692f0772cb512491713eb30a972a604c0ed", PLASMA_LIC),
    ("plasma_path", "calib", "", PLASMA, PLASMA_DIR + "Path/contents/images/2560x1600.jpg",
     "7477457d7f17b736259f1b021864778ad4ba802cf3214e6728181ff29126bba8", PLASMA_LIC),
    ("e_bamboo", "calib", "", E, E_DIR + "Bamboo.edj",
     "53ea365cefdf42f49d68b1415a2255b74a8e4594fe78d7c39c5af60a6e897097", E_LIC),
    ("e_god_rays", "calib", "", E, E_DIR + "God-Rays.edj",
     "95791b71c50280c52135b767cd8e14420b196c92e29162964badfd20968adae1", E_LIC),
    ("e_green_maple", "calib", "", E, E_DIR + "Green-Maple.edj",
     "78178a3f9af4372ac532c57cb9470209658ee3c21c381ccba5f7607dca090e46", E_LIC),
    ("e_mountain", "calib", "e_mountains", E, E_DIR + "Mountain.edj",
     "9e05a784efaac919af789a0f89b4a5de711d1bac859ed971547d6cd09d54b75d", E_LIC),
    ("e_peaks", "calib", "e_mountains", E, E_DIR + "Peaks.edj",
     "25e7cd527440f434de0ac779a66d0a0704b5d0974405c60409beb257543f0ceb", E_LIC),
    ("e_sea_of_lanterns", "calib", "", E, E_DIR + "Sea-of-Lanterns.edj",
     "d880dc109bf6d4eb493feae612f61f63249ff494b3cbce9216646fe9d92109c0", E_LIC),
    ("e_white_flower", "calib", "", E, E_DIR + "White-Flower.edj",
     "6e464125ba760eda1aed776921b8e665fece221d327710e988129ac18dc0528d", E_LIC),
    # --- evaluation: the zoo's 15 evaluation photos (lomiri wallpapers) ...
    ("bridge", "eval", "", L16, BG + "Bridge_by_Sander_Klootwijk.jpg",
     "bd86b081f9975e2b83527f71e49b9271a8ab40885428395969d9f7d834d7f050", "CC BY-SA 4.0, Sander Klootwijk"),
    ("dragonfly", "eval", "", L16, BG + "Dragonfly_by_Bolly.jpg",
     "af5af17841009732def24b09bb1e669a1b09d2b4bdeee7812c371101c30d2bb3", "CC BY-SA 4.0, \"Bolly\""),
    ("fig", "eval", "", L16, BG + "Picture_0B_by_freespace.jpg",
     "c8c0ab18e48d9e0419fe42881112137f3afafc27dfddc29ec3a6d54c56d225ad", "CC BY 4.0, Trevor \"Freespace\""),
    ("brushes", "eval", "", L16, BG + "Picture_1A_by_freespace.jpg",
     "89e86af38d04daaef975665dc2127e9fa76f0fd68f4eea105a2d0ae3390b010b", "CC BY 4.0, Trevor \"Freespace\""),
    ("wine", "eval", "", L16, BG + "Wine_by_Jakkub_Mede.jpg",
     "d2e96e6d4da40dd804b3d0ce295e94de04a2d7d9b6785d42cd9d92ba58bced74", "CC BY 4.0, Jakub Mede"),
    ("aitzgorri", "eval", "", L16, BG + "aitzgorri_by_Aitzol_Berasategi.jpg",
     "66268e7b48f8854d36a28765fac6e23ec1aee251daa6da1f64715f201020ad36", "CC BY 4.0, Aitzol Berasategi"),
    ("free", "eval", "", L16, BG + "free_by_Peter_Nerlich.jpg",
     "85a5453c2fed514c75973016f3d862aca62eb7ca087618822469274ac1092373", "CC BY-SA 4.0, Peter Nerlich"),
    ("friends", "eval", "", L16, BG + "friends_by_Aitzol_Berasategi.jpg",
     "cc40e313c74e421edffe3403def413c16878ce14661cce7ec5915baeab35538d", "CC BY 4.0, Aitzol Berasategi"),
    ("greentock", "eval", "", L16, BG + "greentock_by_Peter_Nerlich.jpg",
     "e7b20e2db9dcd6e2b278ca55873c2110b35d89cd38b04d0b18728726888e6889", "CC BY-SA 4.0, Peter Nerlich"),
    ("life", "eval", "", L16, BG + "life_by_Aitzol_Berasategi.jpg",
     "4c119350ead80201fe256850c3d316309ddfb4bdf10b235ce982dcde0c667c05", "CC BY 4.0, Aitzol Berasategi"),
    ("picosdeeuropa", "eval", "", L16, BG + "picosdeeuropa_by_Aitzol_Berasategi.jpg",
     "414d0072b2f6f2c555deafeaef6e45c4fed6fa9ad26eba6560ca8803959cf97a", "CC BY 4.0, Aitzol Berasategi"),
    ("seeding", "eval", "", L16, BG + "seeding_by_Clements_Engelhardt.jpg",
     "a5634d1ab5e41a3568e92d4a894a500c92b891f9ff734e50bd224d6e185a605f", "CC0 1.0, Clemens Engelhardt"),
    ("sunset", "eval", "", L16, BG + "sunset_by_Aitzol_Berasategi.jpg",
     "474dab6a4b9f94dc76c29dfe30e9f5db4af0fd2e33fe5d695f8152b371efca18", "CC BY 4.0, Aitzol Berasategi"),
    ("analogpattern", "eval", "", L16, BG + "analogpattern_by_Peter_Nerlich.jpg",
     "15372488a192b2be2eafc67bd3ed31cbfca19abe3929e925607fcbc9cb4d4202", "CC BY-SA 4.0, Peter Nerlich"),
    ("kleiber", "eval", "", L20, BG + "Kleiber_by_Lukas_Baubkus.jpg",
     "6572410c09f4492c74ccadde133565a14c0161617d5917d4c820c66d65a44ba7", "CC BY-SA 3.0, Lukas Baubkus"),
    # ... plus the other half of the new packages' photos.
    ("mate_blinds", "eval", "", MATE, MATE_DIR + "Blinds.jpg",
     "f7aac0dcc2e06d0491643e84df3da1d9db7c4610f58806a880d56e074799f600",
     MATE_LIC.format("Lennart Poettering, Andrea Cimitan")),
    ("mate_garden", "eval", "", MATE, MATE_DIR + "Garden.jpg",
     "d3095ee09d425ef23d27155412136cf14fc3c9af76ca58b452f55e23da324e78", MATE_LIC.format("Charles Barbin")),
    ("mate_greenmeadow", "eval", "", MATE, MATE_DIR + "GreenMeadow.jpg",
     "8fa0de0aa4089f7319c9fb7a6d006d4cab6023e8c8853731557cff53567b4832",
     MATE_LIC.format("Timothy Schellhase, Lapo Calamandrei")),
    ("mate_raindrops", "eval", "", MATE, MATE_DIR + "RainDrops.jpg",
     "3e4ea9671c28c90a86cf67b3db9daf18c4741587c596333a7529ca589aaa0c16", MATE_LIC.format("\"blackcombwhistler07\"")),
    ("mate_twowings", "eval", "", MATE, MATE_DIR + "TwoWings.jpg",
     "665e5abf8a5399070a91a9a8e455fe071e5b61697ff78fdeda4e9843ef545aeb", MATE_LIC.format("Charles Barbin, Hylke Bons")),
    ("mate_yellowflower", "eval", "", MATE, MATE_DIR + "YellowFlower.jpg",
     "254da96256acb7add685679775a04d1e4a5bc8cd13e5a5a3d61351ce198a5306", MATE_LIC.format("Charles Barbin")),
    ("plasma_coldripple", "eval", "", PLASMA, PLASMA_DIR + "ColdRipple/contents/images/2560x1600.jpg",
     "05bef6722fc0ed81292cceb3ed026c38d17e510f3c84be7d68610c2b1a723c3f", PLASMA_LIC),
    ("plasma_darkesthour", "eval", "", PLASMA, PLASMA_DIR + "DarkestHour/contents/images/2560x1600.jpg",
     "8e3703fae3a3c217b1fc2b399b706cd3720584268d071ba153e4809daa55f1ce", PLASMA_LIC),
    ("plasma_fallenleaf", "eval", "", PLASMA, PLASMA_DIR + "FallenLeaf/contents/images/2560x1600.jpg",
     "95603a6560c7e8d50e0e03b3f4adbe39c5258c72528e74e4ecaea1daf4e499de", PLASMA_LIC),
    ("plasma_onestandsout", "eval", "", PLASMA, PLASMA_DIR + "OneStandsOut/contents/images/2560x1600.jpg",
     "cb507baf1dafdcae362264f3aba9483ed4be5f6c9fdd770f0ec0920c6d9e80fd", PLASMA_LIC),
    ("plasma_summer_1am", "eval", "", PLASMA, PLASMA_DIR + "summer_1am/contents/images/2560x1600.jpg",
     "c868b50789591dd42910153c768053f1ba0a98cb36bbfc2b7a96a1045d0477f8", PLASMA_LIC),
    ("e_foggy_trees", "eval", "", E, E_DIR + "Foggy-Trees.edj",
     "48d958e9f41a2d5af151ac9a6edfad34989e65d44a6602b55c9cf45ca5771ff8", E_LIC),
    ("e_lichen_branches", "eval", "", E, E_DIR + "Lichen-Branches.edj",
     "2a2f3a09e02dbfa50757444bc3100c90b91e3cb053c4cf7731334ead7d34042a", E_LIC),
    ("e_red_maple", "eval", "", E, E_DIR + "Red-Maple.edj",
     "53ea5bf96fe8227c18fd2f27536cf46fea33bdb3db8c154eb412ce1127c54882", E_LIC),
    ("e_snow_trees", "eval", "", E, E_DIR + "Snow-Trees.edj",
     "09da5c21c6ff02628c61bb6c60e0760a0b5996d022bfddbf0bed6ef620ce5b5b", E_LIC),
    ("e_spruce_needles", "eval", "", E, E_DIR + "Spruce-Needles.edj",
     "e4ba168d17daffec459e96d09835462ef137d97dbdadda6f5a4e0eef46c83cca", E_LIC),
    ("e_sunset_clouds", "eval", "", E, E_DIR + "Sunset-Clouds.edj",
     "9b2041d7107f966e036c0fc97ed40fda657f2930d2e37360ce46fbb216211c45", E_LIC),
    ("e_yellow_flower", "eval", "", E, E_DIR + "Yellow-Flower.edj",
     "28002bd39a732f6b6a4ef4335931a25cb73d2340b1d95da51e3a8b53b735baa2", E_LIC),
]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def package_file(package: str, inner: str) -> Path:
    """Where a pinned package file is on this machine (PyPI packages are located, not imported)."""
    if package.startswith("Debian"):
        return Path(inner)
    top, rest = inner.split("/", 1)
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{package} is not installed (pip install --no-deps {package.replace(' ', '==')})")
    return Path(list(spec.submodule_search_locations)[0]) / rest


def load(photo) -> np.ndarray:
    """RGB uint8 (H, W, 3) of a photo, after checking its package file's sha256."""
    from PIL import Image

    name, _set, _scene, package, inner, digest, _lic = photo
    path = package_file(package, inner)
    if not path.exists():
        raise SystemExit(f"{path} is missing: install {package}")
    got = sha256(path)
    if got != digest:
        raise SystemExit(f"{path}: sha256 {got}, expected {digest} ({package})")
    data = path.read_bytes()
    if path.suffix == ".edj":
        start = data.find(b"\xff\xd8\xff")
        if start < 0:
            raise SystemExit(f"{path}: no JPEG stream")
        data = data[start:]
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def crops(photos: list[tuple[str, np.ndarray]], n: int, seed: int) -> tuple[np.ndarray, list[tuple]]:
    """n crops, photos round-robin; returns uint8 (n, 224, 224, 3) RGB and recipes
    (photo, x, y, side, flip)."""
    from PIL import Image

    rng = np.random.Generator(np.random.PCG64(seed))
    out = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    recipes = []
    for i in range(n):
        name, a = photos[i % len(photos)]
        h, w = a.shape[:2]
        side = int(round(rng.uniform(0.35, 1.0) * min(h, w)))
        y = int(rng.integers(0, h - side + 1))
        x = int(rng.integers(0, w - side + 1))
        flip = int(rng.integers(0, 2))
        im = Image.fromarray(a[y:y + side, x:x + side])
        if flip:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        im = im.resize((SIZE, SIZE), Image.Resampling.BILINEAR)
        out[i] = np.asarray(im, dtype=np.uint8)
        recipes.append((name, x, y, side, flip))
    return out, recipes


def imagenet(pixels: np.ndarray) -> np.ndarray:
    """torchvision's ImageNet normalisation: v/255, mean/std per channel, NCHW float32."""
    f = pixels.astype(np.float32) / np.float32(255.0)
    return ((f - MEAN) / STD).transpose(0, 3, 1, 2).copy()


def centered(pixels: np.ndarray) -> np.ndarray:
    """(v - 127) / 128, NCHW float32: the EfficientNet-Lite recipe of the zoo
    (models/zoo/manifest.json, efficientnet_lite0)."""
    f = (pixels.astype(np.float32) - np.float32(127.0)) / np.float32(128.0)
    return f.transpose(0, 3, 1, 2).copy()


# Normalisations written per split: sub-folder of --out (and prefix in files.csv) -> function.
NORMALISATIONS = {"": imagenet, "centered": centered}


def check_split(photos) -> None:
    names = [p[0] for p in photos]
    assert len(set(names)) == len(names), "duplicate photo name"
    assert len({p[5] for p in photos}) == len(photos), "one package file under two names"
    scenes: dict[str, str] = {}
    for name, set_, scene, *_ in photos:
        assert set_ in ("calib", "eval"), name
        if scene and scenes.setdefault(scene, set_) != set_:
            raise SystemExit(f"scene {scene} is in both sets")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "full" / "protocol")
    args = ap.parse_args()
    check_split(PHOTOS)
    COMMITTED.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(COMMITTED / "photos.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["name", "set", "scene", "package", "file", "sha256", "licence"])
        w.writerows(PHOTOS)
    loaded = {p[1]: [] for p in PHOTOS}
    for p in PHOTOS:
        loaded[p[1]].append((p[0], load(p)))
        print(f"  {p[1]:5} {p[0]:22} {loaded[p[1]][-1][1].shape}")
    rows, files = [], []
    for split, (set_, n, seed) in SPLITS.items():
        pixels, recipes = crops(loaded[set_], n, seed)
        for sub, normalise in NORMALISATIONS.items():
            x = normalise(pixels)
            name = f"{sub}/{NPY[split]}" if sub else NPY[split]
            path = args.out / name
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, x)
            files.append((name, "x".join(map(str, x.shape)), sha256(path)))
            print(f"{path}: {x.shape}")
        rows += [(split, i, *r) for i, r in enumerate(recipes)]
    calib = {r[2:] for r in rows if r[0] == "calib"}
    again = [r for r in rows if r[0] == "eval_calib_photos" and r[2:] in calib]
    assert not again, f"calibration recipes reused for evaluation: {again[:3]}"
    with open(COMMITTED / "crops.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["split", "index", "photo", "x", "y", "side", "flip"])
        w.writerows(rows)
    with open(COMMITTED / "files.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["file", "shape", "sha256"])
        w.writerows(files)


if __name__ == "__main__":
    main()
