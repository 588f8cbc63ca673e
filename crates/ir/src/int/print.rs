//! The integer IR's text dump (`lutq dump --stage quant`), read by snapshot tests.
//!
//! ```text
//! int_graph "tiny" {
//!   %0 = quantize_input 0 : i8[1,3,8,8] exp=6  ; x
//!   %1 = conv %0 strides=[1,1] pads=[1,1,1,1] group=1 w=lut4[4,3,3,3] lut=[-90,…] codes=#1a2b3c4d wexp=5 bias=#…[-3,9] shift=4 clamp=[0,255] : u8[1,4,8,8] exp=7  ; conv
//!   output "y" = %1
//! }
//! ```
//!
//! Large data (codes, int8 weights, biases, per-channel values) is shown as a content
//! hash with its range; LUTs of a per-layer table are printed in full (16 numbers).

use std::fmt::Write as _;

use super::{IntGraph, IntOp, QType, QWeights, Rescale, ResizeTap, Rounding};

fn fnv(bytes: impl IntoIterator<Item = u8>) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn ints(values: &[i32]) -> String {
    let (Some(lo), Some(hi)) = (values.iter().min(), values.iter().max()) else {
        return "[]".into();
    };
    if lo == hi {
        return lo.to_string();
    }
    let h = fnv(values.iter().flat_map(|v| v.to_le_bytes()));
    format!("#{h:08x}[{lo},{hi}]")
}

fn qtype(t: &QType) -> String {
    let dims: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
    format!("{}[{}] exp={}", t.elem.name(), dims.join(","), t.exp)
}

fn rescales(r: &[Rescale]) -> String {
    if let Some(shifts) = r
        .iter()
        .map(|r| match r {
            Rescale::Shift(s) => Some(*s),
            Rescale::Multiplier { .. } => None,
        })
        .collect::<Option<Vec<i32>>>()
    {
        return format!("shift={}", ints(&shifts));
    }
    let flat: Vec<i32> = r
        .iter()
        .flat_map(|r| match r {
            Rescale::Shift(s) => [0, *s],
            Rescale::Multiplier { multiplier, shift } => [*multiplier, *shift],
        })
        .collect();
    format!(
        "fixed_point=#{:08x}",
        fnv(flat.iter().flat_map(|v| v.to_le_bytes()))
    )
}

