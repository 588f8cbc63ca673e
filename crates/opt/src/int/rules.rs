//! The integer rewrite rules: requantization and shift fusion.
//!
//! Policy (as for the float rules): a rule fires only where the rewrite is **bit-exact**
//! under the numeric contract (not merely exact in real arithmetic: every backend is
//! compared bit for bit with the golden interpreter), and it removes an op or replaces a
//! multiplier by a shift, so extraction ([`super::translate::IntCost`]) always prefers
//! the rewritten form. Each rule's proof is in its doc comment; the common lemmas are
//! here. Write `R(x, s)` for [`rshift_round`]`(x, s)` and `C(v, lo, hi)` for
//! [`clamp`].
//!
//! * **L1 (left shift first).** For `a ≤ 0` and any `b`, `R(R(x, a), b) = R(x, a + b)`.
//!   With `k = −a ≥ 0`, `R(x, a) = x·2^k`. If `b ≤ 0` both are left shifts:
//!   `x·2^k·2^-b`. If `b > k`: `⌊(x·2^k + 2^(b−1)) / 2^b⌋ = ⌊(x + 2^(b−k−1)) / 2^(b−k)⌋`
//!   (numerator and denominator divided by `2^k`, exact). If `0 < b ≤ k`:
//!   `⌊(x·2^k + 2^(b−1)) / 2^b⌋ = x·2^(k−b) + ⌊2^(b−1) / 2^b⌋ = x·2^(k−b)`
//!   (`x·2^(k−b)` is an integer and `0 ≤ 2^(b−1) < 2^b`). Likewise `R(x, 0) = x`, so
//!   `R(R(x, a), 0) = R(x, a)` for every `a`.
//! * **Not L1.** A right shift followed by any non-zero shift is not one shift:
//!   `R(R(1, 1), 1) = 1` but `R(1, 2) = 0` (round-half-up twice), and
//!   `R(R(1, 1), −1) = 2` but `R(1, 0) = 1` (the left shift cannot restore the low bit).
//! * **Ties to even.** Programs with [`Rounding::HalfEven`] write `R` for
//!   [`lutq_ir::int::rshift_round_even`]; L1 and L2 hold for it too (in L1 the value
//!   divided is the same, so is the parity of the result; rounding to even is
//!   non-decreasing), so every rule carries over with the bounds of [`push_clamp`]
//!   rounded the program's way.
//! * **L2 (monotone through a clamp).** `R(·, b)` is non-decreasing, and for every
//!   non-decreasing `g`, `g(C(v, lo, hi)) = C(g(v), g(lo), g(hi))` (check `v < lo`,
//!   `lo ≤ v ≤ hi`, `v > hi`).
//! * **L3 (two clamps are one).** For `lo1 ≤ hi1`, `lo2 ≤ hi2`:
//!   `C(C(v, lo1, hi1), lo2, hi2) = C(v, C(lo1, lo2, hi2), C(hi1, lo2, hi2))` (for
//!   `v ∈ [lo1, hi1]` both sides are `C(v, lo2, hi2)`; below `lo1` the left side is
//!   `C(lo1, lo2, hi2)`, which is the right side's lower bound and, when it is below
//!   `lo1`, also its upper bound; symmetrically above `hi1`). The combined bounds lie in
//!   `[lo2, hi2]`, so they fit the outer op's type.
//!
//! Together: when `compose(a, b)` holds (`a ≤ 0` or `b = 0`),
//! `C(R(C(R(x, a), lo1, hi1), b), lo2, hi2) = C(R(x, a + b), L, H)` with
//! `L = C(R(lo1, b), lo2, hi2)`, `H = C(R(hi1, b), lo2, hi2)` ([`push_clamp`]). That is
//! the arithmetic of every fusion below; an op's own epilogue `C(R(acc, s), lo, hi)`
//! takes the place of the inner requant. Shifts are kept within `[−31, 62]` and left
//! shifts must keep every intermediate within i32 (the accumulator proof of
//! [`accumulator_bound`] for linear layers, the value ranges otherwise), so i64
//! arithmetic is exact throughout and i32 backends see no new overflow.

use egg::{Applier, Id, Language as _, Pattern, PatternAst, Rewrite, Subst, Symbol, Var};
#[cfg(doc)]
use lutq_ir::int::rshift_round;
use lutq_ir::int::{IntElem, IntOp, QAdd, Rescale, Rounding, accumulator_bound, clamp};

use super::analysis::{IntAnalysis, IntAttrEntry, IntEGraph, add_op, attr_of};
use super::lang::IntLang;

