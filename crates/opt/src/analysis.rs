//! The facts rules rely on, kept per e-class by an egg [`Analysis`], and the tables that
//! leaves refer to.
//!
//! Every value e-class knows its tensor type (element type and shape, from
//! [`lutq_ir::infer`]), whether it is a constant (and which), and whether the tensor is
//! *shared*: read by more than one consumer (or read and also a graph output) in the
//! graph that was translated. Sharing is a property of the tensor, not of an e-node, so it
//! survives merges (it is or-ed): rules that rewrite a producer together with its only
//! consumer (BatchNorm folding, activation fusion) check it on the producer's class.

use std::collections::HashMap;

use egg::{Analysis, DidMerge, EGraph, Id, Language as _};
use lutq_ir::{Op, Tensor, TensorType};

use crate::lang::{AttrId, ConstId, InputId, IrLang};

/// The e-graph of this crate.
pub type IrEGraph = EGraph<IrLang, IrAnalysis>;

/// A constant tensor and its name.
#[derive(Clone, Debug)]
pub struct ConstEntry {
    pub name: String,
    pub tensor: Tensor,
}

/// An op with all its attributes (never `Input` or `Constant`) and the node's name.
#[derive(Clone, Debug)]
pub struct AttrEntry {
    pub name: String,
    pub op: Op,
}

/// What the leaves refer to. Entries are interned: adding an equal entry again returns
/// the existing index, so a rule that recomputes the same folded weights on a later
/// iteration adds nothing new and the e-graph saturates.
#[derive(Debug, Default)]
pub struct Tables {
    pub inputs: Vec<(String, TensorType)>,
    consts: Vec<ConstEntry>,
    const_index: HashMap<(String, u32), Vec<ConstId>>,
    attrs: Vec<AttrEntry>,
    attr_index: HashMap<String, AttrId>,
}

impl Tables {
    pub fn constant(&self, id: ConstId) -> &ConstEntry {
        &self.consts[id.index()]
    }

    pub fn attr(&self, id: AttrId) -> &AttrEntry {
        &self.attrs[id.index()]
    }

    /// Interns a constant by name and contents, compared bit for bit: with `==` a
    /// tensor holding a NaN would never equal itself, every rule recomputing a folded
    /// constant from it would add a new leaf, and the e-graph would grow without end
    /// (a depthwise Conv with a NaN bias and five constant Adds reached 200 000 e-nodes:
    /// `fuzz/regressions/onnx_graph/timeout-cf92…`).
    pub fn intern_constant(&mut self, name: String, tensor: Tensor) -> ConstId {
        let key = (name, tensor.summary().hash);
        let candidates = self.const_index.entry(key.clone()).or_default();
        if let Some(&id) = candidates
            .iter()
            .find(|&&id| same_bits(&self.consts[id.index()].tensor, &tensor))
        {
            return id;
        }
        let id = ConstId(self.consts.len() as u32);
        candidates.push(id);
        self.consts.push(ConstEntry {
            name: key.0,
            tensor,
        });
        id
    }

    /// Interns an op's attributes by name, op and attribute text (which prints every
    /// attribute exactly).
    pub fn intern_attr(&mut self, name: String, op: Op) -> AttrId {
        debug_assert!(!matches!(op, Op::Input | Op::Constant(_)));
        let key = format!("{}{}\u{0}{name}", op.name(), op.attrs_text());
        if let Some(&id) = self.attr_index.get(&key) {
            return id;
        }
        let id = AttrId(self.attrs.len() as u32);
        self.attr_index.insert(key, id);
        self.attrs.push(AttrEntry { name, op });
        id
    }
}