impl IntGraph {
    /// The text dump; see the module docs.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        // Half-up programs (the default) print as they always did.
        match self.rounding {
            Rounding::HalfUp => writeln!(out, "int_graph {:?} {{", self.name).unwrap(),
            r => writeln!(out, "int_graph {:?} rounding={} {{", self.name, r.name()).unwrap(),
        }
        for (i, node) in self.nodes.iter().enumerate() {
            write!(out, "  %{i} = {}", node.op.name()).unwrap();
            for (j, v) in node.inputs.iter().enumerate() {
                let sep = if j == 0 { " " } else { ", " };
                write!(out, "{sep}%{}", v.0).unwrap();
            }
            match &node.op {
                IntOp::QuantizeInput { input } => write!(out, " {input}").unwrap(),
                IntOp::Linear(l) => {
                    if let Some(g) = &l.conv {
                        write!(
                            out,
                            " strides={:?} pads={:?} dilations={:?} group={}",
                            g.strides, g.pads, g.dilations, g.group
                        )
                        .unwrap();
                    }
                    let s = l.weights.shape();
                    match &l.weights {
                        QWeights::Lut { luts, codes, .. } => {
                            write!(out, " w=lut4{s:?}").unwrap();
                            if luts.len() == 1 {
                                write!(out, " lut={:?}", luts[0]).unwrap();
                            } else {
                                let h = fnv(luts.iter().flatten().map(|&v| v as u8));
                                write!(out, " luts={}x#{h:08x}", luts.len()).unwrap();
                                // Table groups: rows share a few tables, each
                                // stored once (the count the backends and the report
                                // read, `QWeights::table_layout`).
                                let distinct =
                                    l.weights.table_layout().map_or(0, |t| t.tables.len());
                                if distinct < luts.len() {
                                    write!(out, " distinct={distinct}").unwrap();
                                }
                            }
                            write!(out, " codes=#{:08x}", fnv(codes.iter().copied())).unwrap();
                        }
                        QWeights::Int8 { values, .. } => {
                            let lo = values.iter().min().copied().unwrap_or(0);
                            let hi = values.iter().max().copied().unwrap_or(0);
                            let h = fnv(values.iter().map(|&v| v as u8));
                            write!(out, " w=int8{s:?} #{h:08x}[{lo},{hi}]").unwrap();
                        }
                    }
                    write!(
                        out,
                        " wexp={} bias={} {} clamp=[{},{}]",
                        ints(&l.weight_exps),
                        ints(&l.bias),
                        rescales(&l.rescale),
                        l.lo,
                        l.hi
                    )
                    .unwrap();
                }
                IntOp::Add(a) => write!(
                    out,
                    " align=[{},{}] shift={} clamp=[{},{}]",
                    a.align_a, a.align_b, a.shift, a.lo, a.hi
                )
                .unwrap(),
                IntOp::Concat { axis, shifts } => {
                    write!(out, " axis={axis} shifts={shifts:?}").unwrap()
                }
                IntOp::MaxPool(p) | IntOp::SumPool { pool: p, .. } => {
                    write!(
                        out,
                        " kernel={:?} strides={:?} pads={:?}",
                        p.kernel, p.strides, p.pads
                    )
                    .unwrap();
                    if p.dilations != [1, 1] {
                        write!(out, " dilations={:?}", p.dilations).unwrap();
                    }
                    if p.ceil_mode {
                        out.push_str(" ceil_mode");
                    }
                    if let IntOp::SumPool { shift, lo, hi, .. } = &node.op {
                        write!(out, " shift={shift} clamp=[{lo},{hi}]").unwrap();
                    }
                }
                IntOp::Requant { rescale, lo, hi } => write!(
                    out,
                    " {} clamp=[{lo},{hi}]",
                    rescales(std::slice::from_ref(rescale))
                )
                .unwrap(),
                IntOp::Reshape => {}
                IntOp::Table(t) => {
                    let h = fnv(t.entries.iter().map(|&v| v as u8));
                    let (lo, hi) = (
                        t.entries.iter().min().copied().unwrap_or(0),
                        t.entries.iter().max().copied().unwrap_or(0),
                    );
                    write!(out, " tables={}x#{h:08x}[{lo},{hi}]", t.tables()).unwrap();
                }
                IntOp::Mul(m) => {
                    write!(out, " shift={} clamp=[{},{}]", m.shift, m.lo, m.hi).unwrap()
                }
                IntOp::Softmax(sm) => {
                    write!(out, " axis={} exp_table={}", sm.axis, ints(&sm.exp_table)).unwrap()
                }
                IntOp::Transpose { perm } => write!(out, " perm={perm:?}").unwrap(),
                IntOp::Slice { axis, start, step } => {
                    write!(out, " axis={axis} start={start} step={step}").unwrap()
                }
                IntOp::Resize(r) => {
                    // Long tap lists print as a count and a hash, like other large data.
                    let taps = |t: &[ResizeTap]| {
                        if t.len() > 16 {
                            let bytes = t.iter().flat_map(|t| {
                                [t.lo.to_le_bytes(), t.hi.to_le_bytes(), t.w_hi.to_le_bytes()]
                                    .into_iter()
                                    .flatten()
                            });
                            return format!("{}x#{:08x}", t.len(), fnv(bytes));
                        }
                        let v: Vec<String> = t
                            .iter()
                            .map(|t| match t.w_hi {
                                0 => t.lo.to_string(),
                                w => format!("{}:{}+{}", t.lo, t.hi, w),
                            })
                            .collect();
                        format!("[{}]", v.join(","))
                    };
                    write!(
                        out,
                        " frac={} rows={} cols={}",
                        r.frac,
                        taps(&r.rows),
                        taps(&r.cols)
                    )
                    .unwrap()
                }
                IntOp::Extremum { shifts, .. } => write!(out, " shifts={shifts:?}").unwrap(),
            }
            write!(out, " : {}", qtype(&node.ty)).unwrap();
            if !node.name.is_empty() {
                write!(out, "  ; {}", node.name).unwrap();
            }
            out.push('\n');
        }
        for o in &self.outputs {
            writeln!(
                out,
                "  output {:?} = dequantize %{} (x 2^{})",
                o.name,
                o.value.0,
                -self.ty(o.value).exp
            )
            .unwrap();
        }
        out.push_str("}\n");
        out
    }
}