/// A rule of the integer pass.
pub type IntRule = Rewrite<IntLang, IntAnalysis>;

/// The most a fused left shift may shift by.
const MAX_LEFT: i32 = 31;
/// The most a fused right shift may shift by.
const MAX_RIGHT: i32 = 62;

/// Every integer rule, in this order.
pub fn rules() -> Vec<IntRule> {
    vec![
        rule("merge-left-shifts", Fuse::Requant),
        rule("requant-into-linear", Fuse::Linear),
        rule("requant-into-add", Fuse::Add),
        rule("requant-into-sumpool", Fuse::SumPool),
        Rewrite::new(
            "identity-requant",
            pattern("(requant ?q ?x)"),
            IdentityRequant,
        )
        .expect("a valid rule"),
        Rewrite::new("pot-multiplier-to-shift", pattern("?v"), PotMultiplier)
            .expect("a valid rule"),
        Rewrite::new(
            "align-add-operand",
            pattern("(add ?p ?x ?y)"),
            AlignAddOperand,
        )
        .expect("a valid rule"),
    ]
}

fn pattern(s: &str) -> Pattern<IntLang> {
    s.parse().expect("a valid pattern")
}

fn var(s: &str) -> Var {
    s.parse().expect("a valid variable")
}

/// A fusion rule: it matches `(requant ?q ?i)` and looks in `?i`'s class for inner ops
/// of its kind.
fn rule(name: &str, inner: Fuse) -> IntRule {
    Rewrite::new(name, pattern("(requant ?q ?i)"), FuseRequant { inner }).expect("a valid rule")
}

/// `a + b` where a shift `a` followed by a shift `b` is exactly one shift (lemma L1:
/// the first is a left shift or zero, or the second is zero), within the shift limits.
pub fn compose(a: i32, b: i32) -> Option<i32> {
    let s = a.checked_add(b)?;
    let ok = (a <= 0 || b == 0) && (-MAX_LEFT..=MAX_RIGHT).contains(&s);
    (ok && (-MAX_LEFT..=MAX_RIGHT).contains(&a) && (-MAX_LEFT..=MAX_RIGHT).contains(&b))
        .then_some(s)
}

/// The clamp bounds of `C(R(C(v, lo1, hi1), b), lo2, hi2)` as one clamp of `R(v, b)`
/// (lemmas L2 and L3).
pub fn push_clamp(
    rounding: Rounding,
    (lo1, hi1): (i32, i32),
    b: i32,
    (lo2, hi2): (i32, i32),
) -> (i32, i32) {
    (
        clamp(rounding.rshift(lo1 as i64, b), lo2, hi2),
        clamp(rounding.rshift(hi1 as i64, b), lo2, hi2),
    )
}

/// Whether `max_abs · 2^-s` (a left shift, `s < 0`) still fits i32; right shifts and
/// zero always pass (the op computed that intermediate already).
fn left_shift_fits(max_abs: i64, s: i32) -> bool {
    s >= 0 || (max_abs << (-s).min(62)) <= i32::MAX as i64
}

fn max_abs(range: (i32, i32)) -> i64 {
    (range.0 as i64).abs().max((range.1 as i64).abs())
}

/// The outer requant of a fusion rule: `C(R(x, b), lo, hi)`.
fn requant_shift(op: &IntOp) -> Option<(i32, i32, i32)> {
    match *op {
        IntOp::Requant {
            rescale: Rescale::Shift(b),
            lo,
            hi,
        } => Some((b, lo, hi)),
        _ => None,
    }
}

/// Which op a fusion rule folds the outer requant into.
#[derive(Clone, Copy)]
enum Fuse {
    Requant,
    Linear,
    Add,
    SumPool,
}

