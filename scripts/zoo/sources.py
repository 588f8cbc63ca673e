"""Raw material for the zoo's input sets, each file from a pinned package and checked by sha256.

Two disjoint groups of photos (different photographs, different packages):
  CALIB_PHOTOS: scikit-image 0.26.0, scikit-learn 1.9.1, matplotlib 3.11.2 sample photos
  EVAL_PHOTOS:  Debian lomiri-wallpapers-16.04 / -20.04 (20.04.0-2) photographs
Audio: Debian espeak-ng 1.51 (synthesised keywords) and openttd-opensfx 1.0.3 (sound effects).
Text: fonts shipped by matplotlib 3.11.2; sentences from Python's `this` module and Debian's
base-files licence texts.
"""
from __future__ import annotations

import io
import struct
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo_common import check_sha


def _site(pkg: str) -> Path:
    import importlib

    return Path(importlib.import_module(pkg).__file__).resolve().parent


# ---------------------------------------------------------------------------------------------
# photos


@dataclass(frozen=True)
class Photo:
    name: str
    package: str  # "scikit-image 0.26.0" etc.
    inner: str  # file inside the package
    sha256: str
    licence: str

    def path(self) -> Path:
        if self.package.startswith("scikit-image"):
            return _site("skimage") / "data" / self.inner.split("/")[-1]
        if self.package.startswith("scikit-learn"):
            return _site("sklearn") / "datasets" / "images" / self.inner.split("/")[-1]
        if self.package.startswith("matplotlib"):
            return _site("matplotlib") / "mpl-data" / "sample_data" / self.inner.split("/")[-1]
        return Path(self.inner)  # Debian package: absolute installed path

    def load(self) -> np.ndarray:
        """RGB uint8 (H, W, 3)."""
        from PIL import Image

        p = self.path()
        check_sha(p, self.sha256)
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"))


_SKI = "scikit-image 0.26.0"
_SKL = "scikit-learn 1.9.1"
_MPL = "matplotlib 3.11.2"
_L16 = "Debian lomiri-wallpapers-16.04 20.04.0-2"
_L20 = "Debian lomiri-wallpapers-20.04 20.04.0-2"
_BG = "/usr/share/backgrounds/"

CALIB_PHOTOS = [
    Photo("astronaut", _SKI, "skimage/data/astronaut.png",
          "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5", "public domain (NASA)"),
    Photo("chelsea", _SKI, "skimage/data/chelsea.png",
          "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb", "CC0 (Stefan van der Walt)"),
    Photo("coffee", _SKI, "skimage/data/coffee.png",
          "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7", "CC0 (Rachel Michetti)"),
    Photo("rocket", _SKI, "skimage/data/rocket.jpg",
          "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c", "public domain (SpaceX)"),
    Photo("motorcycle_left", _SKI, "skimage/data/motorcycle_left.png",
          "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179",
          "no licence stated (Middlebury 2014 stereo data set); research use"),
    Photo("hubble_deep_field", _SKI, "skimage/data/hubble_deep_field.jpg",
          "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4", "public domain (NASA)"),
    Photo("immunohistochemistry", _SKI, "skimage/data/ihc.png",
          "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef", "no known copyright restrictions"),
    Photo("retina", _SKI, "skimage/data/retina.jpg",
          "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6", "CC0 1.0 (Mikael Häggström)"),
    Photo("china", _SKL, "sklearn/datasets/images/china.jpg",
          "8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29", "CC BY 2.0 (danielbuechele, Flickr)"),
    Photo("flower", _SKL, "sklearn/datasets/images/flower.jpg",
          "a77f6ec41e353afdf8bdff2ea981b2955535d8d83294f8cfa49cf4e423dd5638", "CC BY 2.0 (vultilion, Flickr)"),
    Photo("grace_hopper", _MPL, "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
          "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130",
          "public domain (U.S. Navy photograph)"),
]

