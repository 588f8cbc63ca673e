//! Photo crops: the committed uint8 photo sources plus the `crops.csv` recipe, turned into
//! normalised float batches.
//!
//! Layout of the photos directory (`data/photos` in the repository):
//!
//! ```text
//! names.txt                 photo names, one a line (the order of photos.npy)
//! sources/<photo>_<S>.npy   uint8 (H, W, 3) RGB, the photo resized so that min(H, W) = S
//! crops.csv                 split,photo,scale,x,y,flip
//! photos.npy                float32 (N, 3, 224, 224): centre crops of the S = 256 sources
//! ```
//!
//! A crop `(x, y, flip)` of a source is the 224×224 window whose top-left pixel is column
//! `x`, row `y`, mirrored left-right when `flip` is set, then `v / 255` and normalised with
//! [`IMAGENET_MEAN`] / [`IMAGENET_STD`] in `f32`, laid out NCHW. `scripts/prepare_photos.py`
//! uses the same definition, so both sides agree bit for bit.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use crate::error::{DataIoError, Result, read_file};
use crate::npy::{NpyArray, NpyU8};

/// Side of the square crop window.
pub const CROP_SIZE: usize = 224;
/// The scale (short side) whose centre crops form `photos.npy`.
pub const CENTRE_SCALE: u32 = 256;
/// ImageNet channel means (RGB), applied after dividing by 255.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// Header line of `crops.csv`.
pub const CROPS_CSV_HEADER: &str = "split,photo,scale,x,y,flip";

/// Which part of the crop set a recipe row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// Calibration crops (used to choose quantisation ranges).
    Calib,
    /// Evaluation crops, disjoint from the calibration crops.
    Eval,
}

impl Split {
    /// The name used in `crops.csv` and in file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Calib => "calib",
            Split::Eval => "eval",
        }
    }
}

impl FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "calib" => Ok(Split::Calib),
            "eval" => Ok(Split::Eval),
            other => Err(format!("unknown split {other:?} (expected calib or eval)")),
        }
    }
}

/// One row of `crops.csv`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CropSpec {
    /// Calibration or evaluation.
    pub split: Split,
    /// Photo name (as in `names.txt`).
    pub photo: String,
    /// Short side of the source the window is cut from.
    pub scale: u32,
    /// Left column of the window.
    pub x: usize,
    /// Top row of the window.
    pub y: usize,
    /// Mirror left-right.
    pub flip: bool,
}

/// An RGB photo source: `(height, width, 3)` bytes, row-major, channels last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhotoSource {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `height * width * 3` bytes.
    pub pixels: Vec<u8>,
}

impl PhotoSource {
    /// Reads a source from NPY bytes holding a `uint8 (H, W, 3)` array.
    pub fn from_npy_bytes(bytes: &[u8]) -> Result<Self> {
        let a = NpyU8::from_npy_bytes(bytes)?;
        match a.shape[..] {
            [height, width, 3] => Ok(PhotoSource {
                height,
                width,
                pixels: a.data,
            }),
            _ => Err(DataIoError::ShapeMismatch {
                what: "photo source".into(),
                expected: "(H, W, 3)".into(),
                found: a.shape,
            }),
        }
    }