/// `Requant(P(…), Shift(b), lo2, hi2)` → `P'(…)`, where `P` (the inner op, read by the
/// requant only) ends in `C(R(v, a), lo1, hi1)` and `compose(a, b)` holds: `P'` is `P`
/// with shift `a + b`, clamp `(L, H)` of [`push_clamp`] and the requant's output type
/// and name. By lemmas L1–L3 `P'` computes exactly the requant's values.
///
/// * `merge-left-shifts`: `P` is a requant with `Shift(a)` (lemma L1 needs `a ≤ 0`, or
///   `b = 0`). Both right shifts (`a > 0`, `b > 0`) do not fire: round-half-up twice is
///   not once (`R(R(1, 1), 1) = 1`, `R(1, 2) = 0`); nor does a right shift followed by a
///   left shift (`R(R(1, 1), −1) = 2`, `R(1, 0) = 1`). The new left shift of an i32
///   input must fit i32 on the input's range.
/// * `requant-into-linear`: `P` is a linear layer; every channel's rescale must compose
///   with `b`: a `Shift(s)` with `s ≤ 0`, or any rescale when `b = 0` (a clamp-only
///   requant: the clamps intersect). A right-shifting layer followed by a left-shifting
///   requant does not fire (not L1: the low bits are gone). The fused layer must pass
///   the accumulator proof ([`accumulator_bound`]) with its new shifts.
/// * `requant-into-add`, `requant-into-sumpool`: `P` is an add or a sum-pool with its
///   `shift` as `a`; a left shift of the i32 sum must fit i32 (from the operand ranges).
///
/// Does not fire when `P`'s value has another reader (it would be computed twice), for
/// an outer `Multiplier` requant (`pot-multiplier-to-shift` may turn it into a shift
/// first), when the shifts leave `[−31, 62]`, or when the requant changes nothing
/// (`identity-requant` removes it).
struct FuseRequant {
    inner: Fuse,
}

impl Applier<IntLang, IntAnalysis> for FuseRequant {
    fn apply_one(
        &self,
        egraph: &mut IntEGraph,
        class: Id,
        subst: &Subst,
        _: Option<&PatternAst<IntLang>>,
        _: Symbol,
    ) -> Vec<Id> {
        let outer = attr_of(egraph, subst[var("?q")]).clone();
        let Some((b, lo2, hi2)) = requant_shift(&outer.op) else {
            return vec![];
        };
        let inner_class = subst[var("?i")];
        if egraph[inner_class].data.value().shared {
            return vec![];
        }
        let kind = self.inner;
        let inners: Vec<IntLang> = egraph[inner_class]
            .nodes
            .iter()
            .filter(|n| match kind {
                Fuse::Requant => matches!(n, IntLang::Requant(_)),
                Fuse::Linear => matches!(n, IntLang::Linear(_)),
                Fuse::Add => matches!(n, IntLang::Add(_)),
                Fuse::SumPool => matches!(n, IntLang::SumPool(_)),
            })
            .cloned()
            .collect();
        let mut changed = vec![];
        for node in inners {
            let children = node.children();
            let inner = attr_of(egraph, children[0]).clone();
            let Some(op) = fuse(egraph, &inner.op, &children[1..], b, lo2, hi2) else {
                continue;
            };
            // A clamp-only requant that changes nothing is `identity-requant`'s: fusing
            // it too would give two equally cheap forms.
            if b == 0 && op == inner.op && outer.ty == inner.ty {
                continue;
            }
            let entry = IntAttrEntry {
                name: outer.name.clone(),
                op,
                ty: outer.ty.clone(),
                order: outer.order,
            };
            let fused = add_op(egraph, entry, &children[1..]);
            if egraph.union(class, fused) {
                changed.push(fused);
            }
        }
        changed
    }
}

/// The inner op `inner` (over `inputs`) with the requant `C(R(·, b), lo2, hi2)` fused
/// into its epilogue, or `None` where that is not exact or not safe (see
/// [`FuseRequant`]).
fn fuse(
    egraph: &IntEGraph,
    inner: &IntOp,
    inputs: &[Id],
    b: i32,
    lo2: i32,
    hi2: i32,
) -> Option<IntOp> {
    let rounding = egraph.analysis.rounding;
    let x = egraph[inputs[0]].data.value();
    let (x_range, x_elem) = (x.range, x.ty.elem);
    let op = match inner.clone() {
        IntOp::Requant {
            rescale: Rescale::Shift(a),
            lo,
            hi,
        } => {
            let s = compose(a, b)?;
            if !left_shift_fits(max_abs(x_range), s) {
                return None;
            }
            let (lo, hi) = push_clamp(rounding, (lo, hi), b, (lo2, hi2));
            IntOp::Requant {
                rescale: Rescale::Shift(s),
                lo,
                hi,
            }
        }
        IntOp::Linear(mut l) => {
            let mut rescale = Vec::with_capacity(l.rescale.len());
            for r in &l.rescale {
                rescale.push(match (*r, b) {
                    (r, 0) => r,
                    (Rescale::Shift(a), b) => Rescale::Shift(compose(a, b)?),
                    (Rescale::Multiplier { .. }, _) => return None,
                });
            }
            l.rescale = rescale;
            (l.lo, l.hi) = push_clamp(rounding, (l.lo, l.hi), b, (lo2, hi2));
            if accumulator_bound(&l, x_elem).rescaled > i32::MAX as i64 {
                return None;
            }
            IntOp::Linear(l)
        }
        IntOp::Add(mut a) => {
            let s = compose(a.shift, b)?;
            let y_range = egraph[inputs[1]].data.value().range;
            let sum = (max_abs(x_range) << a.align_a.clamp(0, 16))
                + (max_abs(y_range) << a.align_b.clamp(0, 16));
            if !left_shift_fits(sum, s) {
                return None;
            }
            a.shift = s;
            (a.lo, a.hi) = push_clamp(rounding, (a.lo, a.hi), b, (lo2, hi2));
            IntOp::Add(a)
        }
        IntOp::SumPool {
            pool,
            shift,
            lo,
            hi,
        } => {
            let s = compose(shift, b)?;
            let taps = (pool.kernel[0] * pool.kernel[1]) as i64;
            if !left_shift_fits(max_abs(x_range) * taps, s) {
                return None;
            }
            let (lo, hi) = push_clamp(rounding, (lo, hi), b, (lo2, hi2));
            IntOp::SumPool {
                pool,
                shift: s,
                lo,
                hi,
            }
        }
        _ => return None,
    };
    Some(op)
}
/// `identity-requant`: `Requant(x, Shift(0), lo, hi)` → `x` when the output type equals
/// `x`'s (element type, shape, exponent) and `[lo, hi]` contains `x`'s value range (the
/// type's range or its producer's tighter clamp): then `C(R(v, 0), lo, hi) = C(v, lo,
/// hi) = v` for every value `v` of `x`. Does not fire on a clamp that can bind, a type
/// or exponent change, or any other rescale.
struct IdentityRequant;

