//! `cargo xtask report-shot`: `lutq report`'s page rendered by a headless browser to a
//! PNG (the README's screenshot), checked not to be blank.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

const USAGE: &str = "cargo xtask report-shot [--page PAGE.html] [--out docs/report.png]
                         [--width 1280] [--height 2200] [--browser PATH]

Renders a `lutq report` page to PNG with headless Chromium and checks that it is not
blank: at least 3 % of the pixels differ from the background and the image holds at
least 32 colours (text alone has few; the charts bring many). Without --page it first
makes the README's page, the bundled MobileNetV2 report (release build; a few minutes):

  lutq report models/mobilenet_v2.onnx --calib data/photos/photos.npy \\
      --modes int8-pot-channel,lut4-pot-channel --keep-8bit first,depthwise \\
      -o target/report-shot/mobilenet_v2.html

The browser: --browser, else the first of chromium, chromium-headless-shell,
google-chrome on PATH. Debian: `apt-get install chromium`. It runs with --no-sandbox
(it only opens the local page, and CI containers run as root).";

/// The README's command, the page the screenshot shows.
const README_ARGS: [&str; 10] = [
    "report",
    "models/mobilenet_v2.onnx",
    "--calib",
    "data/photos/photos.npy",
    "--modes",
    "int8-pot-channel,lut4-pot-channel",
    "--keep-8bit",
    "first,depthwise",
    "-o",
    "target/report-shot/mobilenet_v2.html",
];

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut page: Option<PathBuf> = None;
    let mut out = PathBuf::from("docs/report.png");
    let (mut width, mut height) = (1280u32, 2200u32);
    let mut browser: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{a} needs a value\n\n{USAGE}"))
        };
        match a.as_str() {
            "--page" => page = Some(value()?.into()),
            "--out" => out = value()?.into(),
            "--width" => width = value()?.parse().context("--width: pixels")?,
            "--height" => height = value()?.parse().context("--height: pixels")?,
            "--browser" => browser = Some(value()?.into()),
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other}\n\n{USAGE}"),
        }
    }
    // Before any long work: the browser must exist.
    let browser = match browser {
        Some(b) => b,
        None => find_browser().with_context(|| {
            format!(
                "no headless browser found (chromium, chromium-headless-shell or \
                 google-chrome on PATH): install one with `apt-get install chromium` \
                 (Debian/Ubuntu) or pass --browser PATH\n\n{USAGE}"
            )
        })?,
    };
    let page = match page {
        Some(p) => p,
        None => make_readme_page()?,
    };
    let page = std::fs::canonicalize(&page)
        .with_context(|| format!("cannot find the page {}", page.display()))?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(&out);
    let shot = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            &format!("--window-size={width},{height}"),
            &format!("--screenshot={}", std::path::absolute(&out)?.display()),
        ])
        .arg(format!("file://{}", page.display()))
        .output()
        .with_context(|| format!("cannot run {}", browser.display()))?;
    if !shot.status.success() || !out.exists() {
        bail!(
            "{} wrote no screenshot:\n{}",
            browser.display(),
            String::from_utf8_lossy(&shot.stderr)
        );
    }
    let png = std::fs::read(&out)?;
    let image = decode_png(&png).with_context(|| format!("{} is no PNG", out.display()))?;
    let (ink, colours) = ink(&image);
    println!(
        "{}: {}×{} px, {} bytes; {:.1} % of the pixels not background, {colours} colours",
        out.display(),
        image.width,
        image.height,
        png.len(),
        100.0 * ink
    );
    if ink < 0.03 || colours < 32 {
        bail!(
            "the screenshot looks blank ({:.2} % ink, {colours} colours): open {} in a \
             browser to see why",
            100.0 * ink,
            page.display()
        );
    }
    Ok(())
}

fn find_browser() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-headless-shell", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
        .find(|p| p.is_file())
}

fn make_readme_page() -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all("target/report-shot")?;
    let status = Command::new("cargo")
        .args(["run", "--release", "--locked", "--bin", "lutq", "--"])
        .args(README_ARGS)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("lutq report failed");
    }
    Ok(Path::new(README_ARGS[9]).to_path_buf())
}

/// An 8-bit RGB(A) image, 3 or 4 bytes per pixel.
struct Image {
    width: usize,
    height: usize,
    channels: usize,
    pixels: Vec<u8>,
}

