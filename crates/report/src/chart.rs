//! The per-layer SQNR chart as inline SVG (why not a plotting crate: the crate docs).
//!
//! x: the linear layers in execution order (their row number in the table); y: SQNR in
//! dB on a linear axis with round ticks. One colour per mode, a thin line joining a
//! mode's points so a mode reads as a profile, and one `<circle class="mark">` per
//! measured (layer, mode) with `data-layer`, `data-mode` and a `<title>` tooltip. No
//! `xmlns`: the HTML parser puts inline `<svg>` in the SVG namespace, and the page holds
//! no URL at all.

use std::fmt::Write as _;

use crate::Report;
use crate::html::escape;

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
        "<svg class=\"chart\" width=\"{width:.0}\" \
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
