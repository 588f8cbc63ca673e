//! Code for every op but the linear layers: element-wise ops (`Add`, `Requant`),
//! `Concat` and the pools. Scalar code in i64 (each op's definition, literally), with a
//! vector path for `Add`, the one of them that touches many elements in real models.

use cranelift_codegen::ir::types::{I32, I64};
use cranelift_codegen::ir::{InstBuilder, Value};
use lutq_ir::Pool;
use lutq_ir::int::{IntElem, QAdd, QMul, QType, Rescale, Rounding};

use crate::emit::Emitter;

/// Where a node's operands and result live in the arena.
pub(crate) struct Operand<'t> {
    pub offset: usize,
    pub ty: &'t QType,
}

/// `rescale(v)` on an i64 ([`Rescale::apply`]), the rescale known at compile time.
pub(crate) fn emit_rescale(e: &mut Emitter, v: Value, r: Rescale) -> Value {
    match r {
        Rescale::Shift(s) => e.rshift_round(v, s),
        Rescale::Multiplier { multiplier, shift } => {
            let v = e.muli(v, multiplier as i64);
            e.rshift_round(v, 31 + shift)
        }
    }
}

pub(crate) fn requant(e: &mut Emitter, x: &Operand, y: &Operand, r: Rescale, lo: i32, hi: i32) {
    let (xe, ye) = (x.ty.elem, y.ty.elem);
    let (xs, ys) = (xe.size_bytes() as i64, ye.size_bytes() as i64);
    let xb = e.arena(x.offset);
    let yb = e.arena(y.offset);
    e.for_each(0, y.ty.num_elements() as i64, |e, i| {
        let a = e.index(xb, i, xs);
        let v = e.load_elem(xe, a);
        let v = emit_rescale(e, v, r);
        let v = e.clamp(v, lo, hi);
        let d = e.index(yb, i, ys);
        e.store_elem(ye, v, d);
    });
}

pub(crate) fn add(
    e: &mut Emitter,
    a: &Operand,
    b: &Operand,
    y: &Operand,
    q: &QAdd,
    vectorize: bool,
) {
    let n = y.ty.num_elements() as i64;
    let (ae, be, ye) = (a.ty.elem, b.ty.elem, y.ty.elem);
    let ab = e.arena(a.offset);
    let bb = e.arena(b.offset);
    let yb = e.arena(y.offset);
    let done = if vectorize
        && e.rounding == Rounding::HalfUp
        && crate::simd::add_fits_i32(q)
        && ye != IntElem::I32
    {
        crate::simd::add_vector(e, (ab, ae), (bb, be), (yb, ye), q, n)
    } else {
        0
    };
    e.for_each(done, n, |e, i| {
        let pa = e.index(ab, i, ae.size_bytes() as i64);
        let va = e.load_elem(ae, pa);
        let pb = e.index(bb, i, be.size_bytes() as i64);
        let vb = e.load_elem(be, pb);
        let va = e.b.ins().ishl_imm_u(va, q.align_a.clamp(0, 63) as i64);
        let vb = e.b.ins().ishl_imm_u(vb, q.align_b.clamp(0, 63) as i64);
        let s = e.add(va, vb);
        let s = e.rshift_round(s, q.shift);
        let s = e.clamp(s, q.lo, q.hi);
        let py = e.index(yb, i, ye.size_bytes() as i64);
        e.store_elem(ye, s, py);
    });
}

