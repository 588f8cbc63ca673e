//! The e-graph language: one e-node per IR op, plus three kinds of leaves.
//!
//! Every op e-node's first child is an [`IrLang::Attr`] leaf: an index into the attribute
//! table ([`crate::analysis::Tables`]) holding the exact [`lutq_ir::Op`] (with all its
//! attributes) and the node's name. The remaining children are the op's inputs in slot
//! order. So extraction rebuilds exact ops, and patterns name the attribute as a
//! variable: `(identity ?a ?x)`, `(batch_norm ?a ?y ?scale ?bias ?mean ?var)`.
//!
//! Leaves: [`IrLang::Input`] (the k-th graph input), [`IrLang::Const`] (an entry of the
//! constant table) and [`IrLang::Attr`].

use std::fmt;
use std::str::FromStr;

use egg::{Id, define_language};

macro_rules! leaf_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u32);

        impl $name {
            pub fn index(self) -> usize {
                self.0 as usize
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                s.strip_prefix($prefix)
                    .and_then(|n| n.parse().ok())
                    .map($name)
                    .ok_or(())
            }
        }
    };
}

leaf_id!(
    /// Index of a graph input, in [`lutq_ir::Graph::inputs`] order; printed `in0`.
    InputId,
    "in"
);
leaf_id!(
    /// Index into the constant table; printed `c0`.
    ConstId,
    "c"
);
leaf_id!(
    /// Index into the attribute table; printed `a0`.
    AttrId,
    "a"
);

define_language! {
    /// The IR's ops as e-nodes. The operator strings are [`lutq_ir::Op::name`], so an op
    /// e-node is made with `IrLang::from_op(op.name(), children)`.
    pub enum IrLang {
        "conv" = Conv(Box<[Id]>),
        "batch_norm" = BatchNorm(Box<[Id]>),
        "relu" = Relu(Box<[Id]>),
        "clip" = Clip(Box<[Id]>),
        "leaky_relu" = LeakyRelu(Box<[Id]>),
        "hard_sigmoid" = HardSigmoid(Box<[Id]>),
        "hard_swish" = HardSwish(Box<[Id]>),
        "sigmoid" = Sigmoid(Box<[Id]>),
        "tanh" = Tanh(Box<[Id]>),
        "exp" = Exp(Box<[Id]>),
        "erf" = Erf(Box<[Id]>),
        "gelu" = Gelu(Box<[Id]>),
        "softplus" = Softplus(Box<[Id]>),
        "elu" = Elu(Box<[Id]>),
        "selu" = Selu(Box<[Id]>),
        "neg" = Neg(Box<[Id]>),
        "abs" = Abs(Box<[Id]>),
        "sqrt" = Sqrt(Box<[Id]>),
        "reciprocal" = Reciprocal(Box<[Id]>),
        "log" = Log(Box<[Id]>),
        "floor" = Floor(Box<[Id]>),
        "ceil" = Ceil(Box<[Id]>),
        "round" = Round(Box<[Id]>),
        "fake_quant" = FakeQuant(Box<[Id]>),
        "prelu" = PRelu(Box<[Id]>),
        "add" = Add(Box<[Id]>),
        "sub" = Sub(Box<[Id]>),
        "mul" = Mul(Box<[Id]>),
        "div" = Div(Box<[Id]>),
        "max" = Max(Box<[Id]>),
        "min" = Min(Box<[Id]>),
        "pow" = Pow(Box<[Id]>),
        "max_pool" = MaxPool(Box<[Id]>),
        "average_pool" = AveragePool(Box<[Id]>),
        "sum_pool" = SumPool(Box<[Id]>),
        "global_average_pool" = GlobalAveragePool(Box<[Id]>),
        "global_sum_pool" = GlobalSumPool(Box<[Id]>),
        "gemm" = Gemm(Box<[Id]>),
        "matmul" = MatMul(Box<[Id]>),
        "reshape" = Reshape(Box<[Id]>),
        "transpose" = Transpose(Box<[Id]>),
        "concat" = Concat(Box<[Id]>),
        "pad" = Pad(Box<[Id]>),
        "softmax" = Softmax(Box<[Id]>),
        "identity" = Identity(Box<[Id]>),
        "dropout" = Dropout(Box<[Id]>),
        "slice" = Slice(Box<[Id]>),
        "resize" = Resize(Box<[Id]>),
        Input(InputId),
        Const(ConstId),
        Attr(AttrId),
    }
}

