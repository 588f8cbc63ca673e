//! The charts as inline SVG (why not a plotting crate: the crate docs).
//!
//! * [`sqnr_chart`]: x the linear layers in execution order (their row number in the
//!   table), y SQNR in dB; one colour per mode, a thin line joining a mode's points, one
//!   `<circle class="mark">` per measured (layer, mode).
//! * [`weight_chart`], [`activation_chart`]: small histograms (bar height log(1 + n)),
//!   one `<rect class="bar">` per non-empty bin, the table levels as `<line
//!   class="level">`, the clamp range as two `<line class="clamp">` over a shaded band.
//! * [`memory_chart`]: x the schedule's steps, y the arena offset; one `<rect
//!   class="block">` per buffer or kernel scratch, the bytes live per step as a line.
//!
//! Every mark has a `<title>` (the browser's tooltip). No `xmlns`: the HTML parser puts
//! inline `<svg>` in the SVG namespace, and the page holds no URL at all.

use std::fmt::Write as _;

use crate::html::escape;
use crate::{ActivationHistogram, ArenaUse, Histogram, Report, WeightHistogram};

/// Colours of the modes, in order (Okabe–Ito: distinguishable with colour-blindness).
pub const PALETTE: [&str; 8] = [
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#f0e442",
];

const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 40.0;
const HEIGHT: f64 = 300.0;

/// A "nice" tick step for a span (1, 2 or 5 times a power of ten, about six ticks).
fn tick_step(span: f64) -> f64 {
    let raw = (span / 6.0).max(1e-9);
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p)
}