/// Concatenation along `axis`: `outer` blocks, each the inputs' chunks in order.
pub(crate) fn concat(
    e: &mut Emitter,
    inputs: &[Operand],
    shifts: &[i32],
    axis: usize,
    y: &Operand,
) {
    let (lo, hi) = y.ty.elem.range();
    let ye = y.ty.elem;
    let outer: usize = y.ty.shape[..axis].iter().product();
    let inner: usize = y.ty.shape[axis + 1..].iter().product();
    let row: usize = y.ty.shape[axis] * inner;
    let yb = e.arena(y.offset);
    let mut col = 0usize;
    for (x, &shift) in inputs.iter().zip(shifts) {
        let chunk = x.ty.shape[axis] * inner;
        let xe = x.ty.elem;
        let xb = e.arena(x.offset);
        let col0 = col;
        e.for_each(0, outer as i64, |e, o| {
            let src = e.index(xb, o, (chunk * xe.size_bytes()) as i64);
            let dst0 = e.index(yb, o, (row * ye.size_bytes()) as i64);
            let dst = e.addi(dst0, (col0 * ye.size_bytes()) as i64);
            e.for_each(0, chunk as i64, |e, i| {
                let p = e.index(src, i, xe.size_bytes() as i64);
                let v = e.load_elem(xe, p);
                let v = e.rshift_round(v, shift);
                let v = e.clamp(v, lo, hi);
                let q = e.index(dst, i, ye.size_bytes() as i64);
                e.store_elem(ye, v, q);
            });
        });
        col += chunk;
    }
}

/// What a pool does with its window.
pub(crate) enum PoolKind {
    /// Max over taps inside the input, the type's minimum for an empty window.
    Max,
    /// `clamp(rshift_round(Σ taps, shift), lo, hi)`.
    Sum { shift: i32, lo: i32, hi: i32 },
}

/// Max- or sum-pool, scalar: every window tap is bounds-checked (a tap outside the input
/// reads a harmless in-range element and is then discarded).
pub(crate) fn pool(e: &mut Emitter, p: &Pool, kind: &PoolKind, x: &Operand, y: &Operand) {
    let (xs, ys) = (&x.ty.shape, &y.ty.shape);
    let (h, w) = (xs[2] as i64, xs[3] as i64);
    let (oh, ow) = (ys[2] as i64, ys[3] as i64);
    let planes = (xs[0] * xs[1]) as i64;
    let (xe, ye) = (x.ty.elem, y.ty.elem);
    let (xz, yz) = (xe.size_bytes() as i64, ye.size_bytes() as i64);
    let [sy, sx] = p.strides.map(|v| v as i64);
    let [dy, dx] = p.dilations.map(|v| v as i64);
    let [kh, kw] = p.kernel.map(|v| v as i64);
    let (pt, pl) = (p.pads[0] as i64, p.pads[1] as i64);
    let xb = e.arena(x.offset);
    let yb = e.arena(y.offset);
    let (type_min, _) = xe.range();
    e.for_each(0, planes, |e, plane| {
        let xp = e.index(xb, plane, h * w * xz);
        let yp = e.index(yb, plane, oh * ow * yz);
        e.for_each(0, oh, |e, oy| {
            let y0 = e.muli(oy, sy);
            let y0 = e.addi(y0, -pt);
            e.for_each(0, ow, |e, ox| {
                let x0 = e.muli(ox, sx);
                let x0 = e.addi(x0, -pl);
                let init = match kind {
                    PoolKind::Max => e.c64(type_min as i64),
                    PoolKind::Sum { .. } => e.c64(0),
                };
                let r = e.for_range(0, kh, 1, &[init], |e, ky, acc| {
                    let iy = e.index(y0, ky, dy);
                    let oky = e.ult(iy, h);
                    e.for_range(0, kw, 1, acc, |e, kx, acc| {
                        let ix = e.index(x0, kx, dx);
                        let okx = e.ult(ix, w);
                        let ok = e.b.ins().band(oky, okx);
                        let lin = e.index(ix, iy, w);
                        let zero = e.c64(0);
                        let lin = e.b.ins().select(ok, lin, zero);
                        let a = e.index(xp, lin, xz);
                        let v = e.load_elem(xe, a);
                        let next = match kind {
                            PoolKind::Max => e.b.ins().smax(acc[0], v),
                            PoolKind::Sum { .. } => e.add(acc[0], v),
                        };
                        vec![e.b.ins().select(ok, next, acc[0])]
                    })
                });
                let v = match kind {
                    PoolKind::Max => r[0],
                    PoolKind::Sum { shift, lo, hi } => {
                        let v = e.rshift_round(r[0], *shift);
                        e.clamp(v, *lo, *hi)
                    }
                };
                let out = e.index(yp, oy, ow * yz);
                let out = e.index(out, ox, yz);
                e.store_elem(ye, v, out);
            });
        });
    });
}