impl Applier<IntLang, IntAnalysis> for IdentityRequant {
    fn apply_one(
        &self,
        egraph: &mut IntEGraph,
        class: Id,
        subst: &Subst,
        _: Option<&PatternAst<IntLang>>,
        _: Symbol,
    ) -> Vec<Id> {
        let outer = attr_of(egraph, subst[var("?q")]);
        let IntOp::Requant {
            rescale: Rescale::Shift(0),
            lo,
            hi,
        } = outer.op
        else {
            return vec![];
        };
        let x = subst[var("?x")];
        let xf = egraph[x].data.value();
        if xf.ty != outer.ty || xf.range.0 < lo || xf.range.1 > hi {
            return vec![];
        }
        if egraph.union(class, x) {
            vec![x]
        } else {
            vec![]
        }
    }
}

/// `Multiplier { multiplier: 2^30, shift }` as a shift: `Shift(1 + shift)`.
///
/// The multiplier computes `R(acc · 2^30, 31 + shift)` with `31 + shift > 0`; by lemma
/// L1 (the multiplication is a left shift by 30) that is `R(acc, 31 + shift − 30) =
/// R(acc, 1 + shift)`: a right shift for `shift ≥ 0`, the identity for `shift = −1`, a
/// left shift by `−1 − shift` for `shift < −1`. Its real factor `2^30 · 2^-(31+shift) =
/// 2^-(1+shift)` is the same. Any other multiplier (`(2^30, 2^31)` is never a power of
/// two) is left alone.
pub fn pot_shift(r: Rescale) -> Option<i32> {
    match r {
        Rescale::Multiplier { multiplier, shift } if multiplier == 1 << 30 => {
            let s = shift.checked_add(1)?;
            (-MAX_LEFT..=MAX_RIGHT).contains(&s).then_some(s)
        }
        _ => None,
    }
}

/// `pot-multiplier-to-shift`: every power-of-two multiplier ([`pot_shift`]) of a
/// linear layer's channels or of a requant becomes a shift. In a linear layer the new
/// left shifts must pass the accumulator proof (the multiplier form is computed in i64,
/// a shift in i32 code); in a requant the left shift of its input range must fit i32.
struct PotMultiplier;

impl Applier<IntLang, IntAnalysis> for PotMultiplier {
    fn apply_one(
        &self,
        egraph: &mut IntEGraph,
        class: Id,
        _: &Subst,
        _: Option<&PatternAst<IntLang>>,
        _: Symbol,
    ) -> Vec<Id> {
        let candidates: Vec<IntLang> = egraph[class]
            .nodes
            .iter()
            .filter(|n| matches!(n, IntLang::Linear(_) | IntLang::Requant(_)))
            .cloned()
            .collect();
        let mut changed = vec![];
        for node in candidates {
            let children = node.children();
            let mut entry = attr_of(egraph, children[0]).clone();
            let x = egraph[children[1]].data.value();
            let (x_range, x_elem) = (x.range, x.ty.elem);
            let ok = match &mut entry.op {
                IntOp::Linear(l) => {
                    let mut any = false;
                    for r in &mut l.rescale {
                        if let Some(s) = pot_shift(*r) {
                            *r = Rescale::Shift(s);
                            any = true;
                        }
                    }
                    any && accumulator_bound(l, x_elem).rescaled <= i32::MAX as i64
                }
                IntOp::Requant { rescale, .. } => match pot_shift(*rescale) {
                    Some(s) if left_shift_fits(max_abs(x_range), s) => {
                        *rescale = Rescale::Shift(s);
                        true
                    }
                    _ => false,
                },
                _ => false,
            };
            if !ok {
                continue;
            }
            let new = add_op(egraph, entry, &children[1..]);
            if egraph.union(class, new) {
                changed.push(new);
            }
        }
        changed
    }
}

