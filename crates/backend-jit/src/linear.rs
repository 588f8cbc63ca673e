//! Linear layers (convolution and dense).
//!
//! Every layer's weights are decoded at compile time (LUT codes → int8, once) and its
//! per-channel epilogue is folded into a table of five i64 (`bias`, and the rescale as
//! `((acc · mult) << lsh + add) >> rsh`, exactly `Rescale::apply`), so that one loop body
//! serves every output channel. Which kernel a layer gets is decided by its geometry only
//! (see `crate::simd` for the vector kernels); this file holds the scalar kernel that
//! takes every other layer, written as the op's definition: one accumulator per output,
//! every tap bounds-checked.

use cranelift_codegen::ir::types::{I32, I64};
use cranelift_codegen::ir::{InstBuilder, Value};
use lutq_ir::int::{QLinear, Rescale, Rounding};

use crate::emit::Emitter;
use crate::ops::Operand;

/// Bytes per output channel in the epilogue table.
pub(crate) const TABLE_STRIDE: usize = 48;

/// `(mult, lsh, add, rsh, odd)` with
/// `rescale(acc) = (v + add + ((v >> rsh) & odd)) >> rsh`, `v = (acc · mult) << lsh`
/// (wrapping i64, arithmetic shift), for every `acc` — the same i64 operations as
/// [`Rescale::apply`] with the shift's case decided at compile time. `odd` is 1 only for
/// a right shift with ties to even (`add` is then `2^(t-1) − 1`), else 0.
pub(crate) fn rescale_parts(r: Rescale, rounding: Rounding) -> (i64, i64, i64, i64, i64) {
    let (mult, t) = match r {
        Rescale::Shift(s) => (1i64, s),
        Rescale::Multiplier { multiplier, shift } => (multiplier as i64, 31 + shift),
    };
    if t >= 63 {
        (0, 0, 0, 0, 0)
    } else if t > 0 {
        match rounding {
            Rounding::HalfUp => (mult, 0, 1i64 << (t - 1), t as i64, 0),
            Rounding::HalfEven => (mult, 0, (1i64 << (t - 1)) - 1, t as i64, 1),
        }
    } else {
        (mult, (-t).min(62) as i64, 0, 0, 0)
    }
}

/// The epilogue table: per output channel `[bias, mult, lsh, add, rsh, odd]` as i64.
pub(crate) fn epilogue_table(layer: &QLinear, rounding: Rounding) -> Vec<u8> {
    let mut t = Vec::with_capacity(layer.bias.len() * TABLE_STRIDE);
    for (&b, &r) in layer.bias.iter().zip(&layer.rescale) {
        let (m, l, a, s, odd) = rescale_parts(r, rounding);
        for v in [b as i64, m, l, a, s, odd] {
            t.extend_from_slice(&v.to_le_bytes());
        }
    }
    t
}

/// The loaded table entries of one output channel.
pub(crate) struct Epilogue {
    pub bias: Value,
    mult: Value,
    lsh: Value,
    add: Value,
    rsh: Value,
    /// Only in ties-to-even programs (half-up ones skip the parity term).
    odd: Option<Value>,
}

impl Epilogue {
    pub fn load(e: &mut Emitter, table: Value, o: Value) -> Epilogue {
        let p = e.index(table, o, TABLE_STRIDE as i64);
        Epilogue {
            bias: e.load_const(I64, p, 0),
            mult: e.load_const(I64, p, 8),
            lsh: e.load_const(I64, p, 16),
            add: e.load_const(I64, p, 24),
            rsh: e.load_const(I64, p, 32),
            odd: (e.rounding == Rounding::HalfEven).then(|| e.load_const(I64, p, 40)),
        }
    }

    /// `clamp(rescale(acc), lo, hi)`; `acc` is an i64 whose low 32 bits are the
    /// accumulator (bias included), which is wrapped to i32 first as in the interpreter.
    pub fn finish(&self, e: &mut Emitter, acc: Value, lo: i32, hi: i32) -> Value {
        let a = e.b.ins().ireduce(I32, acc);
        let a = e.b.ins().sextend(I64, a);
        let v = e.b.ins().imul(a, self.mult);
        let v0 = e.b.ins().ishl(v, self.lsh);
        let mut v = e.b.ins().iadd(v0, self.add);
        if let Some(odd) = self.odd {
            let q = e.b.ins().sshr(v0, self.rsh);
            let parity = e.b.ins().band(q, odd);
            v = e.b.ins().iadd(v, parity);
        }
        let v = e.b.ins().sshr(v, self.rsh);
        e.clamp(v, lo, hi)
    }
}