/// Table lookup ([`lutq_ir::int::QTable`]): `y[i] = T[c][x[i] − x_min]`, the tables as
/// bytes at `tables` (one, or one per channel of axis 1, 256 bytes each).
pub(crate) fn table(e: &mut Emitter, x: &Operand, y: &Operand, tables: *const u8, count: usize) {
    let shape = &y.ty.shape;
    let outer = shape.first().copied().unwrap_or(1) as i64;
    let channels = shape.get(1).copied().unwrap_or(1) as i64;
    let plane: i64 = shape.iter().skip(2).product::<usize>() as i64;
    let (xe, ye) = (x.ty.elem, y.ty.elem);
    let (x_min, _) = xe.range();
    let xb = e.arena(x.offset);
    let yb = e.arena(y.offset);
    let tb = e.host(tables);
    e.for_each(0, outer, |e, n| {
        e.for_each(0, channels, |e, c| {
            let t = if count == 1 { tb } else { e.index(tb, c, 256) };
            let row = e.muli(n, channels);
            let row = e.add(row, c);
            let xp = e.index(xb, row, plane);
            let yp = e.index(yb, row, plane);
            e.for_each(0, plane, |e, j| {
                let a = e.index(xp, j, 1);
                let v = e.load_elem(xe, a);
                let v = e.addi(v, -(x_min as i64));
                let a = e.index(t, v, 1);
                let v = e.load_elem(ye, a);
                let d = e.index(yp, j, 1);
                e.store_elem(ye, v, d);
            });
        });
    });
}

/// Product of two activations ([`lutq_ir::int::QMul`]), `b` broadcast over `a`'s
/// trailing dimensions.
pub(crate) fn mul(e: &mut Emitter, a: &Operand, b: &Operand, y: &Operand, q: &QMul) {
    let n = y.ty.num_elements() as i64;
    let outer = b.ty.num_elements().max(1) as i64;
    let inner = n / outer;
    let (ae, be, ye) = (a.ty.elem, b.ty.elem, y.ty.elem);
    let ab = e.arena(a.offset);
    let bb = e.arena(b.offset);
    let yb = e.arena(y.offset);
    e.for_each(0, outer, |e, o| {
        let pg = e.index(bb, o, be.size_bytes() as i64);
        let g = e.load_elem(be, pg);
        let base = e.muli(o, inner);
        e.for_each(0, inner, |e, j| {
            let i = e.add(base, j);
            let pa = e.index(ab, i, ae.size_bytes() as i64);
            let v = e.load_elem(ae, pa);
            let p = e.b.ins().imul(v, g);
            let p = e.rshift_round(p, q.shift);
            let p = e.clamp(p, q.lo, q.hi);
            let py = e.index(yb, i, ye.size_bytes() as i64);
            e.store_elem(ye, p, py);
        });
    });
}

