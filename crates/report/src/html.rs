//! The page: summary, chart, per-layer table; CSS inline, no script.

use std::fmt::Write as _;

use crate::chart::{PALETTE, activation_chart, memory_chart, sqnr_chart, weight_chart};
use crate::data::{M4Model, WeightFormat};
use crate::{Report, RescaleRange};
use lutq_backend_c::LayerKind;

/// `text` safe inside an element or a double-quoted attribute.
pub(crate) fn escape(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => s.push_str("&amp;"),
            '<' => s.push_str("&lt;"),
            '>' => s.push_str("&gt;"),
            '"' => s.push_str("&quot;"),
            '\'' => s.push_str("&#39;"),
            c => s.push(c),
        }
    }
    s
}

const STYLE: &str = "
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 100em; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { padding: 0.25em 0.6em; border-bottom: 1px solid #e4e4e4; text-align: right;
         white-space: nowrap; }
th { background: #f4f4f4; position: sticky; top: 0; }
td.name, th.name, td.text { text-align: left; }
td.name { font-family: ui-monospace, monospace; }
tr.sep td { border-top: 2px solid #999; }
.note { color: #555; font-size: 0.9em; }
.warn { color: #8a4b00; }
details.warn summary { cursor: pointer; }
.facts { display: flex; flex-wrap: wrap; gap: 0.5em 2.5em; margin: 1em 0; }
.facts div b { display: block; font-size: 1.3em; }
.legend span { margin-right: 1.5em; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; border-radius: 50%;
          margin-right: 0.3em; vertical-align: middle; }
.chartbox { overflow-x: auto; }
svg.chart .grid { stroke: #e4e4e4; }
svg.chart text { font-size: 11px; fill: #444; }
svg.chart circle.mark:hover { r: 6; }
svg.chart .bar { fill: #5a7fa8; }
svg.chart .bar:hover, svg.chart .block:hover { fill: #d55e00; }
svg.chart .level { stroke: #d55e00; stroke-width: 1.2; }
svg.chart .range { fill: #009e73; fill-opacity: 0.12; }
svg.chart .clamp { stroke: #009e73; stroke-width: 1.5; }
svg.chart .axisline { stroke: #999; }
svg.chart .occupancy { fill: none; stroke: #222; stroke-width: 1.2; }
svg.chart .arena { stroke: #d55e00; stroke-dasharray: 6 3; }
svg.chart .bound { stroke: #0072b2; stroke-dasharray: 2 3; }
svg.chart .block { stroke: #fff; stroke-width: 0.3; }
svg.small { background: #fafafa; border: 1px solid #e4e4e4; }
.layer { margin: 1.2em 0; }
.layer h3 { font-size: 0.95em; margin: 0 0 0.3em 0; font-weight: normal; }
.layer h3 code { font-weight: bold; }
.multiples { display: flex; flex-wrap: wrap; gap: 0.6em 1.2em; }
.multiples figure { margin: 0; width: 252px; }
.tablebox { overflow-x: auto; }
.multiples figcaption { font-size: 0.75em; color: #555; }
";

fn kb(bytes: usize) -> String {
    format!("{:.1} KB", bytes as f64 / 1024.0)
}

fn db(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.2}"))
}

fn pct(v: f64) -> String {
    format!("{:.2} %", 100.0 * v)
}

fn shape(s: &[usize]) -> String {
    s.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("×")
}

fn range(lo: i32, hi: i32) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}…{hi}")
    }
}

/// Bytes in binary units: `1.91 MiB`, `40.3 KiB`, `512 B`.
fn size(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64)
    } else if b >= 1 << 10 {
        format!("{:.1} KiB", b as f64 / 1024.0)
    } else {
        format!("{b} B")
    }
}

fn macs(m: u64) -> String {
    if m >= 1_000_000 {
        format!("{:.1} M", m as f64 / 1e6)
    } else if m >= 1_000 {
        format!("{:.1} k", m as f64 / 1e3)
    } else {
        m.to_string()
    }
}

pub(crate) fn render(r: &Report) -> String {
    let mut s = String::new();
    let title = format!("lutq report: {}", r.model);
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    summary(&mut s, r);
    s.push_str("<section id=\"chart\">\n<h2>SQNR per layer</h2>\n");
    let _ = writeln!(
        s,
        "<p class=\"note\">Each linear layer's output against the float model's, on the \
         first {} {} samples (as <code>lutq eval --per-layer</code>). Higher is better; \
         every 6 dB halves the error's amplitude. Hover a mark for its layer.</p>",
        r.per_layer_samples,
        escape(&r.data)
    );
    s.push_str("<p class=\"legend\">");
    for (i, m) in r.modes.iter().enumerate() {
        let _ = write!(
            s,
            "<span><i class=\"swatch\" style=\"background:{}\"></i>{}</span>",
            PALETTE[i % PALETTE.len()],
            escape(&m.mode)
        );
    }
    s.push_str("</p>\n<div class=\"chartbox\">\n");
    s.push_str(&sqnr_chart(r));
    s.push_str("</div>\n</section>\n");
    // Overview charts first, then the per-layer detail.
    memory(&mut s, r);
    layer_table(&mut s, r);
    distributions(&mut s, r);
    s.push_str(
        "<p class=\"note\">Generated by <code>lutq report</code>; <code>--json</code> writes \
         the same numbers.</p>\n</body>\n</html>\n",
    );
    s
}

fn summary(s: &mut String, r: &Report) {
    s.push_str("<section id=\"summary\">\n<h2>Summary</h2>\n<div class=\"facts\">\n");
    let mut fact = |label: &str, value: String| {
        let _ = writeln!(s, "<div>{}<b>{}</b></div>", escape(label), escape(&value));
    };
    fact("model", r.model.clone());
    fact("MACs per inference", macs(r.macs));
    fact("linear layers", r.layers.len().to_string());
    fact("fp32 weights", kb(r.float_weight_bytes));
    fact("measured on", format!("{} {} samples", r.samples, r.data));
    fact("calibration samples", r.calibration_samples.to_string());
    fact("cross-layer equalization", r.cle.clone());
    s.push_str("</div>\n");
    if r.data == "calibration" {
        s.push_str(
            "<p class=\"note warn\">No <code>--data</code>: the metrics below are measured \
             on the calibration samples, which flatters every mode.</p>\n",
        );
    }
    let labels = r.modes.iter().any(|m| m.top1_accuracy.is_some());
    s.push_str("<table id=\"modes\">\n<tr><th class=\"name\">mode</th>");
    if labels {
        s.push_str("<th>top-1</th>");
    }
    s.push_str(
        "<th>agreement with fp32</th><th>output SQNR (dB)</th>\
         <th>M4 flash (vs int8 build)</th><th>constants (vs int8 build)</th>\
         <th>arena (vs lower bound)</th><th>est. M4 instructions</th><th>CLE</th></tr>\n",
    );
    // "1.91 MB (0.53×)", the exact bytes of both in the tooltip.
    let against = |bytes: u64, base: u64, what: &str| {
        format!(
            "<td title=\"{bytes} B; {what}: {base} B\">{} ({:.2}×)</td>",
            size(bytes),
            bytes as f64 / base.max(1) as f64
        )
    };
    for m in &r.modes {
        let _ = write!(s, "<tr><td class=\"name\">{}</td>", escape(&m.mode));
        if labels {
            let _ = write!(s, "<td>{}</td>", m.top1_accuracy.map_or("–".into(), pct));
        }
        let flash = match m.c.m4_flash {
            Some(f) => against(f.bytes, f.int8_build_bytes, "int8 build"),
            None => "<td>–</td>".to_string(),
        };
        let _ = writeln!(
            s,
            "<td>{}</td><td>{}</td>{flash}{}{}<td>{}</td><td>{}</td></tr>",
            pct(m.top1_agreement),
            db(m.sqnr_db),
            against(
                m.c.constant_bytes as u64,
                m.c.int8_constant_bytes as u64,
                "int8 build"
            ),
            against(
                m.c.arena_bytes as u64,
                m.c.arena_lower_bound as u64,
                "lower bound"
            ),
            macs(m.m4_instructions),
            if m.cle { "on" } else { "off" }
        );
    }
    s.push_str("</table>\n");
    s.push_str(
        "<p class=\"note\">M4 flash: the generated model (<code>NAME.c</code> and \
         <code>NAME_weights.c</code>) compiled for a Cortex-M4 with <code>arm-none-eabi-gcc \
         -O2</code>, code and constants as <code>arm-none-eabi-size</code> counts them (no \
         start-up code or C library; – where the cross compiler is not installed); vs int8 \
         build: the same program with its 4-bit weights decoded to int8 (same integers, \
         int8 kernels), built the same way. \
         constants: what the generated C keeps in flash besides code \
         (weight codes and tables or int8 weights, biases, rescales; <code>lutq compile</code>'s \
         summary); vs int8 build: the same constants with one byte per weight. arena: the \
         caller's scratch buffer from the static memory plan; its lower bound is the most \
         bytes live at once.</p>\n",
    );
    let model = M4Model::measured();
    let figures = [
        LayerKind::Conv3x3,
        LayerKind::Pointwise,
        LayerKind::Depthwise,
    ]
    .iter()
    .map(|&k| {
        format!(
            "{} {:.2} with 4-bit codes, {:.2} with int8",
            k.name(),
            model.per_mac(WeightFormat::Codes, k),
            model.per_mac(WeightFormat::Int8, k)
        )
    })
    .collect::<Vec<_>>()
    .join("; ");
    let _ = writeln!(
        s,
        "<p class=\"note\">est. M4 instructions: an <b>estimate</b>, not a measurement: \
         every linear layer's MACs times the Cortex-M4 instructions per MAC that the generated \
         C (DSP path, QEMU) took for layers of its kind (3×3 conv, 1×1 pointwise, depthwise, \
         dense, other conv) and weight format, pooled over the {} models of \
         <code>docs/results.md</code>'s per-layer-kind profile table ({}), plus {:.1} % for \
         the ops without MACs (adds, pools, copies; measured the same way). \
         <code>cargo xtask mcu</code> measures a model.</p>",
        model.models,
        figures,
        100.0 * model.overhead
    );
    if !r.warnings.is_empty() {
        // Folded: a model calibrated on few samples has one per layer.
        let _ = writeln!(
            s,
            "<details class=\"warn\"><summary>{} warning{} from the quantizer and the input \
             check</summary>\n<ul>",
            r.warnings.len(),
            if r.warnings.len() == 1 { "" } else { "s" }
        );
        for w in &r.warnings {
            let _ = writeln!(s, "<li>{}</li>", escape(w));
        }
        s.push_str("</ul></details>\n");
    }
    s.push_str("</section>\n");
}

fn layer_table(s: &mut String, r: &Report) {
    s.push_str("<section id=\"layers\">\n<h2>Layers</h2>\n");
    s.push_str(
        "<p class=\"note\">Every Conv and dense layer of the lowered program in execution \
         order, one row per mode. f<sub>x</sub>, f<sub>w</sub>, f<sub>y</sub>: input, weight \
         (per channel: min…max) and output exponents (real = q · 2<sup>−f</sup>); \
         rescale: the accumulator's right shift (min…max over channels), or the fixed-point \
         multiplier's total shift; LUTs: 16-entry tables (per layer or per channel).</p>\n",
    );
    s.push_str(
        "<div class=\"tablebox\"><table id=\"layer-table\">\n<tr><th>#</th><th class=\"name\">layer</th>\
         <th class=\"name\">op</th><th>input</th><th>output</th><th>MACs</th>\
         <th class=\"name\">mode</th><th class=\"name\">weights</th><th>bytes</th>\
         <th>LUTs</th><th>f<sub>x</sub></th><th>f<sub>w</sub></th><th>f<sub>y</sub></th>\
         <th>rescale</th><th>SQNR (dB)</th><th>share of flash</th><th>est. M4 instr.</th>\
         <th>share of instr.</th></tr>\n",
    );
    for (i, l) in r.layers.iter().enumerate() {
        for (k, m) in l.modes.iter().enumerate() {
            let class = if k == 0 { " class=\"sep\"" } else { "" };
            let _ = write!(
                s,
                "<tr{class} data-layer=\"{}\" data-mode=\"{}\">",
                escape(&l.name),
                escape(&m.mode)
            );
            if k == 0 {
                let rows = l.modes.len();
                let _ = write!(
                    s,
                    "<td rowspan=\"{rows}\">{}</td><td class=\"name\" rowspan=\"{rows}\">{}</td>\
                     <td class=\"text\" rowspan=\"{rows}\">{}</td><td rowspan=\"{rows}\">{}</td>\
                     <td rowspan=\"{rows}\">{}</td><td rowspan=\"{rows}\">{}</td>",
                    i + 1,
                    escape(&l.name),
                    escape(if l.kind.is_empty() { &l.op } else { &l.kind }),
                    shape(&l.input_shape),
                    shape(&l.output_shape),
                    macs(l.macs)
                );
            }
            let luts = match m.luts {
                0 => "–".to_string(),
                n if n == l.output_shape.get(1).copied().unwrap_or(0) => format!("{n} / channel"),
                n => format!("{n} / layer"),
            };
            let rescale = match m.rescale {
                RescaleRange::Shift { min, max } => format!("≫ {}", range(min, max)),
                RescaleRange::Multiplier { min, max } => format!("× m ≫ {}", range(min, max)),
            };
            let _ = writeln!(
                s,
                "<td class=\"name\">{}</td><td class=\"text\">{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td></tr>",
                escape(&m.mode),
                escape(&m.weights),
                m.weight_bytes,
                luts,
                m.input_exp,
                range(m.weight_exp_min, m.weight_exp_max),
                m.output_exp,
                escape(&rescale),
                db(m.sqnr_db),
                pct(m.flash_share),
                macs(m.m4_instructions),
                pct(m.instruction_share)
            );
        }
    }
    s.push_str("</table></div>\n</section>\n");
}

/// Per layer and mode: the weights against the table levels, the float output against
/// the clamp range.
fn distributions(s: &mut String, r: &Report) {
    s.push_str("<section id=\"distributions\">\n<h2>Weights and activations per layer</h2>\n");
    let _ = writeln!(
        s,
        "<p class=\"note\">Per linear layer and mode. <b>weights</b>: the float weights \
         (as the quantizer fitted them, after CLE where on) times 2<sup>f<sub>w</sub></sup> \
         of their output channel, i.e. in the units of the int8 table entries; orange \
         lines: the table levels (with one table per channel, every distinct entry, darker \
         when more channels use it; int8 weights: every integer is a level, none drawn). \
         <b>activations</b>: the layer's float output on the first {} {} samples; green: \
         the range its integer output holds (the type's range at f<sub>y</sub>, tightened \
         by a fused ReLU); values outside are clipped. Bar heights are log(1 + count); hover \
         a bar or line for its numbers.</p>",
        r.per_layer_samples,
        escape(&r.data)
    );
    for (i, l) in r.layers.iter().enumerate() {
        let _ = writeln!(
            s,
            "<div class=\"layer\" data-layer=\"{}\"><h3>{} <code>{}</code> {} {} → {}</h3>\
             <div class=\"multiples\">",
            escape(&l.name),
            i + 1,
            escape(&l.name),
            escape(&l.op),
            shape(&l.input_shape),
            shape(&l.output_shape)
        );
        let channels = l.output_shape.get(1).copied().unwrap_or(1);
        for m in &l.modes {
            if let Some(h) = &m.weight_hist {
                let tables = match m.luts {
                    0 => "int8".to_string(),
                    1 => format!("{} levels, one table", h.levels.len()),
                    n => format!("{} distinct levels, {n} tables", h.levels.len()),
                };
                let _ = write!(
                    s,
                    "<figure>{}<figcaption>{} weights · {}</figcaption></figure>",
                    weight_chart(&l.name, &m.mode, h, channels),
                    escape(&m.mode),
                    tables
                );
            }
            if let Some(h) = &m.activation_hist {
                let _ = write!(
                    s,
                    "<figure>{}<figcaption>{} output · clamp [{}, {}] · {:.2} % clipped\
                     </figcaption></figure>",
                    activation_chart(&l.name, &m.mode, h),
                    escape(&m.mode),
                    fmt_real(h.clamp[0]),
                    fmt_real(h.clamp[1]),
                    100.0 * h.clipped
                );
            }
        }
        s.push_str("</div></div>\n");
    }
    s.push_str("</section>\n");
}

fn fmt_real(v: f64) -> String {
    if v == 0.0 || v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// Per mode: the arena over the schedule.
fn memory(s: &mut String, r: &Report) {
    s.push_str("<section id=\"memory\">\n<h2>Memory plan</h2>\n");
    s.push_str(
        "<p class=\"note\">The arena of the generated C over the schedule: one bar per \
         buffer from the step that writes it to the last step that reads it, at its offset \
         (coloured: activations; grey: a kernel's scratch, placed in a gap). Black line: \
         bytes live per step; dashed: the arena size (orange) and the lower bound, the most \
         activation bytes live at once (blue). Reshapes and in-place adds share their \
         operand's buffer; the quantized input stays in the caller's buffer. Hover a bar for \
         its node.</p>\n",
    );
    for m in &r.modes {
        let a = &m.arena;
        let _ = writeln!(
            s,
            "<h3>{}: arena {} B, lower bound {} B, {} buffers</h3>\n<div class=\"chartbox\">",
            escape(&m.mode),
            a.arena_bytes,
            a.lower_bound,
            a.blocks.len()
        );
        s.push_str(&memory_chart(&m.mode, a));
        s.push_str("</div>\n");
    }
    s.push_str("</section>\n");
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }
}