/// Whether two tensors have the same element type, shape and contents bit for bit (NaN
/// equals itself, `-0.0` differs from `0.0`).
fn same_bits(a: &Tensor, b: &Tensor) -> bool {
    use lutq_ir::TensorData;
    a.shape() == b.shape()
        && match (a.data(), b.data()) {
            (TensorData::F32(x), TensorData::F32(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
            }
            (x, y) => x == y,
        }
}

/// Facts about one e-class.
#[derive(Clone, Debug, PartialEq)]
pub enum Facts {
    /// An attribute leaf.
    Attr(AttrId),
    /// A tensor.
    Value(ValueFacts),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ValueFacts {
    pub ty: TensorType,
    /// The constant this class holds, if any.
    pub konst: Option<ConstId>,
    /// Read by more than one consumer (see the module doc).
    pub shared: bool,
}

impl Facts {
    /// The tensor facts; panics on an attribute class (a rule bug: patterns put
    /// attributes only in the first child of an op).
    pub fn value(&self) -> &ValueFacts {
        match self {
            Facts::Value(v) => v,
            Facts::Attr(a) => panic!("attribute {a} used as a tensor"),
        }
    }
}

/// The analysis: owns the tables, computes [`Facts`].
#[derive(Debug, Default)]
pub struct IrAnalysis {
    pub tables: Tables,
}

impl Analysis<IrLang> for IrAnalysis {
    type Data = Facts;

    fn make(egraph: &mut IrEGraph, enode: &IrLang, _id: Id) -> Facts {
        let tables = &egraph.analysis.tables;
        match enode {
            IrLang::Attr(a) => Facts::Attr(*a),
            IrLang::Const(c) => Facts::Value(ValueFacts {
                ty: tables.constant(*c).tensor.ty(),
                konst: Some(*c),
                shared: false,
            }),
            IrLang::Input(i) => Facts::Value(ValueFacts {
                ty: tables.inputs[i.index()].1.clone(),
                konst: None,
                shared: false,
            }),
            op => {
                let children = op.children();
                let entry = attr_of(egraph, children[0]);
                let types: Vec<&TensorType> = children[1..]
                    .iter()
                    .map(|&c| &egraph[c].data.value().ty)
                    .collect();
                let ty = lutq_ir::infer::infer(&entry.op, &types).unwrap_or_else(|e| {
                    panic!("lutq bug: a rule built an ill-typed '{}': {e}", entry.name)
                });
                Facts::Value(ValueFacts {
                    ty,
                    konst: None,
                    shared: false,
                })
            }
        }
    }

    fn merge(&mut self, to: &mut Facts, from: Facts) -> DidMerge {
        match (to, from) {
            (Facts::Value(to), Facts::Value(from)) => {
                debug_assert_eq!(to.ty, from.ty, "merged tensors of different types");
                let mut changed = DidMerge(false, false);
                if to.konst.is_none() && from.konst.is_some() {
                    to.konst = from.konst;
                    changed.0 = true;
                } else if from.konst.is_none() && to.konst.is_some() {
                    changed.1 = true;
                }
                if to.shared != from.shared {
                    changed.0 |= !to.shared;
                    changed.1 |= !from.shared;
                    to.shared = true;
                }
                changed
            }
            (to, from) => {
                assert_eq!(
                    *to, from,
                    "lutq bug: an attribute merged with another class"
                );
                DidMerge(false, false)
            }
        }
    }
}

/// The attribute entry of an op's first child.
pub fn attr_of(egraph: &IrEGraph, class: Id) -> &AttrEntry {
    match egraph[class].data {
        Facts::Attr(a) => egraph.analysis.tables.attr(a),
        Facts::Value(_) => panic!("lutq bug: first child of an op is not an attribute"),
    }
}

/// The constant a class holds, if any.
pub fn const_of(egraph: &IrEGraph, class: Id) -> Option<&ConstEntry> {
    let k = egraph[class].data.value().konst?;
    Some(egraph.analysis.tables.constant(k))
}

/// Adds a constant leaf.
pub fn add_constant(egraph: &mut IrEGraph, name: String, tensor: Tensor) -> Id {
    let c = egraph.analysis.tables.intern_constant(name, tensor);
    egraph.add(IrLang::Const(c))
}

/// Adds the e-node of `op` (named `name`) over `inputs`, after checking that it is well
/// typed; `None` if it is not (the caller's rule then does not fire).
pub fn add_op(egraph: &mut IrEGraph, name: String, op: Op, inputs: &[Id]) -> Option<Id> {
    let types: Vec<&TensorType> = inputs.iter().map(|&i| &egraph[i].data.value().ty).collect();
    lutq_ir::infer::infer(&op, &types).ok()?;
    let op_name = op.name();
    let a = egraph.analysis.tables.intern_attr(name, op);
    let attr = egraph.add(IrLang::Attr(a));
    let children: Vec<Id> = std::iter::once(attr)
        .chain(inputs.iter().copied())
        .collect();
    let node = <IrLang as egg::FromOp>::from_op(op_name, children)
        .expect("every op name is in the language");
    Some(egraph.add(node))
}

/// The input id of a graph input leaf (for [`crate::translate`]).
pub fn input_leaf(k: usize) -> IrLang {
    IrLang::Input(InputId(k as u32))
}