/// Integer softmax ([`lutq_ir::int::QSoftmax`]); the exp table as 256 little-endian
/// i32 at `exp`.
pub(crate) fn softmax(e: &mut Emitter, x: &Operand, y: &Operand, axis: usize, exp: *const u8) {
    let shape = &x.ty.shape;
    let n = shape[axis] as i64;
    let inner = shape[axis + 1..].iter().product::<usize>() as i64;
    let outer = x.ty.num_elements() as i64 / (n * inner).max(1);
    let (xe, ye) = (x.ty.elem, y.ty.elem);
    let xb = e.arena(x.offset);
    let yb = e.arena(y.offset);
    let tb = e.host(exp);
    e.for_each(0, outer, |e, o| {
        e.for_each(0, inner, |e, j| {
            let row = e.muli(o, n * inner);
            let row = e.add(row, j);
            let xr = e.index(xb, row, xe.size_bytes() as i64);
            let yr = e.index(yb, row, ye.size_bytes() as i64);
            let stride = inner * xe.size_bytes() as i64;
            let first = e.load_elem(xe, xr);
            let m = e.for_range(1, n, 1, &[first], |e, k, acc| {
                let p = e.index(xr, k, stride);
                let v = e.load_elem(xe, p);
                vec![e.b.ins().smax(acc[0], v)]
            })[0];
            let exp_of = |e: &mut Emitter, k: Value| {
                let p = e.index(xr, k, stride);
                let v = e.load_elem(xe, p);
                let d = e.b.ins().isub(m, v);
                let a = e.index(tb, d, 4);
                let t = e.load_const(cranelift_codegen::ir::types::I32, a, 0);
                e.b.ins().sextend(cranelift_codegen::ir::types::I64, t)
            };
            let zero = e.c64(0);
            let s = e.for_range(0, n, 1, &[zero], |e, k, acc| {
                let v = exp_of(e, k);
                vec![e.add(acc[0], v)]
            })[0];
            let half = e.b.ins().sshr_imm_u(s, 1);
            e.for_each(0, n, |e, k| {
                let v = exp_of(e, k);
                let v = e.muli(v, 256);
                let v = e.add(v, half);
                let q = e.b.ins().sdiv(v, s);
                let q = e.clamp(q, 0, 255);
                let p = e.index(yr, k, inner * ye.size_bytes() as i64);
                e.store_elem(ye, q, p);
            });
        });
    });
}

/// A gather by a constant index table (`u32` source element indices at `sources`):
/// `y[i] = x[sources[i]]`, used for transposes.
pub(crate) fn gather(e: &mut Emitter, x: &Operand, y: &Operand, sources: *const u8) {
    let (xe, ye) = (x.ty.elem, y.ty.elem);
    let xb = e.arena(x.offset);
    let yb = e.arena(y.offset);
    let sb = e.host(sources);
    e.for_each(0, y.ty.num_elements() as i64, |e, i| {
        let a = e.index(sb, i, 4);
        let s = e.load_const(cranelift_codegen::ir::types::I32, a, 0);
        let s = e.b.ins().uextend(cranelift_codegen::ir::types::I64, s);
        let p = e.index(xb, s, xe.size_bytes() as i64);
        let v = e.load_elem(xe, p);
        let d = e.index(yb, i, ye.size_bytes() as i64);
        e.store_elem(ye, v, d);
    });
}

/// Elements `start + k · step` along `axis` ([`lutq_ir::int::IntOp::Slice`]).
pub(crate) fn slice(
    e: &mut Emitter,
    x: &Operand,
    y: &Operand,
    axis: usize,
    start: usize,
    step: usize,
) {
    let s = &x.ty.shape;
    let inner = s[axis + 1..].iter().product::<usize>() as i64;
    let outer = s[..axis].iter().product::<usize>() as i64;
    let (n_in, n_out) = (s[axis] as i64, y.ty.shape[axis] as i64);
    let (xe, ye) = (x.ty.elem, y.ty.elem);
    let (xz, yz) = (xe.size_bytes() as i64, ye.size_bytes() as i64);
    let xb = e.arena(x.offset);
    let yb = e.arena(y.offset);
    e.for_each(0, outer, |e, o| {
        e.for_each(0, n_out, |e, k| {
            let src = e.muli(o, n_in);
            let kk = e.muli(k, step as i64);
            let src = e.add(src, kk);
            let src = e.addi(src, start as i64);
            let xr = e.index(xb, src, inner * xz);
            let dst = e.muli(o, n_out);
            let dst = e.add(dst, k);
            let yr = e.index(yb, dst, inner * yz);
            e.for_each(0, inner, |e, j| {
                let p = e.index(xr, j, xz);
                let v = e.load_elem(xe, p);
                let d = e.index(yr, j, yz);
                e.store_elem(ye, v, d);
            });
        });
    });
}

