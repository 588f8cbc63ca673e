//! Folding per-channel affine ops — multiplication, division, addition and subtraction
//! by a constant, and BatchNorms without a linear producer — into an adjacent Conv or
//! Gemm with constant weights.
//!
//! An op is a *per-channel affine* of its tensor input `x` (`[N, C, …]` or `[M, K]`) when
//! it computes `x · k[c] + shift[c]` with `c` the index along axis 1:
//!
//! | op | `k` | `shift` |
//! |---|---|---|
//! | `Mul(x, c)`, `Mul(c, x)` | `c` | 0 |
//! | `Div(x, c)` (no zero in `c`) | `1/c` | 0 |
//! | `Add(x, c)`, `Add(c, x)` | 1 | `c` |
//! | `Sub(x, c)` | 1 | `−c` |
//! | `Sub(c, x)` | −1 | `c` |
//! | `BatchNorm(x)` | `scale/√(var+ε)` | `bias − mean · k` |
//!
//! where the constant `c` broadcasts to `x`'s shape without changing it and varies along
//! axis 1 only (a scalar, `[C]`… right-aligned, `[C,1,1]`, `[1,C,1,1]`, `[1,K]`).
//! `Div(c, x)` is not affine. Division by `c` becomes multiplication by `1/c`: exact in
//! real arithmetic, not bit for bit in f32.

use std::fmt;

use egg::{Applier, Id, Language as _, PatternAst, Rewrite, Subst, Symbol};
use lutq_ir::{BinaryOp, Conv, Gemm, Graph, NodeId, Op, Tensor};

use super::bn_fold::{Affine, beta_c, fold};
use super::{ClassesWith, Rule, is_linear};
use crate::analysis::{IrAnalysis, IrEGraph, add_constant, add_op, attr_of, const_of};
use crate::lang::IrLang;

/// The affine-folding rules:
///
/// * `affine-into-producer`: `A(L(x))`, `A` a constant Mul / Div / Add / Sub that is a
///   per-channel affine over `L`'s output channels and `L` a Conv, Gemm or 2-D MatMul
///   with constant weights and no activation → one `L'` with `w' = w · k` per output
///   channel and `b' = b · k + shift` (the arithmetic of `bn-fold`). Does not fire when
///   `L`'s output has other readers, when `L` has a fused activation (the affine would
///   have to pass through it), or when the constant is not per-channel.
/// * `affine-into-consumer`: `L(A(x))`, or `Gemm(Flatten(A(x)))`, with `L` a Conv or Gemm
///   with constant weights → `L'(x)`: input channel `i` of the weights scaled by `k[i]`,
///   and `Σ w · shift` over the input channels added to the bias (for a Gemm,
///   `alpha · shiftᵀ op(B)` added to `beta · C`, `beta' = 1`). Through a Flatten
///   (`[N, C, H, W]` → `[N, C·H·W]`) each channel's `k` and `shift` cover its `H·W`
///   columns. Does not fire when `A`'s output (or the Flatten's) has other readers, for
///   a Gemm with `trans_a`, and — the one inexact case — **when the Conv pads and the
///   offset is non-zero**: the padding zeros of `L(A(x))` are not shifted, while `L'`
///   would add the offset's contribution at the borders too. A pure scaling is exact
///   with any padding (`0 · k = 0`). An affine whose input comes from a producer that
///   `affine-into-producer` / `bn-fold` folds it into is left to that rule (one
///   canonical place for it; extraction never chooses between two folds).
/// * `bn-fold-forward`: as `affine-into-consumer` for a BatchNorm (which `bn-fold`
///   could not fold backwards: no linear producer, or one with an activation).
///
/// What is left is explained in [`crate::OptReport::kept_affine`] and
/// [`crate::OptReport::unfolded_batch_norms`] ([`explain_kept`]).
pub fn rules() -> Vec<Rule> {
    vec![
        Rewrite::new("affine-into-producer", ClassesWith(is_binary), IntoProducer).unwrap(),
        Rewrite::new(
            "affine-into-consumer",
            ClassesWith(is_linear),
            IntoConsumer(Source::Binary),
        )
        .unwrap(),
        Rewrite::new(
            "bn-fold-forward",
            ClassesWith(is_linear),
            IntoConsumer(Source::BatchNorm),
        )
        .unwrap(),
    ]
}