    /// Convenience: reads a source NPY file.
    pub fn from_npy_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_npy_bytes(&read_file(path.as_ref())?)
    }

    /// Top-left corner `(x, y)` of the centre window: `((W - 224) / 2, (H - 224) / 2)`,
    /// rounded down; `None` when the source is smaller than the window.
    pub fn centre_xy(&self) -> Option<(usize, usize)> {
        Some((
            self.width.checked_sub(CROP_SIZE)? / 2,
            self.height.checked_sub(CROP_SIZE)? / 2,
        ))
    }

    /// Writes the normalised `(3, 224, 224)` crop at `(x, y)` into `out`.
    ///
    /// Fails with [`DataIoError::CropOutOfBounds`] (reported with an empty photo name and
    /// scale 0; [`materialise_crops`] fills them in) when the window does not fit, and with
    /// [`DataIoError::BufferSize`] when `out` does not hold `3 * 224 * 224` floats.
    pub fn crop_into(&self, x: usize, y: usize, flip: bool, out: &mut [f32]) -> Result<()> {
        const PLANE: usize = CROP_SIZE * CROP_SIZE;
        if out.len() != 3 * PLANE {
            return Err(DataIoError::BufferSize {
                expected: 3 * PLANE,
                found: out.len(),
            });
        }
        let fits = x.checked_add(CROP_SIZE).is_some_and(|e| e <= self.width)
            && y.checked_add(CROP_SIZE).is_some_and(|e| e <= self.height)
            && self
                .height
                .checked_mul(self.width)
                .and_then(|n| n.checked_mul(3))
                == Some(self.pixels.len());
        if !fits {
            return Err(DataIoError::CropOutOfBounds {
                photo: String::new(),
                scale: 0,
                x,
                y,
                width: self.width,
                height: self.height,
            });
        }
        for r in 0..CROP_SIZE {
            let row = &self.pixels[((y + r) * self.width + x) * 3..][..CROP_SIZE * 3];
            for c in 0..CROP_SIZE {
                let sc = if flip { CROP_SIZE - 1 - c } else { c };
                for ch in 0..3 {
                    let v = f32::from(row[sc * 3 + ch]) / 255.0;
                    out[ch * PLANE + r * CROP_SIZE + c] =
                        (v - IMAGENET_MEAN[ch]) / IMAGENET_STD[ch];
                }
            }
        }
        Ok(())
    }

    /// The normalised `(1, 3, 224, 224)` crop at `(x, y)`.
    pub fn crop(&self, x: usize, y: usize, flip: bool) -> Result<NpyArray> {
        let mut data = vec![0.0; 3 * CROP_SIZE * CROP_SIZE];
        self.crop_into(x, y, flip, &mut data)?;
        Ok(NpyArray {
            shape: vec![1, 3, CROP_SIZE, CROP_SIZE],
            data,
        })
    }
}

/// File name of a source inside `sources/`: `<photo>_<scale>.npy`.
pub fn source_file_name(photo: &str, scale: u32) -> String {
    format!("{photo}_{scale}.npy")
}

/// Parses `names.txt`: one name a line, blank lines ignored.
pub fn parse_names(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// Parses `crops.csv` (header [`CROPS_CSV_HEADER`], then one crop a line; a trailing newline
/// and CRLF line ends are accepted).
pub fn parse_crops_csv(text: &str) -> Result<Vec<CropSpec>> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h.trim_end() == CROPS_CSV_HEADER => {}
        _ => {
            return Err(DataIoError::MalformedCsv {
                line: 1,
                message: format!("header must be {CROPS_CSV_HEADER:?}"),
            });
        }
    }
    let mut out = Vec::new();
    for (i, line) in lines {
        let line_no = i + 1;
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let err = |message: String| DataIoError::MalformedCsv {
            line: line_no,
            message,
        };
        let f: Vec<&str> = line.split(',').collect();
        let [split, photo, scale, x, y, flip] = f[..] else {
            return Err(err(format!("expected 6 fields, found {}", f.len())));
        };
        let num = |name: &str, v: &str| {
            v.parse::<usize>()
                .map_err(|_| err(format!("{name} {v:?} is not a non-negative integer")))
        };
        let scale = scale
            .parse::<u32>()
            .map_err(|_| err(format!("scale {scale:?} is not a non-negative integer")))?;
        if photo.is_empty() || photo.contains(['/', '\\']) || photo.starts_with('.') {
            return Err(err(format!("bad photo name {photo:?}")));
        }
        out.push(CropSpec {
            split: split.parse().map_err(err)?,
            photo: photo.to_string(),
            scale,
            x: num("x", x)?,
            y: num("y", y)?,
            flip: match flip {
                "0" => false,
                "1" => true,
                other => return Err(err(format!("flip {other:?} is not 0 or 1"))),
            },
        });
    }
    Ok(out)
}

