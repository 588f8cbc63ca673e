//! Folding inference-mode BatchNorm into the linear op before it.

use egg::{Applier, Id, Language as _, PatternAst, Rewrite, Subst, Symbol, Var};
use lutq_ir::{BinaryOp, Gemm, Graph, NodeId, Op, Tensor};

use super::Rule;
use crate::analysis::{AttrEntry, IrAnalysis, IrEGraph, add_constant, add_op, attr_of, const_of};
use crate::lang::IrLang;

/// The BatchNorm rules:
///
/// * `bn-fold`: `BatchNorm(L(x))`, with `L` a Conv, a Gemm or a MatMul of a 2-D input
///   by constant 2-D weights, becomes one linear op with folded weights and bias:
///   with `k = scale / sqrt(var + ε)` per output channel, `w' = w · k` (per output
///   channel), `b' = (b − mean) · k + bias` (`b = 0` where `L` had none: a bias is
///   added). A Gemm keeps `alpha` and `trans_a`/`trans_b` and gets `beta = 1` (its C is
///   folded as `beta · C`); a MatMul becomes a Gemm.
///
/// It does not fire when `L`'s output has other readers: they need it unnormalised, so
/// the graph would have to keep `L` and compute a folded copy beside it (in an e-graph the
/// fold stays an equivalence, so the cost would be duplicated work, not a wrong result),
/// when `L` already carries an activation, or when any weight, bias or statistic is not
/// a constant. A BatchNorm without a linear producer folds forward into the Conv or Gemm
/// after it where that is exact (`bn-fold-forward`, [`super::affine`]); otherwise it is
/// left in place and listed in [`crate::OptReport::unfolded_batch_norms`] with the reason.
pub fn rules() -> Vec<Rule> {
    let pattern: egg::Pattern<IrLang> = "(batch_norm ?a ?y ?scale ?bias ?mean ?var)"
        .parse()
        .expect("a valid pattern");
    vec![Rewrite::new("bn-fold", pattern, BnFold::new()).unwrap()]
}

struct BnFold {
    a: Var,
    y: Var,
    params: [Var; 4],
}

impl BnFold {
    fn new() -> Self {
        let v = |s: &str| s.parse().unwrap();
        BnFold {
            a: v("?a"),
            y: v("?y"),
            params: [v("?scale"), v("?bias"), v("?mean"), v("?var")],
        }
    }
}

/// A per-channel affine `y · k[c] + shift[c]` over channel axis 1 (a BatchNorm, or a
/// constant Mul/Div/Add/Sub, see [`super::affine`]), named after the op it replaces.
#[derive(Clone, Debug)]
pub(crate) struct Affine {
    pub k: Vec<f32>,
    pub shift: Vec<f32>,
    pub name: String,
}

impl Affine {
    fn from_match(egraph: &IrEGraph, bn: &BnFold, subst: &Subst) -> Option<Affine> {
        let entry = attr_of(egraph, subst[bn.a]);
        let p: Vec<Id> = bn.params.iter().map(|&v| subst[v]).collect();
        Affine::batch_norm(egraph, entry, &p)
    }

    /// The affine of a BatchNorm `entry` with parameter classes `[scale, bias, mean,
    /// var]`, in the interpreter's arithmetic; `None` unless all are f32 constants.
    pub fn batch_norm(egraph: &IrEGraph, entry: &AttrEntry, params: &[Id]) -> Option<Affine> {
        let Op::BatchNorm { epsilon } = entry.op else {
            return None;
        };
        let p: Vec<&[f32]> = params
            .iter()
            .map(|&v| const_of(egraph, v)?.tensor.as_f32())
            .collect::<Option<_>>()?;
        let [scale, bias, mean, var] = p[..] else {
            return None;
        };
        Some(Affine::from_batch_norm(
            epsilon,
            [scale, bias, mean, var],
            &entry.name,
        ))
    }