/// Host buffers a linear layer's code reads.
pub(crate) struct LinearData {
    /// Decoded int8 weights `[O][K]` (null where a vector kernel runs instead).
    pub weights: *const u8,
    /// [`epilogue_table`].
    pub table: *const u8,
}

/// The scalar kernel: any convolution geometry, and dense layers.
pub(crate) fn scalar(
    e: &mut Emitter,
    layer: &QLinear,
    data: &LinearData,
    x: &Operand,
    y: &Operand,
) {
    let [o_n, i_g, kh, kw] = layer.weights.shape();
    let k_n = (i_g * kh * kw) as i64;
    let (xe, ye) = (x.ty.elem, y.ty.elem);
    let (xz, yz) = (xe.size_bytes() as i64, ye.size_bytes() as i64);
    let (lo, hi) = (layer.lo, layer.hi);
    let xb = e.arena(x.offset);
    let yb = e.arena(y.offset);
    let wb = e.host(data.weights);
    let tb = e.host(data.table);
    match &layer.conv {
        None => {
            e.for_each(0, o_n as i64, |e, o| {
                let ep = Epilogue::load(e, tb, o);
                let wrow = e.index(wb, o, k_n);
                let acc = e.for_range(0, k_n, 1, &[ep.bias], |e, k, acc| {
                    let xv = e.index(xb, k, xz);
                    let xv = e.load_elem(xe, xv);
                    let wv = e.add(wrow, k);
                    let wv = e.b.ins().sload8(I64, crate::emit::flags(), wv, 0);
                    let p = e.b.ins().imul(xv, wv);
                    vec![e.add(acc[0], p)]
                });
                let v = ep.finish(e, acc[0], lo, hi);
                let d = e.index(yb, o, yz);
                e.store_elem(ye, v, d);
            });
        }
        Some(g) => {
            let (h, w) = (x.ty.shape[2] as i64, x.ty.shape[3] as i64);
            let (oh, ow) = (y.ty.shape[2] as i64, y.ty.shape[3] as i64);
            let o_per_g = (o_n / g.group) as i64;
            let [sy, sx] = g.strides.map(|v| v as i64);
            let [dy, dx] = g.dilations.map(|v| v as i64);
            let (pt, pl) = (g.pads[0] as i64, g.pads[1] as i64);
            let (kh, kw, i_g) = (kh as i64, kw as i64, i_g as i64);
            e.for_each(0, o_n as i64, |e, o| {
                let ep = Epilogue::load(e, tb, o);
                let wrow = e.index(wb, o, k_n);
                let div = e.c64(o_per_g);
                let grp = e.b.ins().udiv(o, div);
                let xg = e.index(xb, grp, i_g * h * w * xz);
                let yo = e.index(yb, o, oh * ow * yz);
                e.for_each(0, oh, |e, oy| {
                    let y0 = e.muli(oy, sy);
                    let y0 = e.addi(y0, -pt);
                    e.for_each(0, ow, |e, ox| {
                        let x0 = e.muli(ox, sx);
                        let x0 = e.addi(x0, -pl);
                        let acc = e.for_range(0, i_g, 1, &[ep.bias], |e, ic, acc| {
                            let xc = e.index(xg, ic, h * w * xz);
                            let wc = e.index(wrow, ic, kh * kw);
                            e.for_range(0, kh, 1, acc, |e, ky, acc| {
                                let iy = e.index(y0, ky, dy);
                                let oky = e.ult(iy, h);
                                let wy = e.index(wc, ky, kw);
                                e.for_range(0, kw, 1, acc, |e, kx, acc| {
                                    let ix = e.index(x0, kx, dx);
                                    let okx = e.ult(ix, w);
                                    let ok = e.b.ins().band(oky, okx);
                                    let lin = e.index(ix, iy, w);
                                    let zero = e.c64(0);
                                    let lin = e.b.ins().select(ok, lin, zero);
                                    let a = e.index(xc, lin, xz);
                                    let xv = e.load_elem(xe, a);
                                    let xv = e.b.ins().select(ok, xv, zero);
                                    let wa = e.add(wy, kx);
                                    let wv = e.b.ins().sload8(I64, crate::emit::flags(), wa, 0);
                                    let p = e.b.ins().imul(xv, wv);
                                    vec![e.add(acc[0], p)]
                                })
                            })
                        });
                        let v = ep.finish(e, acc[0], lo, hi);
                        let d = e.index(yo, oy, ow * yz);
                        let d = e.index(d, ox, yz);
                        e.store_elem(ye, v, d);
                    });
                });
            });
        }
    }
}