/// Materialises the crops of `split` (in file order) as an `(N, 3, 224, 224)` batch.
///
/// `load(photo, scale)` supplies each source; it is called once per distinct source.
pub fn materialise_crops(
    specs: &[CropSpec],
    split: Split,
    mut load: impl FnMut(&str, u32) -> Result<PhotoSource>,
) -> Result<NpyArray> {
    const ITEM: usize = 3 * CROP_SIZE * CROP_SIZE;
    let chosen: Vec<&CropSpec> = specs.iter().filter(|s| s.split == split).collect();
    let mut cache: HashMap<(String, u32), PhotoSource> = HashMap::new();
    let mut data = vec![0.0f32; chosen.len() * ITEM];
    for (spec, out) in chosen.iter().zip(data.chunks_exact_mut(ITEM)) {
        let key = (spec.photo.clone(), spec.scale);
        if !cache.contains_key(&key) {
            let src = load(&spec.photo, spec.scale)?;
            cache.insert(key.clone(), src);
        }
        let src = &cache[&key];
        src.crop_into(spec.x, spec.y, spec.flip, out)
            .map_err(|e| match e {
                DataIoError::CropOutOfBounds {
                    x,
                    y,
                    width,
                    height,
                    ..
                } => DataIoError::CropOutOfBounds {
                    photo: spec.photo.clone(),
                    scale: spec.scale,
                    x,
                    y,
                    width,
                    height,
                },
                other => other,
            })?;
    }
    Ok(NpyArray {
        shape: vec![chosen.len(), 3, CROP_SIZE, CROP_SIZE],
        data,
    })
}

/// Convenience: materialises `split` from a photos directory (`crops.csv` and `sources/`).
pub fn materialise_split_dir(photos_dir: impl AsRef<Path>, split: Split) -> Result<NpyArray> {
    let dir = photos_dir.as_ref();
    let csv = read_file(&dir.join("crops.csv"))?;
    let text = String::from_utf8(csv).map_err(|_| DataIoError::MalformedCsv {
        line: 0,
        message: "not UTF-8".into(),
    })?;
    let specs = parse_crops_csv(&text)?;
    materialise_crops(&specs, split, |photo, scale| {
        PhotoSource::from_npy_file(dir.join("sources").join(source_file_name(photo, scale)))
    })
}

