//! `NAME_weights.c`: every linear layer's constants as `const` arrays (flash on a
//! microcontroller), and their `extern` declarations for `NAME.c`.
//!
//! Per layer `%i` (prefix `P`):
//! * `P_codes_i` (`uint8_t`, packed 4-bit codes exactly as [`QWeights::Lut`] stores them)
//!   and `P_lut_i` (`int8_t`, 16 entries per table; each distinct table once), with
//!   `P_lutrow_i` (`uint8_t`, each output channel's table) where channels share a few
//!   tables ([`TableLayout`]), or `P_w_i` (`int8_t`);
//! * `P_bias_i` (`int32_t`);
//! * `P_shift_i` (`int8_t`) and, for fixed-point multipliers, `P_mult_i` (`int32_t`) —
//!   only when the channels differ; a layer-wide rescale is a literal in the kernel.

use std::fmt::Write as _;

use lutq_ir::int::{IntGraph, IntNode, IntOp, QLinear, QWeights, Rescale, TableLayout};

use crate::error::CError;

pub(crate) struct Weights {
    pub definitions: String,
    pub declarations: String,
    /// Bytes of all arrays.
    pub bytes: usize,
    /// The same constants with 1 byte per weight instead of codes and tables.
    pub int8_bytes: usize,
}

/// How a layer's rescale reaches the kernel.
pub(crate) enum RescaleForm {
    /// One shift for every channel.
    Shift(i32),
    /// `P_shift_i[o]`.
    ShiftTable,
    /// One multiplier for every channel.
    Multiplier { multiplier: i32, shift: i32 },
    /// `P_mult_i[o]`, `P_shift_i[o]`.
    MultiplierTable,
}

pub(crate) fn rescale_form(layer_rescale: &[Rescale]) -> RescaleForm {
    let first = layer_rescale[0];
    let uniform = layer_rescale.iter().all(|&r| r == first);
    let all_shifts = layer_rescale.iter().all(|r| matches!(r, Rescale::Shift(_)));
    match (uniform, first) {
        (true, Rescale::Shift(s)) => RescaleForm::Shift(s),
        (true, Rescale::Multiplier { multiplier, shift }) => {
            RescaleForm::Multiplier { multiplier, shift }
        }
        (false, _) if all_shifts => RescaleForm::ShiftTable,
        (false, _) => RescaleForm::MultiplierTable,
    }
}

struct Writer<'a> {
    w: &'a mut Weights,
    /// Count the bytes only ([`constant_bytes`]), write no text.
    count_only: bool,
}

impl Writer<'_> {
    fn array<T: std::fmt::Display>(&mut self, ty: &str, name: &str, values: &[T], size: usize) {
        if self.count_only {
            self.w.bytes += values.len() * size;
            return;
        }
        writeln!(
            self.w.declarations,
            "extern const {ty} {name}[{}];",
            values.len()
        )
        .unwrap();
        writeln!(
            self.w.definitions,
            "const {ty} {name}[{}] = {{",
            values.len()
        )
        .unwrap();
        for chunk in values.chunks(16) {
            let items: Vec<String> = chunk.iter().map(|v| v.to_string()).collect();
            writeln!(self.w.definitions, "    {},", items.join(", ")).unwrap();
        }
        self.w.definitions.push_str("};\n\n");
        self.w.bytes += values.len() * size;
    }
}

pub(crate) fn emit_weights(graph: &IntGraph, p: &str) -> Result<Weights, CError> {
    let mut w = Weights {
        definitions: String::new(),
        declarations: String::new(),
        bytes: 0,
        int8_bytes: 0,
    };
    for (i, node) in graph.nodes.iter().enumerate() {
        node_arrays(&mut w, p, i, node, false);
    }
    Ok(w)
}

/// The bytes of the `const` arrays the C backend emits for `node` (0 for ops without
/// constants): what `CSummary::weight_bytes` sums over the graph, counted by the same
/// code that writes the arrays. For budgets (`--flash-budget`) that must match the
/// generated C byte for byte.
pub fn constant_bytes(node: &IntNode) -> usize {
    let mut w = Weights {
        definitions: String::new(),
        declarations: String::new(),
        bytes: 0,
        int8_bytes: 0,
    };
    node_arrays(&mut w, "p", 0, node, true);
    w.bytes
}