    /// `k = scale / sqrt(var + ε)`, `shift = bias − mean · k`.
    pub fn from_batch_norm(epsilon: f32, p: [&[f32]; 4], name: &str) -> Affine {
        let [scale, bias, mean, var] = p;
        let k: Vec<f32> = (0..scale.len())
            .map(|c| scale[c] / (var[c] + epsilon).sqrt())
            .collect();
        let shift = (0..scale.len()).map(|c| bias[c] - mean[c] * k[c]).collect();
        Affine {
            k,
            shift,
            name: name.to_string(),
        }
    }

    pub fn channels(&self) -> usize {
        self.k.len()
    }

    /// Whether every offset is zero (a pure scaling).
    pub fn has_offset(&self) -> bool {
        self.shift.iter().any(|&s| s != 0.0)
    }
}

impl Applier<IrLang, IrAnalysis> for BnFold {
    fn apply_one(
        &self,
        egraph: &mut IrEGraph,
        class: Id,
        subst: &Subst,
        _: Option<&PatternAst<IrLang>>,
        _: Symbol,
    ) -> Vec<Id> {
        let y = subst[self.y];
        if egraph[y].data.value().shared {
            return vec![];
        }
        let Some(affine) = Affine::from_match(egraph, self, subst) else {
            return vec![];
        };
        let producers: Vec<IrLang> = egraph[y]
            .nodes
            .iter()
            .filter(|n| matches!(n, IrLang::Conv(_) | IrLang::Gemm(_) | IrLang::MatMul(_)))
            .cloned()
            .collect();
        let mut changed = vec![];
        for node in producers {
            if let Some(folded) = fold(egraph, &affine, y, &node)
                && egraph.union(class, folded)
            {
                changed.push(folded);
            }
        }
        changed
    }
}

/// The folded e-node for one producer `node` of `y` (a Conv, Gemm or MatMul without an
/// activation), added to the e-graph; `None` where the fold does not apply.
pub(crate) fn fold(egraph: &mut IrEGraph, bn: &Affine, y: Id, node: &IrLang) -> Option<Id> {
    let children = node.children();
    let entry = attr_of(egraph, children[0]).clone();
    match &entry.op {
        Op::Conv(c) if c.activation.is_none() => {
            let w = const_of(egraph, children[2])?.clone();
            let b = match children.get(3) {
                Some(&b) => Some(const_of(egraph, b)?.clone()),
                None => None,
            };
            let wd = w.tensor.as_f32()?;
            let m = w.tensor.shape()[0];
            if bn.channels() != m {
                return None;
            }
            let per = wd.len() / m;
            let w2: Vec<f32> = wd
                .iter()
                .enumerate()
                .map(|(i, &v)| v * bn.k[i / per])
                .collect();
            let bias = |c: usize| {
                b.as_ref()
                    .map_or(Some(0.0), |b| Some(b.tensor.as_f32()?[c]))
            };
            let b2: Vec<f32> = (0..m)
                .map(|c| Some(bias(c)? * bn.k[c] + bn.shift[c]))
                .collect::<Option<_>>()?;
            let w2 = Tensor::f32(w.tensor.shape(), w2).ok()?;
            let b2 = Tensor::f32([m], b2).ok()?;
            let b_name = match &b {
                Some(b) => format!("{}+{}", b.name, bn.name),
                None => format!("{}.folded_bias", bn.name),
            };
            let w_id = add_constant(egraph, format!("{}+{}", w.name, bn.name), w2);
            let b_id = add_constant(egraph, b_name, b2);
            add_op(egraph, entry.name, entry.op, &[children[1], w_id, b_id])
        }
        Op::Gemm(g) if g.activation.is_none() => {
            let c = match children.get(3) {
                Some(&c) => Some(const_of(egraph, c)?.clone()),
                None => None,
            };
            let c = c.filter(|_| g.beta != 0.0);
            fold_gemm(egraph, bn, y, g, &entry.name, children[1], children[2], c)
        }
        Op::MatMul if egraph[children[1]].data.value().ty.rank() == 2 => {
            let g = Gemm::default();
            fold_gemm(
                egraph,
                bn,
                y,
                &g,
                &entry.name,
                children[1],
                children[2],
                None,
            )
        }
        _ => None,
    }
}