fn is_binary(n: &IrLang) -> bool {
    matches!(
        n,
        IrLang::Add(_) | IrLang::Sub(_) | IrLang::Mul(_) | IrLang::Div(_)
    )
}

/// Why a binary op with one constant operand is not a per-channel affine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotAffine {
    /// `c / x`.
    Reciprocal,
    /// The constant is not f32, broadcasts `x` to a larger shape, or varies along an
    /// axis other than 1.
    NotPerChannel,
    /// Division by a constant with a zero.
    DivisionByZero,
    /// Max, Min or Pow: not an affine function of `x`.
    NonLinear,
}

impl fmt::Display for NotAffine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotAffine::Reciprocal => "constant divided by a tensor is not affine",
            NotAffine::NotPerChannel => "the constant is not per-channel (axis 1) or scalar",
            NotAffine::DivisionByZero => "division by a constant with a zero",
            NotAffine::NonLinear => "max, min and pow are not affine",
        })
    }
}

/// The per-channel affine `op(x, c)` (`x_lhs`) or `op(c, x)` computes over axis 1 of a
/// tensor of shape `x_shape` (see the module doc).
pub(crate) fn binary_affine(
    op: BinaryOp,
    x_lhs: bool,
    x_shape: &[usize],
    c: &Tensor,
    name: &str,
) -> Result<Affine, NotAffine> {
    if op == BinaryOp::Div && !x_lhs {
        return Err(NotAffine::Reciprocal);
    }
    if matches!(op, BinaryOp::Max | BinaryOp::Min | BinaryOp::Pow) {
        return Err(NotAffine::NonLinear);
    }
    let v = per_channel(x_shape, c).ok_or(NotAffine::NotPerChannel)?;
    let n = v.len();
    let (k, shift) = match (op, x_lhs) {
        (BinaryOp::Mul, _) => (v, vec![0.0; n]),
        (BinaryOp::Div, _) => {
            if v.contains(&0.0) {
                return Err(NotAffine::DivisionByZero);
            }
            (v.iter().map(|&c| 1.0 / c).collect(), vec![0.0; n])
        }
        (BinaryOp::Add, _) => (vec![1.0; n], v),
        (BinaryOp::Sub, true) => (vec![1.0; n], v.iter().map(|&c| -c).collect()),
        (BinaryOp::Sub, false) => (vec![-1.0; n], v),
        (BinaryOp::Max | BinaryOp::Min | BinaryOp::Pow, _) => return Err(NotAffine::NonLinear),
    };
    Ok(Affine {
        k,
        shift,
        name: name.to_string(),
    })
}

/// The constant `c` as one value per channel (axis 1) of `x_shape`, if it broadcasts to
/// `x_shape` without changing it and varies along axis 1 only.
fn per_channel(x_shape: &[usize], c: &Tensor) -> Option<Vec<f32>> {
    let data = c.as_f32()?;
    if x_shape.len() < 2 || c.shape().len() > x_shape.len() {
        return None;
    }
    let channels = x_shape[1];
    // c's dims right-aligned against x's: dim d of x is c's dim d - offset.
    let offset = x_shape.len() - c.shape().len();
    for (d, &cd) in c.shape().iter().enumerate() {
        let xd = d + offset;
        let ok = cd == 1 || (xd == 1 && cd == channels);
        if !ok {
            return None;
        }
    }
    match data.len() {
        1 => Some(vec![data[0]; channels]),
        n if n == channels => Some(data.to_vec()),
        _ => None,
    }
}

/// The affine e-node `node` computes, with its tensor input: a binary op with one
/// constant operand ([`Source::Binary`]) or a BatchNorm with constant parameters
/// ([`Source::BatchNorm`]).
fn affine_of(egraph: &IrEGraph, node: &IrLang, source: Source) -> Option<(Id, Affine)> {
    if !node.is_op() {
        return None;
    }
    let ch = node.children();
    let entry = attr_of(egraph, ch[0]);
    match (&entry.op, source) {
        (Op::Binary(op), Source::Binary) => {
            let (x, c, x_lhs) = match (const_of(egraph, ch[1]), const_of(egraph, ch[2])) {
                (None, Some(c)) => (ch[1], c, true),
                (Some(c), None) => (ch[2], c, false),
                _ => return None,
            };
            let shape = &egraph[x].data.value().ty.shape;
            let a = binary_affine(*op, x_lhs, shape, &c.tensor, &entry.name).ok()?;
            Some((x, a))
        }
        (Op::BatchNorm { .. }, Source::BatchNorm) => {
            Some((ch[1], Affine::batch_norm(egraph, entry, &ch[2..])?))
        }
        _ => None,
    }
}