impl IrLang {
    /// Whether this is an op e-node (not a leaf).
    pub fn is_op(&self) -> bool {
        !matches!(self, IrLang::Input(_) | IrLang::Const(_) | IrLang::Attr(_))
    }
}

#[cfg(test)]
mod tests {
    use egg::{FromOp, Id};
    use lutq_ir::{
        Activation, BinaryOp, Conv, CoordMode, Gemm, NearestMode, Op, Pool, Resize, ResizeMode,
    };

    use super::*;

    #[test]
    fn every_op_has_an_e_node() {
        let ops = [
            Op::Conv(Conv::default()),
            Op::BatchNorm { epsilon: 1e-5 },
            Op::Activation(Activation::Relu),
            Op::Activation(Activation::Clip {
                min: None,
                max: None,
            }),
            Op::Activation(Activation::LeakyRelu { alpha: 0.1 }),
            Op::Activation(Activation::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            }),
            Op::Activation(Activation::HardSwish),
            Op::Activation(Activation::Sigmoid),
            Op::Activation(Activation::Tanh),
            Op::Activation(Activation::Exp),
            Op::Activation(Activation::Erf),
            Op::Activation(Activation::Gelu { tanh: true }),
            Op::Activation(Activation::Softplus),
            Op::Activation(Activation::Elu { alpha: 1.0 }),
            Op::Activation(Activation::Selu {
                alpha: 1.0,
                gamma: 1.0,
            }),
            Op::Activation(Activation::Neg),
            Op::Activation(Activation::Abs),
            Op::Activation(Activation::Sqrt),
            Op::Activation(Activation::Reciprocal),
            Op::Activation(Activation::Log),
            Op::Activation(Activation::Floor),
            Op::Activation(Activation::Ceil),
            Op::Activation(Activation::Round),
            Op::Activation(Activation::FakeQuant {
                scale: 0.5,
                zero_point: 0,
                lo: -128,
                hi: 127,
            }),
            Op::PRelu,
            Op::Binary(BinaryOp::Add),
            Op::Binary(BinaryOp::Sub),
            Op::Binary(BinaryOp::Mul),
            Op::Binary(BinaryOp::Div),
            Op::Binary(BinaryOp::Max),
            Op::Binary(BinaryOp::Min),
            Op::Binary(BinaryOp::Pow),
            Op::MaxPool(Pool::new([2, 2])),
            Op::AveragePool(Pool::new([2, 2])),
            Op::SumPool(Pool::new([2, 2])),
            Op::GlobalAveragePool,
            Op::GlobalSumPool,
            Op::Gemm(Gemm::default()),
            Op::MatMul,
            Op::Reshape { shape: vec![] },
            Op::Transpose { perm: vec![] },
            Op::Concat { axis: 0 },
            Op::Pad {
                pads: vec![],
                value: 0.0,
            },
            Op::Softmax { axis: 0 },
            Op::Identity,
            Op::Dropout,
            Op::Slice {
                axis: 0,
                start: 0,
                end: 1,
                step: 1,
            },
            Op::Resize(Resize {
                mode: ResizeMode::Linear,
                coord: CoordMode::HalfPixel,
                nearest_mode: NearestMode::Floor,
                out: [2, 2],
                scales: [2.0, 2.0],
            }),
        ];
        for op in ops {
            let node = IrLang::from_op(op.name(), vec![Id::from(0usize)]).unwrap();
            assert!(node.is_op(), "{}", op.name());
            assert_eq!(node.to_string(), op.name());
        }
        assert_eq!(
            IrLang::from_op("c3", vec![]).unwrap(),
            IrLang::Const(ConstId(3))
        );
        assert_eq!(
            IrLang::from_op("in0", vec![]).unwrap(),
            IrLang::Input(InputId(0))
        );
        assert_eq!(
            IrLang::from_op("a7", vec![]).unwrap(),
            IrLang::Attr(AttrId(7))
        );
    }
}