/// Folds into `alpha · op(A) · op(B) + beta · C`: column `j` of `op(B)` scaled by
/// `k[j]`, `C' = (beta · C − mean) · k + bias` (shape `[N]`, or `[M, N]` where C has
/// rows), `beta' = 1`.
#[allow(clippy::too_many_arguments)]
fn fold_gemm(
    egraph: &mut IrEGraph,
    bn: &Affine,
    y: Id,
    g: &Gemm,
    name: &str,
    a: Id,
    b: Id,
    c: Option<crate::analysis::ConstEntry>,
) -> Option<Id> {
    let out = egraph[y].data.value().ty.shape.clone();
    let (m, n) = (out[0], out[1]);
    if bn.channels() != n {
        return None;
    }
    let b = const_of(egraph, b)?.clone();
    let bd = b.tensor.as_f32()?;
    let bs = b.tensor.shape();
    if bs.len() != 2 {
        return None;
    }
    let cols = bs[1];
    let b2: Vec<f32> = bd
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let j = if g.trans_b { i / cols } else { i % cols };
            v * bn.k[j]
        })
        .collect();
    let b2 = Tensor::f32(bs, b2).ok()?;

    let (rows, beta_c) = beta_c(g, c.as_ref(), m, n)?;
    let c2: Vec<f32> = (0..rows * n)
        .map(|i| {
            let j = i % n;
            beta_c[i] * bn.k[j] + bn.shift[j]
        })
        .collect();
    let c_shape = if rows == 1 { vec![n] } else { vec![m, n] };
    let c2 = Tensor::f32(c_shape, c2).ok()?;
    let c_name = match &c {
        Some(c) => format!("{}+{}", c.name, bn.name),
        None => format!("{}.folded_bias", bn.name),
    };
    let b_id = add_constant(egraph, format!("{}+{}", b.name, bn.name), b2);
    let c_id = add_constant(egraph, c_name, c2);
    let g2 = Gemm { beta: 1.0, ..*g };
    add_op(egraph, name.to_string(), Op::Gemm(g2), &[a, b_id, c_id])
}

/// `beta · C` of a Gemm with output `[m, n]`, broadcast to `rows × n` (`rows` = 1 where
/// C has no rows, else `m`), row-major; zeros where there is no C.
pub(crate) fn beta_c(
    g: &Gemm,
    c: Option<&crate::analysis::ConstEntry>,
    m: usize,
    n: usize,
) -> Option<(usize, Vec<f32>)> {
    let Some(c) = c else {
        return Some((1, vec![0.0; n]));
    };
    let data = c.tensor.as_f32()?;
    let s = c.tensor.shape();
    let (r, cc) = match s.len() {
        0 => (1, 1),
        1 => (1, s[0]),
        _ => (s[s.len() - 2], s[s.len() - 1]),
    };
    let rows = if r == 1 { 1 } else { m };
    let out = (0..rows * n)
        .map(|k| {
            let (i, j) = (k / n, k % n);
            let (i, j) = (if r == 1 { 0 } else { i }, if cc == 1 { 0 } else { j });
            g.beta * data[i * cc + j]
        })
        .collect();
    Some((rows, out))
}

/// A BatchNorm that [`lower_unfolded`] rewrote, and the names of the two nodes it became.
pub(crate) struct LoweredBatchNorm {
    pub name: String,
    /// `Mul(x, k)`.
    pub mul: String,
    /// `Add(…, shift)`, under the BatchNorm's own name (its readers see the same name).
    pub add: String,
}