/// Convenience: the centre crops of the [`CENTRE_SCALE`] sources of the photos listed in
/// `names.txt`, in that order: the same batch as `photos.npy`.
pub fn centre_crops_dir(photos_dir: impl AsRef<Path>) -> Result<NpyArray> {
    let dir = photos_dir.as_ref();
    let names = read_file(&dir.join("names.txt"))?;
    let names = parse_names(&String::from_utf8_lossy(&names));
    let specs: Vec<CropSpec> = names
        .iter()
        .map(|name| {
            let src = PhotoSource::from_npy_file(
                dir.join("sources")
                    .join(source_file_name(name, CENTRE_SCALE)),
            )?;
            let (x, y) = src
                .centre_xy()
                .ok_or_else(|| DataIoError::CropOutOfBounds {
                    photo: name.clone(),
                    scale: CENTRE_SCALE,
                    x: 0,
                    y: 0,
                    width: src.width,
                    height: src.height,
                })?;
            Ok(CropSpec {
                split: Split::Eval,
                photo: name.clone(),
                scale: CENTRE_SCALE,
                x,
                y,
                flip: false,
            })
        })
        .collect::<Result<_>>()?;
    materialise_crops(&specs, Split::Eval, |photo, scale| {
        PhotoSource::from_npy_file(dir.join("sources").join(source_file_name(photo, scale)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 230x226 source whose bytes encode their own position.
    fn synthetic() -> PhotoSource {
        let (height, width) = (226, 230);
        let mut pixels = Vec::with_capacity(height * width * 3);
        for r in 0..height {
            for c in 0..width {
                pixels.extend_from_slice(&[
                    (r % 256) as u8,
                    (c % 256) as u8,
                    ((r + c) % 256) as u8,
                ]);
            }
        }
        PhotoSource {
            height,
            width,
            pixels,
        }
    }

    fn norm(v: u8, ch: usize) -> f32 {
        (f32::from(v) / 255.0 - IMAGENET_MEAN[ch]) / IMAGENET_STD[ch]
    }

    #[test]
    fn crop_picks_the_right_window_and_flips() {
        let s = synthetic();
        let a = s.crop(3, 2, false).unwrap();
        let plane = CROP_SIZE * CROP_SIZE;
        // Pixel (row 5, col 7) of the crop = source (7, 10).
        assert_eq!(a.data[5 * CROP_SIZE + 7], norm(7, 0));
        assert_eq!(a.data[plane + 5 * CROP_SIZE + 7], norm(10, 1));
        assert_eq!(a.data[2 * plane + 5 * CROP_SIZE + 7], norm(17, 2));
        let f = s.crop(3, 2, true).unwrap();
        // Flipped: crop column 0 is source column 3 + 223.
        assert_eq!(f.data[plane], norm(226, 1));
        assert_eq!(f.data[plane + CROP_SIZE - 1], norm(3, 1));
        assert_eq!(s.centre_xy(), Some((3, 1)));
    }

    #[test]
    fn out_of_bounds_and_bad_buffers_are_errors() {
        let s = synthetic();
        assert!(s.crop(6, 0, false).is_ok());
        assert!(matches!(
            s.crop(7, 0, false),
            Err(DataIoError::CropOutOfBounds { .. })
        ));
        assert!(matches!(
            s.crop(0, 3, false),
            Err(DataIoError::CropOutOfBounds { .. })
        ));
        assert!(s.crop(usize::MAX, 0, false).is_err());
        let mut small = vec![0.0; 10];
        assert!(matches!(
            s.crop_into(0, 0, false, &mut small),
            Err(DataIoError::BufferSize { .. })
        ));
        let tiny = PhotoSource {
            height: 10,
            width: 10,
            pixels: vec![0; 300],
        };
        assert_eq!(tiny.centre_xy(), None);
        let lying = PhotoSource {
            height: 300,
            width: 300,
            pixels: vec![0; 5],
        };
        assert!(lying.crop(0, 0, false).is_err());
    }

    #[test]
    fn csv_parses_and_rejects_malformed_rows() {
        let text = "split,photo,scale,x,y,flip\r\ncalib,a,256,1,2,0\neval,b,320,3,4,1\n\n";
        let specs = parse_crops_csv(text).unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(
            specs[1],
            CropSpec {
                split: Split::Eval,
                photo: "b".into(),
                scale: 320,
                x: 3,
                y: 4,
                flip: true
            }
        );
        for bad in [
            "",
            "x,y\n",
            "split,photo,scale,x,y,flip\ntrain,a,256,0,0,0\n",
            "split,photo,scale,x,y,flip\ncalib,a,256,0,0,2\n",
            "split,photo,scale,x,y,flip\ncalib,a,256,-1,0,0\n",
            "split,photo,scale,x,y,flip\ncalib,a,256,0,0\n",
            "split,photo,scale,x,y,flip\ncalib,../a,256,0,0,0\n",
            "split,photo,scale,x,y,flip\ncalib,a,99999999999,0,0,0\n",
        ] {
            assert!(parse_crops_csv(bad).is_err(), "{bad:?} accepted");
        }
        let e = parse_crops_csv("split,photo,scale,x,y,flip\ncalib,a,1,1,1,1\neval,a,1,1,1\n");
        assert!(matches!(e, Err(DataIoError::MalformedCsv { line: 3, .. })));
    }

    #[test]
    fn materialise_selects_split_and_loads_each_source_once() {
        let specs = parse_crops_csv(
            "split,photo,scale,x,y,flip\ncalib,p,1,0,0,0\neval,p,1,1,1,1\ncalib,p,1,6,2,1\n",
        )
        .unwrap();
        let mut loads = 0;
        let batch = materialise_crops(&specs, Split::Calib, |name, scale| {
            assert_eq!((name, scale), ("p", 1));
            loads += 1;
            Ok(synthetic())
        })
        .unwrap();
        assert_eq!(loads, 1);
        assert_eq!(batch.shape, vec![2, 3, CROP_SIZE, CROP_SIZE]);
        assert_eq!(
            batch.outer(1).unwrap(),
            &synthetic().crop(6, 2, true).unwrap().data[..]
        );
        let bad = parse_crops_csv("split,photo,scale,x,y,flip\neval,p,7,100,0,0\n").unwrap();
        let e = materialise_crops(&bad, Split::Eval, |_, _| Ok(synthetic())).unwrap_err();
        assert!(
            matches!(e, DataIoError::CropOutOfBounds { ref photo, scale: 7, .. } if photo == "p")
        );
    }

    #[test]
    fn source_must_be_hwc3_uint8() {
        let ok = crate::npy::tests_support::u8_npy(&[2, 2, 3], &[7; 12]);
        assert_eq!(PhotoSource::from_npy_bytes(&ok).unwrap().width, 2);
        let gray = crate::npy::tests_support::u8_npy(&[2, 2], &[7; 4]);
        assert!(matches!(
            PhotoSource::from_npy_bytes(&gray),
            Err(DataIoError::ShapeMismatch { .. })
        ));
    }
}