/// Whether `bn-fold` / `affine-into-producer` folds an affine over `x` into `x`'s
/// producer: `x` has one reader and is a Conv / Gemm without activation, or a MatMul of
/// a 2-D input, with constant weights (and bias).
fn producer_folds(egraph: &IrEGraph, x: Id) -> bool {
    if egraph[x].data.value().shared {
        return false;
    }
    egraph[x].nodes.iter().any(|n| {
        let ch = n.children();
        let constants = || ch.len() > 2 && ch[2..].iter().all(|&c| const_of(egraph, c).is_some());
        match n {
            IrLang::Conv(_) | IrLang::Gemm(_) => {
                let act = match &attr_of(egraph, ch[0]).op {
                    Op::Conv(c) => c.activation.is_some(),
                    Op::Gemm(g) => g.activation.is_some(),
                    _ => true,
                };
                !act && constants()
            }
            IrLang::MatMul(_) => egraph[ch[1]].data.value().ty.rank() == 2 && constants(),
            _ => false,
        }
    })
}

/// `affine-into-producer`.
struct IntoProducer;

impl Applier<IrLang, IrAnalysis> for IntoProducer {
    fn apply_one(
        &self,
        egraph: &mut IrEGraph,
        class: Id,
        _: &Subst,
        _: Option<&PatternAst<IrLang>>,
        _: Symbol,
    ) -> Vec<Id> {
        let affines: Vec<(Id, Affine)> = egraph[class]
            .nodes
            .iter()
            .filter_map(|n| affine_of(egraph, n, Source::Binary))
            .collect();
        let mut changed = vec![];
        for (y, affine) in affines {
            if egraph[y].data.value().shared {
                continue;
            }
            let producers: Vec<IrLang> = egraph[y]
                .nodes
                .iter()
                .filter(|n| matches!(n, IrLang::Conv(_) | IrLang::Gemm(_) | IrLang::MatMul(_)))
                .cloned()
                .collect();
            for node in producers {
                if let Some(folded) = fold(egraph, &affine, y, &node)
                    && egraph.union(class, folded)
                {
                    changed.push(folded);
                }
            }
        }
        changed
    }
}

/// Which affine ops [`IntoConsumer`] folds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Binary,
    BatchNorm,
}

/// `affine-into-consumer` / `bn-fold-forward`.
struct IntoConsumer(Source);

/// An affine found before a linear layer: its input `x`, the affine over the layer's
/// input columns, and the Flatten in between, if any.
struct Before {
    x: Id,
    affine: Affine,
    flatten: Option<crate::analysis::AttrEntry>,
}

impl IntoConsumer {
    /// Every affine of this rule's source feeding `input` (a Conv's or Gemm's data
    /// input class), directly or, for a Gemm, through a Flatten; each class on the way
    /// read only there.
    fn before(&self, egraph: &IrEGraph, input: Id, gemm: bool) -> Vec<Before> {
        let mut out = vec![];
        if egraph[input].data.value().shared {
            return out;
        }
        for node in &egraph[input].nodes {
            if let Some((x, affine)) = affine_of(egraph, node, self.0) {
                out.push(Before {
                    x,
                    affine,
                    flatten: None,
                });
            }
            let IrLang::Reshape(ch) = node else { continue };
            let inner = egraph.find(ch[1]);
            if !gemm || inner == egraph.find(input) || egraph[inner].data.value().shared {
                continue;
            }
            let from = &egraph[inner].data.value().ty.shape;
            let to = &egraph[input].data.value().ty.shape;
            // A Flatten [N, C, rest…] → [N, C · Π rest].
            if from.len() < 2 || to.len() != 2 || to[0] != from[0] {
                continue;
            }
            let reps: usize = from[2..].iter().product();
            for n in &egraph[inner].nodes {
                if let Some((x, a)) = affine_of(egraph, n, self.0) {
                    let expand = |v: &[f32]| -> Vec<f32> {
                        v.iter()
                            .flat_map(|&e| std::iter::repeat_n(e, reps))
                            .collect()
                    };
                    out.push(Before {
                        x,
                        affine: Affine {
                            k: expand(&a.k),
                            shift: expand(&a.shift),
                            name: a.name,
                        },
                        flatten: Some(attr_of(egraph, ch[0]).clone()),
                    });
                }
            }
        }
        out
    }
}

