//! Facts the integer rules rely on, per e-class, and the attribute table.
//!
//! Every value e-class knows its [`QType`] (all e-nodes of a class produce the same
//! type: rules only merge equal types), a **value range** `[lo, hi]` that every element
//! provably lies in, and whether the value is *shared* (more than one reader, or a
//! reader and a graph output, in the translated graph).
//!
//! The range of an e-node is what its op guarantees: the clamp of a `linear`, `add`,
//! `sum_pool` or `requant`; the input's range for `reshape` (and for the maximum of a
//! `max_pool`, whose minimum is the type's: a window with no tap inside the input yields
//! it); the type's range otherwise. Every e-node of a class computes the same values, so
//! the class's range is the intersection over its e-nodes (merges intersect).
//! `identity-requant` and `align-add-operand` use it to prove that a clamp never binds.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hasher};

use egg::{Analysis, DidMerge, EGraph, Id, Language as _};
use lutq_ir::int::{IntOp, QType};

use super::lang::{IntAttrId, IntLang, operator};

/// The e-graph of the integer pass.
pub type IntEGraph = EGraph<IntLang, IntAnalysis>;

/// An op with all its parameters, its output type, its node name and its position in
/// the schedule (the index of the node it came from, or of the node a rewrite replaced).
#[derive(Clone, Debug)]
pub struct IntAttrEntry {
    pub name: String,
    pub op: IntOp,
    pub ty: QType,
    pub order: u32,
}

/// The attribute table. Entries are interned by name, op and type (the first `order`
/// wins), so a rule recomputing the same op adds nothing and the run saturates.
#[derive(Debug, Default)]
pub struct IntTables {
    attrs: Vec<IntAttrEntry>,
    index: HashMap<u64, Vec<IntAttrId>>,
}

/// Feeds `Debug` text into a hasher without allocating it.
struct HashWriter(DefaultHasher);

impl std::fmt::Write for HashWriter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.write(s.as_bytes());
        Ok(())
    }
}

impl IntTables {
    pub fn attr(&self, id: IntAttrId) -> &IntAttrEntry {
        &self.attrs[id.index()]
    }

    pub fn intern(&mut self, entry: IntAttrEntry) -> IntAttrId {
        let mut h = HashWriter(DefaultHasher::new());
        std::fmt::Write::write_fmt(
            &mut h,
            format_args!("{}\u{0}{:?}\u{0}{:?}", entry.name, entry.op, entry.ty),
        )
        .expect("hashing cannot fail");
        let key = h.0.finish();
        let candidates = self.index.entry(key).or_default();
        if let Some(&id) = candidates.iter().find(|&&id| {
            let e = &self.attrs[id.index()];
            e.name == entry.name && e.op == entry.op && e.ty == entry.ty
        }) {
            return id;
        }
        let id = IntAttrId(self.attrs.len() as u32);
        candidates.push(id);
        self.attrs.push(entry);
        id
    }
}

/// Facts about one e-class.
#[derive(Clone, Debug, PartialEq)]
pub enum IntFacts {
    Attr(IntAttrId),
    Value(ValueFacts),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ValueFacts {
    pub ty: QType,
    /// Every element lies in `[range.0, range.1]`.
    pub range: (i32, i32),
    /// Read by more than one consumer, or read and a graph output.
    pub shared: bool,
}

impl IntFacts {
    /// The value facts; panics on an attribute class (a rule bug).
    pub fn value(&self) -> &ValueFacts {
        match self {
            IntFacts::Value(v) => v,
            IntFacts::Attr(a) => panic!("lutq bug: attribute {a} used as a value"),
        }
    }
}

/// The analysis: owns the attribute table, computes [`IntFacts`].
#[derive(Debug, Default)]
pub struct IntAnalysis {
    pub tables: IntTables,
    /// The program's rounding: the fusion rules' bounds round as the program does.
    pub rounding: lutq_ir::int::Rounding,
}

/// The range an op guarantees for its output, given its inputs' ranges.
fn op_range(op: &IntOp, ty: &QType, inputs: &[(i32, i32)]) -> (i32, i32) {
    let (t_lo, t_hi) = ty.elem.range();
    let r = match op {
        IntOp::Linear(l) => (l.lo, l.hi),
        IntOp::Add(a) => (a.lo, a.hi),
        IntOp::SumPool { lo, hi, .. } | IntOp::Requant { lo, hi, .. } => (*lo, *hi),
        // A resize blends with non-negative weights summing to one: within its input's range.
        IntOp::Reshape | IntOp::Transpose { .. } | IntOp::Slice { .. } | IntOp::Resize(_) => {
            inputs[0]
        }
        IntOp::Table(t) => (
            t.entries.iter().copied().min().unwrap_or(t_lo),
            t.entries.iter().copied().max().unwrap_or(t_hi),
        ),
        IntOp::Mul(m) => (m.lo, m.hi),
        IntOp::Softmax(_) => (0, 255),
        IntOp::MaxPool(_) => (t_lo, inputs[0].1),
        IntOp::QuantizeInput { .. } | IntOp::Concat { .. } | IntOp::Extremum { .. } => (t_lo, t_hi),
    };
    // Stored values are saturated to the type in any case.
    (r.0.max(t_lo), r.1.min(t_hi))
}

impl Analysis<IntLang> for IntAnalysis {
    type Data = IntFacts;

    fn make(egraph: &mut IntEGraph, enode: &IntLang, _id: Id) -> IntFacts {
        match enode {
            IntLang::Attr(a) => IntFacts::Attr(*a),
            op => {
                let children = op.children();
                let entry = attr_of(egraph, children[0]);
                let ranges: Vec<(i32, i32)> = children[1..]
                    .iter()
                    .map(|&c| egraph[c].data.value().range)
                    .collect();
                IntFacts::Value(ValueFacts {
                    ty: entry.ty.clone(),
                    range: op_range(&entry.op, &entry.ty, &ranges),
                    shared: false,
                })
            }
        }
    }

    fn merge(&mut self, to: &mut IntFacts, from: IntFacts) -> DidMerge {
        match (to, from) {
            (IntFacts::Value(to), IntFacts::Value(from)) => {
                debug_assert_eq!(to.ty, from.ty, "lutq bug: merged values of different types");
                let range = (to.range.0.max(from.range.0), to.range.1.min(from.range.1));
                let shared = to.shared || from.shared;
                let changed = DidMerge(
                    range != to.range || shared != to.shared,
                    range != from.range || shared != from.shared,
                );
                to.range = range;
                to.shared = shared;
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
pub fn attr_of(egraph: &IntEGraph, class: Id) -> &IntAttrEntry {
    match egraph[class].data {
        IntFacts::Attr(a) => egraph.analysis.tables.attr(a),
        IntFacts::Value(_) => panic!("lutq bug: first child of an op is not an attribute"),
    }
}

/// Adds the e-node of `entry` over `inputs` and returns its class.
pub fn add_op(egraph: &mut IntEGraph, entry: IntAttrEntry, inputs: &[Id]) -> Id {
    let op_name = operator(&entry.op);
    let a = egraph.analysis.tables.intern(entry);
    let attr = egraph.add(IntLang::Attr(a));
    let children: Vec<Id> = std::iter::once(attr)
        .chain(inputs.iter().copied())
        .collect();
    let node = <IntLang as egg::FromOp>::from_op(op_name, children)
        .expect("every integer op is in the language");
    egraph.add(node)
}