EVAL_PHOTOS = [
    Photo("bridge", _L16, _BG + "Bridge_by_Sander_Klootwijk.jpg",
          "bd86b081f9975e2b83527f71e49b9271a8ab40885428395969d9f7d834d7f050", "CC BY-SA 4.0, Sander Klootwijk"),
    Photo("dragonfly", _L16, _BG + "Dragonfly_by_Bolly.jpg",
          "af5af17841009732def24b09bb1e669a1b09d2b4bdeee7812c371101c30d2bb3", "CC BY-SA 4.0, \"Bolly\""),
    Photo("fig", _L16, _BG + "Picture_0B_by_freespace.jpg",
          "c8c0ab18e48d9e0419fe42881112137f3afafc27dfddc29ec3a6d54c56d225ad", "CC BY 4.0, Trevor \"Freespace\""),
    Photo("brushes", _L16, _BG + "Picture_1A_by_freespace.jpg",
          "89e86af38d04daaef975665dc2127e9fa76f0fd68f4eea105a2d0ae3390b010b", "CC BY 4.0, Trevor \"Freespace\""),
    Photo("wine", _L16, _BG + "Wine_by_Jakkub_Mede.jpg",
          "d2e96e6d4da40dd804b3d0ce295e94de04a2d7d9b6785d42cd9d92ba58bced74", "CC BY 4.0, Jakub Mede"),
    Photo("aitzgorri", _L16, _BG + "aitzgorri_by_Aitzol_Berasategi.jpg",
          "66268e7b48f8854d36a28765fac6e23ec1aee251daa6da1f64715f201020ad36", "CC BY 4.0, Aitzol Berasategi"),
    Photo("free", _L16, _BG + "free_by_Peter_Nerlich.jpg",
          "85a5453c2fed514c75973016f3d862aca62eb7ca087618822469274ac1092373", "CC BY-SA 4.0, Peter Nerlich"),
    Photo("friends", _L16, _BG + "friends_by_Aitzol_Berasategi.jpg",
          "cc40e313c74e421edffe3403def413c16878ce14661cce7ec5915baeab35538d", "CC BY 4.0, Aitzol Berasategi"),
    Photo("greentock", _L16, _BG + "greentock_by_Peter_Nerlich.jpg",
          "e7b20e2db9dcd6e2b278ca55873c2110b35d89cd38b04d0b18728726888e6889", "CC BY-SA 4.0, Peter Nerlich"),
    Photo("life", _L16, _BG + "life_by_Aitzol_Berasategi.jpg",
          "4c119350ead80201fe256850c3d316309ddfb4bdf10b235ce982dcde0c667c05", "CC BY 4.0, Aitzol Berasategi"),
    Photo("picosdeeuropa", _L16, _BG + "picosdeeuropa_by_Aitzol_Berasategi.jpg",
          "414d0072b2f6f2c555deafeaef6e45c4fed6fa9ad26eba6560ca8803959cf97a", "CC BY 4.0, Aitzol Berasategi"),
    Photo("seeding", _L16, _BG + "seeding_by_Clements_Engelhardt.jpg",
          "a5634d1ab5e41a3568e92d4a894a500c92b891f9ff734e50bd224d6e185a605f", "CC0 1.0, Clemens Engelhardt"),
    Photo("sunset", _L16, _BG + "sunset_by_Aitzol_Berasategi.jpg",
          "474dab6a4b9f94dc76c29dfe30e9f5db4af0fd2e33fe5d695f8152b371efca18", "CC BY 4.0, Aitzol Berasategi"),
    Photo("analogpattern", _L16, _BG + "analogpattern_by_Peter_Nerlich.jpg",
          "15372488a192b2be2eafc67bd3ed31cbfca19abe3929e925607fcbc9cb4d4202", "CC BY-SA 4.0, Peter Nerlich"),
    Photo("kleiber", _L20, _BG + "Kleiber_by_Lukas_Baubkus.jpg",
          "6572410c09f4492c74ccadde133565a14c0161617d5917d4c820c66d65a44ba7", "CC BY-SA 3.0, Lukas Baubkus"),
]

LFW_SUBSET = ("scikit-image 0.26.0", "skimage/data/lfw_subset.npy",
              "9560ec2f5edfac01973f63a8a99d00053fecd11e21877e18038fbe500f8e872c")


def load_lfw_subset() -> np.ndarray:
    """(200, 25, 25) uint8: 100 faces then 100 non-faces (skimage.data.lfw_subset)."""
    p = _site("skimage") / "data" / "lfw_subset.npy"
    check_sha(p, LFW_SUBSET[2])
    a = np.load(p)
    if a.dtype != np.uint8:  # stored as float in [0, 1] in some versions
        a = np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)
    return a


def load_photos(group: list[Photo]) -> list[tuple[str, np.ndarray]]:
    return [(p.name, p.load()) for p in group]