/// The chart, or a paragraph saying nothing was measured.
pub fn sqnr_chart(r: &Report) -> String {
    let values: Vec<f64> = r
        .layers
        .iter()
        .flat_map(|l| l.modes.iter().filter_map(|m| m.sqnr_db))
        .collect();
    if values.is_empty() {
        return "<p class=\"note\">No per-layer SQNR was measured.</p>\n".into();
    }
    let (mut lo, mut hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    lo = lo.min(0.0);
    if hi - lo < 1.0 {
        hi = lo + 1.0;
    }
    let step = tick_step(hi - lo);
    lo = (lo / step).floor() * step;
    hi = (hi / step).ceil() * step;
    let n = r.layers.len();
    let pitch = (720.0 / n as f64).clamp(10.0, 40.0);
    let width = LEFT + RIGHT + pitch * n as f64;
    let x = |i: usize| LEFT + pitch * (i as f64 + 0.5);
    let y = |v: f64| TOP + (hi - v) / (hi - lo) * (HEIGHT - TOP - BOTTOM);

    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg class=\"chart\" data-chart=\"sqnr\" width=\"{width:.0}\" \
         height=\"{HEIGHT:.0}\" viewBox=\"0 0 {width:.0} {HEIGHT:.0}\" role=\"img\" \
         aria-label=\"SQNR of every linear layer's output per mode\">"
    );
    // Grid and y ticks.
    let mut t = lo;
    while t <= hi + step * 1e-6 {
        let ty = y(t);
        let _ = writeln!(
            s,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{ty:.1}\" y2=\"{ty:.1}\"/>\
             <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            width - RIGHT,
            LEFT - 6.0,
            ty + 4.0,
            fmt_tick(t, step)
        );
        t += step;
    }
    let _ = writeln!(
        s,
        "<text class=\"axis\" x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" \
         text-anchor=\"middle\">SQNR (dB)</text>",
        (TOP + HEIGHT - BOTTOM) / 2.0,
        (TOP + HEIGHT - BOTTOM) / 2.0
    );
    // x ticks: the layer numbers of the table, thinned to about 40 labels.
    let every = n.div_ceil(40).max(1);
    for i in (0..n).step_by(every) {
        let _ = writeln!(
            s,
            "<text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            x(i),
            HEIGHT - BOTTOM + 14.0,
            i + 1
        );
    }
    let _ = writeln!(
        s,
        "<text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">linear layer \
         (row of the table, execution order)</text>",
        (LEFT + width - RIGHT) / 2.0,
        HEIGHT - 6.0
    );
    for (mi, mode) in r.modes.iter().enumerate() {
        let colour = PALETTE[mi % PALETTE.len()];
        let points: Vec<(usize, f64)> = r
            .layers
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.modes.get(mi).and_then(|m| m.sqnr_db).map(|v| (i, v)))
            .collect();
        let path: Vec<String> = points
            .iter()
            .map(|&(i, v)| format!("{:.1},{:.1}", x(i), y(v)))
            .collect();
        let _ = writeln!(
            s,
            "<g class=\"series\" data-mode=\"{m}\"><polyline fill=\"none\" stroke=\"{colour}\" \
             stroke-width=\"1\" stroke-opacity=\"0.5\" points=\"{}\"/>",
            path.join(" "),
            m = escape(&mode.mode)
        );
        for &(i, v) in &points {
            let layer = &r.layers[i];
            let _ = writeln!(
                s,
                "<circle class=\"mark\" data-layer=\"{l}\" data-mode=\"{m}\" cx=\"{:.1}\" \
                 cy=\"{:.1}\" r=\"3.5\" fill=\"{colour}\"><title>{} {l} ({}): {v:.2} dB in \
                 {m}</title></circle>",
                x(i),
                y(v),
                i + 1,
                escape(&layer.op),
                l = escape(&layer.name),
                m = escape(&mode.mode)
            );
        }
        s.push_str("</g>\n");
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_tick(t: f64, step: f64) -> String {
    if step >= 1.0 {
        format!("{t:.0}")
    } else {
        format!("{t:.1}")
    }
}

/// Size of a histogram (small multiple).
const HW: f64 = 250.0;
const HH: f64 = 110.0;
const HPAD: f64 = 6.0;
/// Room under a histogram for the x labels.
const HAXIS: f64 = 16.0;

fn num(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The bars of `h` (log count scale: `log(1 + n)`), one `<rect class="bar">` per
/// non-empty bin, and the x labels; returns the SVG body and the value → x map.
fn bars(s: &mut String, h: &Histogram, unit: &str) -> impl Fn(f64) -> f64 + use<> {
    let (lo, hi) = (h.lo, h.hi);
    let x = move |v: f64| HPAD + (v - lo) / (hi - lo) * (HW - 2.0 * HPAD);
    let base = HH - HAXIS;
    let top = (1.0 + h.counts.iter().copied().max().unwrap_or(0) as f64)
        .ln()
        .max(1e-9);
    let w = (hi - lo) / h.counts.len() as f64;
    for (i, &c) in h.counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let (a, b) = (lo + i as f64 * w, lo + (i + 1) as f64 * w);
        let height = (1.0 + c as f64).ln() / top * (base - 4.0);
        let _ = write!(
            s,
            "<rect class=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\">\
             <title>[{}, {}){unit}: {c}</title></rect>",
            x(a),
            base - height,
            (x(b) - x(a) - 0.3).max(0.5),
            height,
            num(a),
            num(b)
        );
    }
    let _ = write!(
        s,
        "\n<line class=\"axisline\" x1=\"{HPAD}\" x2=\"{:.1}\" y1=\"{base}\" y2=\"{base}\"/>\
         <text class=\"tick\" x=\"{HPAD}\" y=\"{:.1}\">{}</text>\
         <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
        HW - HPAD,
        HH - 3.0,
        num(lo),
        HW - HPAD,
        HH - 3.0,
        num(hi)
    );
    // Zero, unless it would collide with an end's label.
    if lo < 0.0 && hi > 0.0 && x(0.0) > 40.0 && x(0.0) < HW - 40.0 {
        let _ = write!(
            s,
            "<text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">0</text>",
            x(0.0),
            HH - 3.0
        );
    }
    x
}

fn small_svg(s: &mut String, chart: &str, layer: &str, mode: &str, label: &str) {
    let _ = write!(
        s,
        "<svg class=\"chart small\" data-chart=\"{chart}\" data-layer=\"{}\" \
         data-mode=\"{}\" width=\"{HW}\" height=\"{HH}\" viewBox=\"0 0 {HW} {HH}\" \
         role=\"img\" aria-label=\"{}\">",
        escape(layer),
        escape(mode),
        escape(label)
    );
}

/// A layer's weights in one mode: the histogram of `w · 2^f_w` and one
/// `<line class="level">` per distinct table entry (darker when more channels use it).
pub fn weight_chart(layer: &str, mode: &str, h: &WeightHistogram, channels: usize) -> String {
    let mut s = String::new();
    small_svg(
        &mut s,
        "weights",
        layer,
        mode,
        &format!("weights of {layer} in {mode} with the table levels"),
    );
    let x = bars(&mut s, &h.hist, " weights");
    for l in &h.levels {
        let share = l.channels as f64 / channels.max(1) as f64;
        let _ = write!(
            s,
            "<line class=\"level\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"2\" y2=\"{:.1}\" \
             stroke-opacity=\"{:.2}\"><title>level {}: {} of {channels} channels</title></line>",
            HH - HAXIS,
            0.25 + 0.75 * share,
            l.value,
            l.channels,
            x = x(l.value as f64)
        );
    }
    s.push_str("</svg>");
    s
}

/// A layer's float output in one mode: the histogram, the clamp range shaded between
/// two `<line class="clamp">`.
pub fn activation_chart(layer: &str, mode: &str, h: &ActivationHistogram) -> String {
    let mut s = String::new();
    small_svg(
        &mut s,
        "activations",
        layer,
        mode,
        &format!("float output of {layer} against {mode}'s clamp range"),
    );
    let (lo, hi) = (h.hist.lo, h.hist.hi);
    let x = move |v: f64| HPAD + (v - lo) / (hi - lo) * (HW - 2.0 * HPAD);
    let [a, b] = h.clamp;
    let _ = write!(
        s,
        "<rect class=\"range\" x=\"{:.1}\" y=\"2\" width=\"{:.1}\" height=\"{:.1}\"/>",
        x(a),
        (x(b) - x(a)).max(0.5),
        HH - HAXIS - 2.0
    );
    let _ = bars(&mut s, &h.hist, " values");
    for (v, side) in [(a, "low"), (b, "high")] {
        let _ = write!(
            s,
            "<line class=\"clamp\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"2\" y2=\"{:.1}\">\
             <title>clamp {side}: {}; {:.3} % of the values outside the range</title></line>",
            HH - HAXIS,
            num(v),
            100.0 * h.clipped,
            x = x(v)
        );
    }
    s.push_str("</svg>");
    s
}

/// The arena over the schedule: x the step, y the byte offset; one `<rect class="block">`
/// per activation buffer or kernel scratch, the occupancy (bytes live per step) as a
/// line, the arena size and the lower bound as dashed lines.
pub fn memory_chart(mode: &str, a: &ArenaUse) -> String {
    const L: f64 = 64.0;
    const R: f64 = 12.0;
    const T: f64 = 12.0;
    const B: f64 = 34.0;
    const H: f64 = 300.0;
    let steps = a.steps.max(1);
    let pitch = (900.0 / steps as f64).clamp(2.0, 48.0);
    let width = L + R + pitch * steps as f64;
    let top_bytes = (a.arena_bytes.max(1) as f64) * 1.04;
    let y = |bytes: f64| H - B - bytes / top_bytes * (H - B - T);
    let x = |step: f64| L + step * pitch;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg class=\"chart memory\" data-chart=\"memory\" data-mode=\"{m}\" \
         width=\"{width:.0}\" height=\"{H}\" viewBox=\"0 0 {width:.0} {H}\" role=\"img\" \
         aria-label=\"arena of {m} over the schedule\">",
        m = escape(mode)
    );
    let step = tick_step(top_bytes / 1024.0) * 1024.0;
    let mut t = 0.0;
    while t <= top_bytes {
        let _ = write!(
            s,
            "<line class=\"grid\" x1=\"{L}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\"/>\
             <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            width - R,
            L - 6.0,
            y(t) + 4.0,
            fmt_tick(t / 1024.0, step / 1024.0),
            yy = y(t)
        );
        t += step;
    }
    let _ = writeln!(
        s,
        "<text class=\"axis\" x=\"12\" y=\"{c:.1}\" transform=\"rotate(-90 12 {c:.1})\" \
         text-anchor=\"middle\">arena offset (KB)</text>\
         <text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">step of the \
         schedule (node of the program, execution order; {} steps)</text>",
        (L + width - R) / 2.0,
        H - 6.0,
        a.steps,
        c = (T + H - B) / 2.0
    );
    let every = steps.div_ceil(20).max(1);
    for i in (0..steps).step_by(every) {
        let _ = write!(
            s,
            "<text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{i}</text>",
            x(i as f64 + 0.5),
            H - B + 13.0
        );
    }
    s.push('\n');
    for (k, b) in a.blocks.iter().enumerate() {
        let class = if b.scratch { "block scratch" } else { "block" };
        let hue = (k * 47) % 360;
        let fill = if b.scratch {
            "#bbbbbb".to_string()
        } else {
            format!("hsl({hue},55%,62%)")
        };
        let y0 = y((b.offset + b.size) as f64);
        let _ = writeln!(
            s,
            "<rect class=\"{class}\" x=\"{:.1}\" y=\"{y0:.1}\" width=\"{:.1}\" \
             height=\"{:.1}\" fill=\"{fill}\"><title>{}{} ({}): {} B at offset {}, steps \
             {}–{}</title></rect>",
            x(b.start as f64),
            ((b.end - b.start + 1) as f64 * pitch - 0.4).max(0.6),
            (y(b.offset as f64) - y0).max(0.5),
            if b.scratch { "scratch of " } else { "" },
            escape(&b.name),
            escape(&b.op),
            b.size,
            b.offset,
            b.start,
            b.end
        );
    }
    let points: Vec<String> = a
        .occupancy
        .iter()
        .enumerate()
        .flat_map(|(i, &o)| {
            [
                format!("{:.1},{:.1}", x(i as f64), y(o as f64)),
                format!("{:.1},{:.1}", x(i as f64 + 1.0), y(o as f64)),
            ]
        })
        .collect();
    let _ = writeln!(
        s,
        "<polyline class=\"occupancy\" points=\"{}\"><title>bytes live per step \
         (activations and scratch)</title></polyline>",
        points.join(" ")
    );
    for (bytes, class, label) in [
        (a.arena_bytes, "arena", "arena"),
        (a.lower_bound, "bound", "lower bound"),
    ] {
        let _ = writeln!(
            s,
            "<line class=\"{class}\" x1=\"{L}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\">\
             <title>{label}: {bytes} B</title></line>",
            width - R,
            yy = y(bytes as f64)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::tick_step;

    #[test]
    fn tick_steps_are_one_two_five() {
        assert_eq!(tick_step(60.0), 10.0);
        assert_eq!(tick_step(25.0), 5.0);
        assert_eq!(tick_step(9.0), 2.0);
        assert!((tick_step(3.0) - 0.5).abs() < 1e-12);
    }
}