/// Node `i`'s arrays into `w` (only their bytes with `count_only`).
fn node_arrays(w: &mut Weights, p: &str, i: usize, node: &IntNode, count_only: bool) {
    let comment = |w: &mut Weights| {
        if !count_only {
            writeln!(
                w.definitions,
                "/* %{i} '{}' */",
                super::kernels::comment(&node.name)
            )
            .unwrap();
        }
    };
    let layer = match &node.op {
        IntOp::Linear(layer) => layer,
        IntOp::Table(t) => {
            comment(w);
            let ty = super::c_elem(node.ty.elem);
            Writer {
                w: &mut *w,
                count_only,
            }
            .array(ty, &format!("{p}_table_{i}"), &t.entries, 1);
            w.int8_bytes += t.entries.len();
            return;
        }
        IntOp::Softmax(sm) => {
            comment(w);
            Writer {
                w: &mut *w,
                count_only,
            }
            .array("int32_t", &format!("{p}_exp_{i}"), &sm.exp_table, 4);
            w.int8_bytes += 4 * sm.exp_table.len();
            return;
        }
        _ => return,
    };
    comment(w);
    let before = w.bytes;
    let mut out = Writer {
        w: &mut *w,
        count_only,
    };
    match &layer.weights {
        QWeights::Lut { luts, codes, .. } => {
            out.array("uint8_t", &format!("{p}_codes_{i}"), codes, 1);
            let layout = TableLayout::of(luts);
            let flat: Vec<i8> = layout.tables.iter().flatten().copied().collect();
            out.array("int8_t", &format!("{p}_lut_{i}"), &flat, 1);
            if let Some(rows) = &layout.row_table {
                out.array("uint8_t", &format!("{p}_lutrow_{i}"), rows, 1);
            }
        }
        QWeights::Int8 { values, .. } => {
            out.array("int8_t", &format!("{p}_w_{i}"), values, 1);
        }
    }
    out.array("int32_t", &format!("{p}_bias_{i}"), &layer.bias, 4);
    emit_rescale(&mut out, p, i, layer);
    let weights_part = layer.weights.size_bytes();
    let rest = w.bytes - before - weights_part;
    w.int8_bytes += layer.weights.shape()[0] * layer.weights.row_len() + rest;
}

fn emit_rescale(out: &mut Writer<'_>, p: &str, i: usize, layer: &QLinear) {
    let shift_of = |r: &Rescale| match *r {
        Rescale::Shift(s) => s,
        Rescale::Multiplier { shift, .. } => 31 + shift,
    };
    match rescale_form(&layer.rescale) {
        RescaleForm::Shift(_) | RescaleForm::Multiplier { .. } => {}
        RescaleForm::ShiftTable => {
            let shifts: Vec<i32> = layer.rescale.iter().map(shift_of).collect();
            out.array("int8_t", &format!("{p}_shift_{i}"), &shifts, 1);
        }
        RescaleForm::MultiplierTable => {
            let mults: Vec<i32> = layer
                .rescale
                .iter()
                .map(|r| match *r {
                    Rescale::Multiplier { multiplier, .. } => multiplier,
                    // 2^30 · 2^-(31 + s - 1)... a plain shift s inside a multiplier table
                    // is multiplier 2^30 with total shift s + 30.
                    Rescale::Shift(_) => 1 << 30,
                })
                .collect();
            let shifts: Vec<i32> = layer
                .rescale
                .iter()
                .map(|r| match *r {
                    Rescale::Shift(s) => s + 30,
                    Rescale::Multiplier { shift, .. } => 31 + shift,
                })
                .collect();
            out.array("int32_t", &format!("{p}_mult_{i}"), &mults, 4);
            out.array("int8_t", &format!("{p}_shift_{i}"), &shifts, 1);
        }
    }
}

/// The offset of output channel `channel`'s table (a C expression) in `P_lut_i`, or in
/// an array of `entries` per table laid out like it (the pair tables: 256), as C appended
/// to the array's name: nothing for one table per layer, `+ entries * channel` for one
/// per channel, through `P_lutrow_i` for table groups ([`TableLayout`]).
pub(crate) fn table_offset(
    p: &str,
    i: usize,
    luts: &[[i8; 16]],
    channel: &str,
    entries: usize,
) -> String {
    let layout = TableLayout::of(luts);
    match (&layout.row_table, layout.tables.len()) {
        (Some(_), _) => format!(" + {entries} * {p}_lutrow_{i}[{channel}]"),
        // One table stored, whether the layer has one or all its rows' are equal.
        (None, 1) => String::new(),
        (None, _) => format!(" + {entries} * {channel}"),
    }
}