def random_square_crops(photos: list[tuple[str, np.ndarray]], n: int, size: int, seed: int,
                        min_frac: float = 0.35, max_frac: float = 1.0,
                        aspect: float = 1.0) -> tuple[np.ndarray, list[dict]]:
    """n crops, photos taken round-robin, each a random window of the photo (side = frac·short
    side, frac uniform in [min_frac, max_frac]; width/height = aspect), random left-right flip,
    resized to (size·aspect, size) with PIL's antialiased bilinear filter. Returns uint8
    (n, H, W, 3) and the recipes."""
    from PIL import Image

    rng = np.random.Generator(np.random.PCG64(seed))
    out_w = int(round(size * aspect))
    imgs = []
    recipes = []
    for i in range(n):
        name, a = photos[i % len(photos)]
        h, w = a.shape[:2]
        frac = rng.uniform(min_frac, max_frac)
        ch = int(round(frac * min(h, w / aspect)))
        cw = int(round(ch * aspect))
        y = int(rng.integers(0, h - ch + 1))
        x = int(rng.integers(0, w - cw + 1))
        flip = bool(rng.integers(0, 2))
        im = Image.fromarray(a[y:y + ch, x:x + cw])
        if flip:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        im = im.resize((out_w, size), Image.Resampling.BILINEAR)
        imgs.append(np.asarray(im, dtype=np.uint8))
        recipes.append({"photo": name, "x": x, "y": y, "w": cw, "h": ch, "flip": int(flip)})
    return np.stack(imgs), recipes


def centre_crop(a: np.ndarray, resize_short: int, size: int) -> np.ndarray:
    """Resize so the short side is resize_short (antialiased bilinear), take the centre size×size."""
    from PIL import Image

    im = Image.fromarray(a)
    w, h = im.size
    s = resize_short / min(w, h)
    im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.Resampling.BILINEAR)
    w, h = im.size
    x, y = (w - size) // 2, (h - size) // 2
    return np.asarray(im.crop((x, y, x + size, y + size)), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# text lines (PP-OCR direction classifier)

CALIB_FONTS = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Italic.ttf",
               "DejaVuSansMono.ttf", "DejaVuSans-Oblique.ttf"]
EVAL_FONTS = ["STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "cmr10.ttf",
              "cmss10.ttf", "cmtt10.ttf"]
APACHE_LICENSE = ("/usr/share/common-licenses/Apache-2.0", "Debian base-files 12.4+deb12u11",
                  "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30")


def font_path(name: str) -> Path:
    return _site("matplotlib") / "mpl-data" / "fonts" / "ttf" / name


def calib_sentences() -> list[str]:
    import codecs
    import contextlib
    import io as _io

    with contextlib.redirect_stdout(_io.StringIO()):
        import this  # noqa: F401  (prints the Zen of Python on first import)
    text = codecs.decode(this.s, "rot13")
    return [ln.strip() for ln in text.splitlines()[2:] if ln.strip()]


def eval_sentences() -> list[str]:
    p = Path(APACHE_LICENSE[0])
    check_sha(p, APACHE_LICENSE[2])
    words = p.read_text().split()
    # cut the licence into chunks of 3..7 words
    out, i, k = [], 0, 0
    while i < len(words):
        n = 3 + (k % 5)
        out.append(" ".join(words[i:i + n]))
        i += n
        k += 1
    return out


# ---------------------------------------------------------------------------------------------
# audio

OPENSFX_CAT = ("/usr/share/games/openttd/baseset/opensfx/opensfx.cat", "Debian openttd-opensfx 1.0.3-2",
               "cd348625bd82cca10620977bdf11ca5ff4fd4477bf2a87bf4463b095d12310ec")


def opensfx_sounds() -> dict[int, tuple[str, np.ndarray, int]]:
    """Entries of OpenSFX's opensfx.cat: index -> (description, mono int16 samples, rate)."""
    check_sha(OPENSFX_CAT[0], OPENSFX_CAT[2])
    data = Path(OPENSFX_CAT[0]).read_bytes()
    first = struct.unpack_from("<I", data, 0)[0] & 0x7FFFFFFF
    out = {}
    for i in range(first // 8):
        off, size = struct.unpack_from("<II", data, 8 * i)
        off &= 0x7FFFFFFF
        nl = data[off]
        name = data[off + 1:off + 1 + nl].rstrip(b"\0").decode("utf-8", "replace")
        riff = data[off + 1 + nl:off + size]
        if not riff:
            continue
        with wave.open(io.BytesIO(riff)) as w:
            assert w.getsampwidth() == 2 and w.getnchannels() == 1
            raw = w.readframes(w.getnframes())
            pcm = np.frombuffer(raw[:len(raw) // 2 * 2], dtype="<i2").copy()
            out[i] = (name, pcm, w.getframerate())
    return out


def espeak(word: str, voice: str, speed: int, pitch: int) -> tuple[np.ndarray, int]:
    """espeak-ng's rendering of `word` as mono int16 samples and the sample rate (22050)."""
    with tempfile.TemporaryDirectory() as d:
        wav = Path(d) / "w.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), word],
                       check=True, capture_output=True)
        with wave.open(str(wav)) as w:
            assert w.getsampwidth() == 2 and w.getnchannels() == 1
            return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy(), w.getframerate()


def espeak_version() -> str:
    r = subprocess.run(["espeak-ng", "--version"], check=True, capture_output=True, text=True)
    return r.stdout.strip()
