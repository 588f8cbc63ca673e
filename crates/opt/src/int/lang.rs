//! The integer e-graph language: one e-node per [`IntOp`], plus an attribute leaf.
//!
//! Every op e-node's first child is an [`IntLang::Attr`] leaf: an index into the
//! attribute table ([`super::analysis::IntTables`]) holding the exact [`IntOp`] (with all
//! its parameters: weights, rescales, clamps), the node's output [`QType`] and name. The
//! remaining children are the op's inputs in slot order. Patterns read like the dump:
//! `(requant ?q (linear ?p ?x))`.
//!
//! [`IntOp`]: lutq_ir::int::IntOp
//! [`QType`]: lutq_ir::int::QType

use std::fmt;
use std::str::FromStr;

use egg::{Id, define_language};
use lutq_ir::int::IntOp;

/// Index into the integer attribute table; printed `a0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IntAttrId(pub u32);

impl IntAttrId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for IntAttrId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a{}", self.0)
    }
}

impl FromStr for IntAttrId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        s.strip_prefix('a')
            .and_then(|n| n.parse().ok())
            .map(IntAttrId)
            .ok_or(())
    }
}

define_language! {
    /// The integer IR's ops as e-nodes. Conv and dense layers are both `linear` (one
    /// [`IntOp::Linear`]); the other operator strings are [`IntOp::name`].
    pub enum IntLang {
        "quantize_input" = QuantizeInput(Box<[Id]>),
        "linear" = Linear(Box<[Id]>),
        "add" = Add(Box<[Id]>),
        "concat" = Concat(Box<[Id]>),
        "max_pool" = MaxPool(Box<[Id]>),
        "sum_pool" = SumPool(Box<[Id]>),
        "requant" = Requant(Box<[Id]>),
        "reshape" = Reshape(Box<[Id]>),
        "table" = Table(Box<[Id]>),
        "mul" = Mul(Box<[Id]>),
        "softmax" = Softmax(Box<[Id]>),
        "transpose" = Transpose(Box<[Id]>),
        "slice" = Slice(Box<[Id]>),
        "resize" = Resize(Box<[Id]>),
        "max" = Max(Box<[Id]>),
        "min" = Min(Box<[Id]>),
        Attr(IntAttrId),
    }
}

impl IntLang {
    /// Whether this is an op e-node (not an attribute leaf).
    pub fn is_op(&self) -> bool {
        !matches!(self, IntLang::Attr(_))
    }
}

/// The operator string of `op`'s e-node.
pub fn operator(op: &IntOp) -> &'static str {
    match op {
        IntOp::Linear(_) => "linear",
        op => op.name(),
    }
}

#[cfg(test)]
mod tests {
    use egg::FromOp;
    use lutq_ir::Pool;
    use lutq_ir::int::{QAdd, Rescale};

    use super::*;

    #[test]
    fn every_op_has_an_e_node() {
        let ops = [
            IntOp::QuantizeInput { input: 0 },
            IntOp::Add(QAdd {
                align_a: 0,
                align_b: 0,
                shift: 0,
                lo: 0,
                hi: 0,
            }),
            IntOp::Concat {
                axis: 1,
                shifts: vec![],
            },
            IntOp::MaxPool(Pool::new([2, 2])),
            IntOp::SumPool {
                pool: Pool::new([2, 2]),
                shift: 0,
                lo: 0,
                hi: 0,
            },
            IntOp::Requant {
                rescale: Rescale::Shift(0),
                lo: 0,
                hi: 0,
            },
            IntOp::Reshape,
            IntOp::Table(lutq_ir::int::QTable { entries: vec![] }),
            IntOp::Mul(lutq_ir::int::QMul {
                shift: 0,
                lo: 0,
                hi: 0,
            }),
            IntOp::Softmax(lutq_ir::int::QSoftmax {
                axis: 1,
                exp_table: vec![],
            }),
            IntOp::Transpose { perm: vec![] },
            IntOp::Slice {
                axis: 1,
                start: 0,
                step: 1,
            },
            IntOp::Resize(lutq_ir::int::QResize {
                rows: vec![],
                cols: vec![],
                frac: 0,
            }),
            IntOp::Extremum {
                kind: lutq_ir::int::Extremum::Max,
                shifts: vec![],
            },
            IntOp::Extremum {
                kind: lutq_ir::int::Extremum::Min,
                shifts: vec![],
            },
        ];
        for op in ops {
            let node = IntLang::from_op(operator(&op), vec![Id::from(0usize)]).unwrap();
            assert!(node.is_op());
            assert_eq!(node.to_string(), operator(&op));
        }
        assert_eq!(
            IntLang::from_op("a7", vec![]).unwrap(),
            IntLang::Attr(IntAttrId(7))
        );
    }
}