/// Fraction of pixels that differ from the top-left one (the page's background) by
/// more than 8 in a channel, and distinct colours at 4 bits per channel.
fn ink(im: &Image) -> (f64, usize) {
    let c = im.channels;
    let bg = &im.pixels[..3];
    let mut seen = std::collections::HashSet::new();
    let mut ink = 0usize;
    for p in im.pixels.chunks(c) {
        if p[..3].iter().zip(bg).any(|(a, b)| a.abs_diff(*b) > 8) {
            ink += 1;
        }
        seen.insert((p[0] >> 4, p[1] >> 4, p[2] >> 4));
    }
    (ink as f64 / (im.width * im.height) as f64, seen.len())
}

/// A non-interlaced 8-bit RGB or RGBA PNG (what Chromium writes): chunks, zlib, and
/// the five scanline filters.
fn decode_png(bytes: &[u8]) -> anyhow::Result<Image> {
    if bytes.len() < 8 || &bytes[..8] != b"\x89PNG\r\n\x1a\n" {
        bail!("no PNG signature");
    }
    let (mut width, mut height, mut channels) = (0usize, 0usize, 0usize);
    let mut idat = Vec::new();
    let mut at = 8;
    while at + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into()?) as usize;
        let kind = &bytes[at + 4..at + 8];
        let data = bytes.get(at + 8..at + 8 + len).context("truncated chunk")?;
        match kind {
            b"IHDR" => {
                width = u32::from_be_bytes(data[0..4].try_into()?) as usize;
                height = u32::from_be_bytes(data[4..8].try_into()?) as usize;
                let (depth, colour, interlace) = (data[8], data[9], data[12]);
                channels = match colour {
                    2 => 3,
                    6 => 4,
                    _ => bail!("colour type {colour} (expected RGB or RGBA)"),
                };
                if depth != 8 || interlace != 0 {
                    bail!("bit depth {depth}, interlace {interlace} (expected 8, none)");
                }
            }
            b"IDAT" => idat.extend_from_slice(data),
            b"IEND" => break,
            _ => {}
        }
        at += 12 + len;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..]).read_to_end(&mut raw)?;
    let stride = width * channels;
    if width == 0 || raw.len() != height * (stride + 1) {
        bail!("image data of {} bytes for {width}×{height}", raw.len());
    }
    let mut pixels = vec![0u8; height * stride];
    for y in 0..height {
        let filter = raw[y * (stride + 1)];
        let line = &raw[y * (stride + 1) + 1..(y + 1) * (stride + 1)];
        for x in 0..stride {
            let a = if x >= channels {
                pixels[y * stride + x - channels]
            } else {
                0
            };
            let b = if y > 0 {
                pixels[(y - 1) * stride + x]
            } else {
                0
            };
            let c = if x >= channels && y > 0 {
                pixels[(y - 1) * stride + x - channels]
            } else {
                0
            };
            let predict = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((a as u16 + b as u16) / 2) as u8,
                4 => {
                    let p = a as i16 + b as i16 - c as i16;
                    let (pa, pb, pc) = (
                        (p - a as i16).abs(),
                        (p - b as i16).abs(),
                        (p - c as i16).abs(),
                    );
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                f => bail!("scanline filter {f}"),
            };
            pixels[y * stride + x] = line[x].wrapping_add(predict);
        }
    }
    Ok(Image {
        width,
        height,
        channels,
        pixels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's screenshot decodes and shows a page, not a blank window.
    #[test]
    fn the_committed_screenshot_is_not_blank() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/report.png");
        let image = decode_png(&std::fs::read(path).unwrap()).unwrap();
        assert_eq!(image.width, 1280);
        assert_eq!(
            image.pixels.len(),
            image.width * image.height * image.channels
        );
        let (ink, colours) = ink(&image);
        assert!(ink > 0.03 && colours >= 32, "{ink} {colours}");
    }

    #[test]
    fn a_blank_image_has_no_ink() {
        let image = Image {
            width: 4,
            height: 2,
            channels: 3,
            pixels: vec![255; 24],
        };
        assert_eq!(ink(&image), (0.0, 1));
        assert!(decode_png(b"\x89PNG\r\n\x1a\n").is_err(), "no image data");
        assert!(decode_png(b"GIF89a").is_err());
    }
}