/// Spatial resize ([`lutq_ir::int::QResize`]); the row and column taps as
/// little-endian i32 triples `(lo, hi, w_hi)` at `rows` and `cols`. Computed in i64,
/// where the contract's i32 blend is exact.
pub(crate) fn resize(
    e: &mut Emitter,
    x: &Operand,
    y: &Operand,
    rows: *const u8,
    cols: *const u8,
    frac: u32,
) {
    let (s, o) = (&x.ty.shape, &y.ty.shape);
    let (h, w) = (s[2] as i64, s[3] as i64);
    let (oh, ow) = (o[2] as i64, o[3] as i64);
    let planes = (s[0] * s[1]) as i64;
    let (xe, ye) = (x.ty.elem, y.ty.elem);
    let (xz, yz) = (xe.size_bytes() as i64, ye.size_bytes() as i64);
    let one = 1i64 << frac;
    let xb = e.arena(x.offset);
    let yb = e.arena(y.offset);
    let rb = e.host(rows);
    let cb = e.host(cols);
    let tap = |e: &mut Emitter, base: Value, k: Value, field: i32| {
        let p = e.index(base, k, 12);
        let v = e.load_const(I32, p, 4 * field);
        e.b.ins().sextend(I64, v)
    };
    e.for_each(0, planes, |e, p| {
        let xp = e.index(xb, p, h * w * xz);
        let yp = e.index(yb, p, oh * ow * yz);
        e.for_each(0, oh, |e, oy| {
            let lo = tap(e, rb, oy, 0);
            let a = e.index(xp, lo, w * xz);
            let yr = e.index(yp, oy, ow * yz);
            let (b, wy) = if frac > 0 {
                let hi = tap(e, rb, oy, 1);
                (e.index(xp, hi, w * xz), tap(e, rb, oy, 2))
            } else {
                (a, a)
            };
            e.for_each(0, ow, |e, ox| {
                let cl = tap(e, cb, ox, 0);
                let at = |e: &mut Emitter, row: Value, col: Value| {
                    let p = e.index(row, col, xz);
                    e.load_elem(xe, p)
                };
                let v = if frac == 0 {
                    at(e, a, cl)
                } else {
                    let ch = tap(e, cb, ox, 1);
                    let wx = tap(e, cb, ox, 2);
                    // (one − w) · lo + w · hi, as lo · one + w · (hi − lo).
                    let lerp = |e: &mut Emitter, lo: Value, hi: Value, wt: Value| {
                        let d = e.b.ins().isub(hi, lo);
                        let d = e.b.ins().imul(d, wt);
                        let l = e.muli(lo, one);
                        e.add(l, d)
                    };
                    let (a0, a1) = (at(e, a, cl), at(e, a, ch));
                    let (b0, b1) = (at(e, b, cl), at(e, b, ch));
                    let top = lerp(e, a0, a1, wx);
                    let bottom = lerp(e, b0, b1, wx);
                    let v = lerp(e, top, bottom, wy);
                    e.rshift_round(v, 2 * frac as i32)
                };
                let d = e.index(yr, ox, yz);
                e.store_elem(ye, v, d);
            });
        });
    });
}

/// Element-wise maximum or minimum of aligned operands ([`lutq_ir::int::IntOp::Extremum`]).
pub(crate) fn extremum(
    e: &mut Emitter,
    xs: &[Operand],
    y: &Operand,
    kind: lutq_ir::int::Extremum,
    shifts: &[i32],
) {
    let ye = y.ty.elem;
    let (lo, hi) = ye.range();
    let bases: Vec<Value> = xs.iter().map(|x| e.arena(x.offset)).collect();
    let yb = e.arena(y.offset);
    e.for_each(0, y.ty.num_elements() as i64, |e, i| {
        let mut m = None;
        for ((x, &base), &s) in xs.iter().zip(&bases).zip(shifts) {
            let p = e.index(base, i, x.ty.elem.size_bytes() as i64);
            let v = e.load_elem(x.ty.elem, p);
            let v = e.rshift_round(v, s);
            let v = e.clamp(v, lo, hi);
            m = Some(match (m, kind) {
                (None, _) => v,
                (Some(m), lutq_ir::int::Extremum::Max) => e.b.ins().smax(m, v),
                (Some(m), lutq_ir::int::Extremum::Min) => e.b.ins().smin(m, v),
            });
        }
        if let Some(m) = m {
            let d = e.index(yb, i, ye.size_bytes() as i64);
            e.store_elem(ye, m, d);
        }
    });
}