impl Applier<IrLang, IrAnalysis> for IntoConsumer {
    fn apply_one(
        &self,
        egraph: &mut IrEGraph,
        class: Id,
        _: &Subst,
        _: Option<&PatternAst<IrLang>>,
        _: Symbol,
    ) -> Vec<Id> {
        let linear: Vec<IrLang> = egraph[class]
            .nodes
            .iter()
            .filter(|n| is_linear(n))
            .cloned()
            .collect();
        let mut changed = vec![];
        for node in linear {
            let ch = node.children();
            let gemm = matches!(node, IrLang::Gemm(_));
            for b in self.before(egraph, ch[1], gemm) {
                if producer_folds(egraph, b.x) {
                    continue;
                }
                if let Some(folded) = fold_into_consumer(egraph, &node, &b)
                    && egraph.union(class, folded)
                {
                    changed.push(folded);
                }
            }
        }
        changed
    }
}

/// Why an affine over the input of the linear op `op` cannot fold into it; `None` if
/// it can (constant weights aside).
pub fn consumer_blocker(op: &Op, has_offset: bool) -> Option<String> {
    match op {
        Op::Conv(c) if has_offset && c.pads != [0; 4] => Some(format!(
            "the offset cannot fold into Conv with pads={:?}: its padding zeros are not shifted",
            c.pads
        )),
        Op::Gemm(g) if g.trans_a => Some("the Gemm reads its input transposed".to_string()),
        Op::Conv(_) | Op::Gemm(_) => None,
        _ => Some("not a Conv or Gemm".to_string()),
    }
}

/// Adds `L'(x)` (or `Gemm'(Flatten(x))`) for the linear e-node `node` and the affine
/// before it; `None` where the fold does not apply.
fn fold_into_consumer(egraph: &mut IrEGraph, node: &IrLang, b: &Before) -> Option<Id> {
    let ch = node.children();
    let entry = attr_of(egraph, ch[0]).clone();
    let a = &b.affine;
    if consumer_blocker(&entry.op, a.has_offset()).is_some() {
        return None;
    }
    let w = const_of(egraph, ch[2])?.clone();
    let bias = match ch.get(3) {
        Some(&c) => Some(const_of(egraph, c)?.clone()),
        None => None,
    };
    let wd = w.tensor.as_f32()?;
    let ws = w.tensor.shape().to_vec();
    let w_name = format!("{}+{}", w.name, a.name);
    let b_name = match &bias {
        Some(c) => format!("{}+{}", c.name, a.name),
        None => format!("{}.folded_bias", a.name),
    };
    let x = match &b.flatten {
        Some(r) => add_op(egraph, r.name.clone(), r.op.clone(), &[b.x])?,
        None => b.x,
    };
    match &entry.op {
        Op::Conv(c) => {
            let (w2, delta) = conv_weights(c, &ws, wd, a)?;
            let w_id = add_constant(egraph, w_name, Tensor::f32(ws.clone(), w2).ok()?);
            let mut inputs = vec![x, w_id];
            if a.has_offset() {
                let old = match &bias {
                    Some(c) => c.tensor.as_f32()?.to_vec(),
                    None => vec![0.0; ws[0]],
                };
                let b2: Vec<f32> = old.iter().zip(&delta).map(|(b, d)| b + d).collect();
                inputs.push(add_constant(egraph, b_name, Tensor::f32([ws[0]], b2).ok()?));
            } else if let Some(&c) = ch.get(3) {
                inputs.push(c);
            }
            add_op(egraph, entry.name, entry.op.clone(), &inputs)
        }
        Op::Gemm(g) => {
            if ws.len() != 2 {
                return None;
            }
            let m = egraph[x].data.value().ty.shape[0];
            let (kdim, n) = if g.trans_b {
                (ws[1], ws[0])
            } else {
                (ws[0], ws[1])
            };
            if a.channels() != kdim {
                return None;
            }
            // op(B)[k, j] is B[j, k] with trans_b, else B[k, j].
            let at = |k: usize, j: usize| if g.trans_b { j * kdim + k } else { k * n + j };
            let mut w2 = wd.to_vec();
            for k in 0..kdim {
                for j in 0..n {
                    w2[at(k, j)] *= a.k[k];
                }
            }
            let w_id = add_constant(egraph, w_name, Tensor::f32(ws.clone(), w2).ok()?);
            if !a.has_offset() {
                let mut inputs = vec![x, w_id];
                inputs.extend_from_slice(&ch[3..]);
                return add_op(egraph, entry.name, entry.op.clone(), &inputs);
            }
            let d: Vec<f32> = (0..n)
                .map(|j| g.alpha * (0..kdim).map(|k| a.shift[k] * wd[at(k, j)]).sum::<f32>())
                .collect();
            let c = bias.as_ref().filter(|_| g.beta != 0.0);
            let (rows, bc) = beta_c(g, c, m, n)?;
            let c2: Vec<f32> = bc.iter().enumerate().map(|(i, v)| v + d[i % n]).collect();
            let shape = if rows == 1 { vec![n] } else { vec![m, n] };
            let c_id = add_constant(egraph, b_name, Tensor::f32(shape, c2).ok()?);
            let g2 = Gemm { beta: 1.0, ..*g };
            add_op(egraph, entry.name, Op::Gemm(g2), &[x, w_id, c_id])
        }
        _ => None,
    }
}