impl LoweredBatchNorm {
    /// Whether either half is among `names` (e.g. what [`fold_through_layout`] folded).
    pub(crate) fn any_half_in(&self, names: &[String]) -> bool {
        names.iter().any(|n| *n == self.mul || *n == self.add)
    }
}

/// After extraction: every BatchNorm left in `graph` (neither fold applied) with constant
/// parameters becomes the per-channel affine it computes, `Add(Mul(x, k), shift)` with `k`
/// and `shift` shaped `[1, C, 1, …]`. The quantizer has no BatchNorm of its own: an
/// element-wise Mul and Add with channel constants join the element-wise region around
/// them (with the ReLU after them, the bias Add before them) as one per-channel table.
/// Returns the BatchNorms rewritten.
pub(crate) fn lower_unfolded(graph: &mut Graph) -> Result<Vec<LoweredBatchNorm>, lutq_ir::IrError> {
    let mut lowered = Vec::new();
    for id in graph.topo_order() {
        let node = graph.node(id);
        let Op::BatchNorm { epsilon } = node.op else {
            continue;
        };
        let ins = graph.node_inputs(id);
        let params: Option<Vec<&[f32]>> = ins[1..]
            .iter()
            .map(|&i| graph.constant(i).and_then(Tensor::as_f32))
            .collect();
        let Some(&[s, b, m, v]) = params.as_deref() else {
            continue;
        };
        let (name, rank, x) = (node.name.clone(), node.ty.rank(), ins[0]);
        if rank < 2 {
            continue;
        }
        let a = Affine::from_batch_norm(epsilon, [s, b, m, v], &name);
        let mut shape = vec![1; rank];
        shape[1] = a.channels();
        let k = graph.add_constant(format!("{name}:k"), Tensor::f32(shape.clone(), a.k)?);
        let shift = graph.add_constant(format!("{name}:shift"), Tensor::f32(shape, a.shift)?);
        let lowered_bn = LoweredBatchNorm {
            mul: format!("{name}:scaled"),
            add: name.clone(),
            name,
        };
        let scaled = graph.add_node(lowered_bn.mul.clone(), Op::Binary(BinaryOp::Mul), &[x, k])?;
        let out = graph.add_node(
            lowered_bn.add.clone(),
            Op::Binary(BinaryOp::Add),
            &[scaled, shift],
        )?;
        graph.replace_all_uses(id, out)?;
        lowered.push(lowered_bn);
    }
    graph.remove_dead_nodes();
    Ok(lowered)
}

/// After [`lower_unfolded`]: a per-channel affine (constant Mul or Add, a lowered
/// BatchNorm's halves) whose input is assembled from Conv outputs by ops that keep every
/// element in its channel — Slice and Concat along a spatial axis, Reshape keeping
/// `[N, C, …]` — folds into those Convs (`w' = w·k`, `b' = b·k + shift` per output
/// channel), exactly: every element of the assembled tensor is one Conv's output, bias
/// included. This is the shape a transposed convolution imports as (one Conv per output
/// phase, interleaved), so its BatchNorm costs no per-channel table (256 bytes a channel)
/// and no extra rounding. Each Conv must have no activation, constant weights, and the
/// assembly as its only reader, and so must every op between. Returns the names folded.
pub(crate) fn fold_through_layout(graph: &mut Graph) -> Result<Vec<String>, lutq_ir::IrError> {
    let mut folded = Vec::new();
    loop {
        let mut changed = false;
        for id in graph.topo_order() {
            let node = graph.node(id);
            let Op::Binary(op) = node.op else { continue };
            if !matches!(op, BinaryOp::Mul | BinaryOp::Add) {
                continue;
            }
            let ins = graph.node_inputs(id);
            let (x, c, x_lhs) = match (graph.constant(ins[0]), graph.constant(ins[1])) {
                (None, Some(c)) => (ins[0], c, true),
                (Some(c), None) => (ins[1], c, false),
                _ => continue,
            };
            let shape = graph.node(x).ty.shape.clone();
            let Ok(a) = super::affine::binary_affine(op, x_lhs, &shape, c, &node.name) else {
                continue;
            };
            let mut leaves = Vec::new();
            if matches!(graph.node(x).op, Op::Conv(_)) || !layout_leaves(graph, x, &mut leaves) {
                // A Conv right under the affine is the e-graph rules' case.
                continue;
            }
            if leaves
                .iter()
                .any(|&l| a.channels() != 1 && graph.node(l).ty.shape[1] != a.channels())
            {
                continue;
            }
            let name = node.name.clone();
            for leaf in leaves {
                scale_conv(graph, leaf, &a)?;
            }
            graph.replace_all_uses(id, x)?;
            graph.remove_dead_nodes();
            folded.push(name);
            changed = true;
            break;
        }
        if !changed {
            return Ok(folded);
        }
    }
}