/// Whether a fusion rule (`merge-left-shifts`, `requant-into-*`) removes the requant
/// `C(R(·, b), lo, hi)` over class `inner` anyway; `align-add-operand` then leaves it
/// to that rule, so the two never give equally cheap forms.
fn fusion_takes(egraph: &IntEGraph, inner: Id, b: i32, lo: i32, hi: i32) -> bool {
    if egraph[inner].data.value().shared {
        return false;
    }
    egraph[inner].nodes.iter().any(|n| {
        matches!(
            n,
            IntLang::Requant(_) | IntLang::Linear(_) | IntLang::Add(_) | IntLang::SumPool(_)
        ) && {
            let children = n.children();
            let op = &attr_of(egraph, children[0]).op;
            fuse(egraph, op, &children[1..], b, lo, hi).is_some()
        }
    })
}

/// `align-add-operand`: `Add(Requant(a, Shift(−k), lo, hi), b)` (either operand) →
/// `Add(a, b)` with that operand's alignment `+ k`, when `k ≥ 0`, the new alignment is
/// at most 16, `a` is 8-bit, the requant has no other reader and its clamp never binds:
/// `a`'s value range times `2^k` lies in `[lo, hi]`.
///
/// Then the requant's value is exactly `v · 2^k` (`C(R(v, −k), lo, hi) = v·2^k`) and the
/// add computes `(v·2^k) << align = v << (align + k)`: the left shift before the add is
/// the add's own alignment. Does not fire on a right shift (it rounds), a clamp that can
/// bind (e.g. an i8 value shifted left by 1 into i8), an alignment above 16, or a
/// requant that a fusion rule folds into its producer ([`fusion_takes`]).
struct AlignAddOperand;

impl Applier<IntLang, IntAnalysis> for AlignAddOperand {
    fn apply_one(
        &self,
        egraph: &mut IntEGraph,
        class: Id,
        subst: &Subst,
        _: Option<&PatternAst<IntLang>>,
        _: Symbol,
    ) -> Vec<Id> {
        let p = subst[var("?p")];
        let IntOp::Add(add) = attr_of(egraph, p).op.clone() else {
            return vec![];
        };
        let operands = [subst[var("?x")], subst[var("?y")]];
        let mut changed = vec![];
        for slot in 0..2 {
            let operand = operands[slot];
            if egraph[operand].data.value().shared || operands[0] == operands[1] {
                continue;
            }
            let requants: Vec<(Id, Id)> = egraph[operand]
                .nodes
                .iter()
                .filter_map(|n| match n {
                    IntLang::Requant(c) => Some((c[0], c[1])),
                    _ => None,
                })
                .collect();
            for (q, a) in requants {
                let IntOp::Requant {
                    rescale: Rescale::Shift(s),
                    lo,
                    hi,
                } = attr_of(egraph, q).op
                else {
                    continue;
                };
                if fusion_takes(egraph, a, s, lo, hi) {
                    continue;
                }
                let k = -s;
                let align = if slot == 0 { add.align_a } else { add.align_b };
                let af = egraph[a].data.value();
                if !(0..=16).contains(&k)
                    || align + k > 16
                    || af.ty.elem == IntElem::I32
                    || (af.range.0 as i64) << k < lo as i64
                    || (af.range.1 as i64) << k > hi as i64
                {
                    continue;
                }
                let new_add = if slot == 0 {
                    QAdd {
                        align_a: align + k,
                        ..add.clone()
                    }
                } else {
                    QAdd {
                        align_b: align + k,
                        ..add.clone()
                    }
                };
                let mut entry = attr_of(egraph, p).clone();
                entry.op = IntOp::Add(new_add);
                let mut children = operands;
                children[slot] = a;
                let new = add_op(egraph, entry, &children);
                if egraph.union(class, new) {
                    changed.push(new);
                }
            }
        }
        changed
    }
}