/// A Conv's weights `[O, I/group, kH, kW]` with input channel `i` scaled by `k[i]`, and
/// per output channel `Σ w · shift` over its input channels and taps (the original
/// weights).
fn conv_weights(c: &Conv, ws: &[usize], wd: &[f32], a: &Affine) -> Option<(Vec<f32>, Vec<f32>)> {
    if ws.len() != 4 || c.group == 0 {
        return None;
    }
    let (o, per_group_in) = (ws[0], ws[1]);
    let taps = ws[2] * ws[3];
    if a.channels() != per_group_in * c.group || o % c.group != 0 {
        return None;
    }
    let out_per_group = o / c.group;
    let mut w2 = wd.to_vec();
    let mut delta = vec![0.0f32; o];
    for (idx, w) in w2.iter_mut().enumerate() {
        let oc = idx / (per_group_in * taps);
        let i = (idx / taps) % per_group_in;
        let ci = (oc / out_per_group) * per_group_in + i;
        delta[oc] += *w * a.shift[ci];
        *w *= a.k[ci];
    }
    Some((w2, delta))
}

// ---- explaining what is left --------------------------------------------------------

/// An op left in the optimized graph that a fold might have removed, with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    /// The node's name.
    pub name: String,
    /// The op (`mul`, `batch_norm`, …).
    pub op: String,
    pub reason: String,
}

impl fmt::Display for Kept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.name, self.op, self.reason)
    }
}

/// The per-channel affine ops left in an optimized graph, with why neither fold took
/// them: binary ops with one constant operand (`.0`) and BatchNorms (`.1`), in
/// canonical order. Mirrors the conditions of the rules above and of `bn-fold`.
pub fn explain_kept(graph: &Graph) -> (Vec<Kept>, Vec<Kept>) {
    let mut affine = vec![];
    let mut bns = vec![];
    for id in graph.topo_order() {
        let node = graph.node(id);
        let ins = graph.node_inputs(id);
        let kept = |reason: String| Kept {
            name: node.name.clone(),
            op: node.op.name().to_string(),
            reason,
        };
        match &node.op {
            Op::Binary(op) => {
                let (x, c, x_lhs) = match (graph.constant(ins[0]), graph.constant(ins[1])) {
                    (None, Some(c)) => (ins[0], c, true),
                    (Some(c), None) => (ins[1], c, false),
                    _ => continue,
                };
                let shape = &graph.node(x).ty.shape;
                match binary_affine(*op, x_lhs, shape, c, &node.name) {
                    Ok(a) => affine.push(kept(why_kept(graph, id, x, a.has_offset()))),
                    Err(NotAffine::Reciprocal | NotAffine::NonLinear) => {}
                    Err(e) => affine.push(kept(e.to_string())),
                }
            }
            Op::BatchNorm { epsilon } => {
                let p: Option<Vec<&[f32]>> = ins[1..]
                    .iter()
                    .map(|&i| graph.constant(i).and_then(Tensor::as_f32))
                    .collect();
                let reason = match p.as_deref() {
                    Some(&[s, b, m, v]) => {
                        let a = Affine::from_batch_norm(*epsilon, [s, b, m, v], &node.name);
                        why_kept(graph, id, ins[0], a.has_offset())
                    }
                    _ => "its parameters are not constants".to_string(),
                };
                bns.push(kept(reason));
            }
            _ => {}
        }
    }
    (affine, bns)
}