/// Whether `id` is assembled from Convs by channel-keeping layout ops, each read only by
/// the op above it; the Convs into `leaves`.
fn layout_leaves(graph: &Graph, id: NodeId, leaves: &mut Vec<NodeId>) -> bool {
    if graph.users(id).len() != 1 || graph.outputs().iter().any(|o| o.node == id) {
        return false;
    }
    let node = graph.node(id);
    let ins = graph.node_inputs(id);
    match &node.op {
        Op::Conv(conv) => {
            let constant = |k: usize| ins.get(k).is_none_or(|&i| graph.constant(i).is_some());
            let ok = conv.activation.is_none() && constant(1) && constant(2);
            if ok {
                leaves.push(id);
            }
            ok
        }
        Op::Slice { axis, .. } => *axis >= 2 && layout_leaves(graph, ins[0], leaves),
        Op::Concat { axis } => *axis >= 2 && ins.iter().all(|&i| layout_leaves(graph, i, leaves)),
        Op::Reshape { shape } => {
            let from = &graph.node(ins[0]).ty.shape;
            from.len() >= 2
                && shape.len() >= 2
                && from[..2] == shape[..2]
                && layout_leaves(graph, ins[0], leaves)
        }
        _ => false,
    }
}

/// Replaces Conv `id` by one with its output channels scaled and shifted by `a`.
fn scale_conv(graph: &mut Graph, id: NodeId, a: &Affine) -> Result<(), lutq_ir::IrError> {
    let node = graph.node(id).clone();
    let ins = graph.node_inputs(id);
    let w = graph.constant(ins[1]).expect("checked constant").clone();
    let out_channels = w.shape()[0];
    let mut wv = w.as_f32().unwrap_or(&[]).to_vec();
    let per_row = wv.len() / out_channels.max(1);
    let at = |v: &[f32], o: usize| if v.len() == 1 { v[0] } else { v[o] };
    for (o, row) in wv.chunks_mut(per_row.max(1)).enumerate() {
        for x in row {
            *x *= at(&a.k, o);
        }
    }
    let b: Vec<f32> = match ins.get(2) {
        Some(&i) => graph
            .constant(i)
            .and_then(Tensor::as_f32)
            .unwrap_or(&[])
            .to_vec(),
        None => vec![0.0; out_channels],
    };
    let b: Vec<f32> = (0..out_channels)
        .map(|o| b[o] * at(&a.k, o) + at(&a.shift, o))
        .collect();
    let wid = graph.add_constant(
        format!("{}:w+{}", node.name, a.name),
        Tensor::f32(w.shape().to_vec(), wv)?,
    );
    let bid = graph.add_constant(
        format!("{}:b+{}", node.name, a.name),
        Tensor::f32(vec![out_channels], b)?,
    );
    let new = graph.add_node(node.name.clone(), node.op.clone(), &[ins[0], wid, bid])?;
    graph.replace_all_uses(id, new)
}