/// Why the affine node `id` over `x` folded neither backwards nor forwards.
fn why_kept(graph: &Graph, id: NodeId, x: NodeId, has_offset: bool) -> String {
    let is_output = |n: NodeId| graph.outputs().iter().any(|o| o.node == n);
    let single_reader = |n: NodeId| graph.users(n).len() == 1 && !is_output(n);
    let readers = |n: NodeId| {
        if is_output(n) {
            "is a graph output"
        } else {
            "has other readers"
        }
    };
    let has_const_weights = |n: NodeId| {
        let ins = graph.node_inputs(n);
        ins.len() > 1 && ins[1..].iter().all(|&w| graph.constant(w).is_some())
    };
    let p = graph.node(x);
    let producer = match &p.op {
        Op::Conv(Conv { activation, .. }) | Op::Gemm(Gemm { activation, .. })
            if activation.is_some() =>
        {
            format!("producer {} has a fused activation", p.name)
        }
        Op::Conv(_) | Op::Gemm(_) | Op::MatMul if !single_reader(x) => {
            format!("producer {}'s output {}", p.name, readers(x))
        }
        Op::Conv(_) | Op::Gemm(_) | Op::MatMul if !has_const_weights(x) => {
            format!("producer {}'s weights or bias are not constants", p.name)
        }
        Op::Conv(_) | Op::Gemm(_) | Op::MatMul => {
            format!("producer {}'s channels do not match", p.name)
        }
        _ => "no linear producer".to_string(),
    };
    let consumer = (|| {
        if !single_reader(id) {
            return format!("its output {}", readers(id));
        }
        let mut u = graph.users(id)[0];
        if matches!(graph.node(u).op, Op::Reshape { .. })
            && single_reader(u)
            && matches!(graph.node(graph.users(u)[0]).op, Op::Gemm(_))
        {
            u = graph.users(u)[0];
        }
        let c = graph.node(u);
        if !matches!(c.op, Op::Conv(_) | Op::Gemm(_)) {
            return "no linear consumer".to_string();
        }
        if let Some(why) = consumer_blocker(&c.op, has_offset) {
            return format!("consumer {}: {why}", c.name);
        }
        if !has_const_weights(u) {
            return format!("consumer {}'s weights or bias are not constants", c.name);
        }
        format!("consumer {}: shapes do not match", c.name)
    })();
    format!("{producer}; {consumer}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::f32(shape, v.to_vec()).unwrap()
    }

    #[test]
    fn per_channel_constants() {
        let x = [1, 3, 4, 4];
        let c = |s: &[usize], v: &[f32]| per_channel(&x, &t(s, v));
        assert_eq!(c(&[], &[2.0]), Some(vec![2.0; 3]));
        assert_eq!(c(&[3, 1, 1], &[1.0, 2.0, 3.0]), Some(vec![1.0, 2.0, 3.0]));
        assert_eq!(
            c(&[1, 3, 1, 1], &[1.0, 2.0, 3.0]),
            Some(vec![1.0, 2.0, 3.0])
        );
        // Varies along the width, or broadcasts x to a larger batch.
        assert_eq!(c(&[4], &[1.0; 4]), None);
        assert_eq!(c(&[2, 3, 1, 1], &[1.0; 6]), None);
        assert_eq!(
            per_channel(&[2, 5], &t(&[5], &[1.0; 5])),
            Some(vec![1.0; 5])
        );
    }

    #[test]
    fn binary_ops_as_affines() {
        let c = t(&[2, 1, 1], &[2.0, 4.0]);
        let x = [1, 2, 3, 3];
        let a = |op, lhs| binary_affine(op, lhs, &x, &c, "n");
        let sub = a(BinaryOp::Sub, false).unwrap();
        assert_eq!((sub.k, sub.shift), (vec![-1.0; 2], vec![2.0, 4.0]));
        let div = a(BinaryOp::Div, true).unwrap();
        assert_eq!((div.k, div.shift), (vec![0.5, 0.25], vec![0.0; 2]));
        assert_eq!(a(BinaryOp::Div, false).unwrap_err(), NotAffine::Reciprocal);
        let zero = t(&[], &[0.0]);
        assert_eq!(
            binary_affine(BinaryOp::Div, true, &x, &zero, "n").unwrap_err(),
            NotAffine::DivisionByZero
        );
    }
}
