//! A MobileNetV2-shaped float graph (torchvision's architecture, random weights) built
//! directly in the IR, for the benchmark and for whole-network tests. Shared by
//! `benches/mobilenet.rs` and the tests through `#[path]`.

#![allow(dead_code)]

use lutq_ir::{Activation, BinaryOp, Conv, Gemm, Graph, NodeId, Op, Tensor, TensorType};

struct Builder {
    g: Graph,
    seed: u64,
    count: usize,
}

impl Builder {
    fn values(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                // xorshift64*
                self.seed ^= self.seed >> 12;
                self.seed ^= self.seed << 25;
                self.seed ^= self.seed >> 27;
                let r = self.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
                lo + (hi - lo) * (r as f32 / (1u64 << 24) as f32)
            })
            .collect()
    }

    fn constant(&mut self, shape: &[usize], lo: f32, hi: f32) -> NodeId {
        let n = shape.iter().product();
        let data = self.values(n, lo, hi);
        self.count += 1;
        let name = format!("c{}", self.count);
        self.g.add_constant(name, Tensor::f32(shape, data).unwrap())
    }

    fn node(&mut self, op: Op, inputs: &[NodeId]) -> NodeId {
        self.count += 1;
        let name = format!("{}_{}", op.name(), self.count);
        self.g.add_node(name, op, inputs).unwrap()
    }

    /// Conv (+ BatchNorm, or a bias when `fold_bn`) (+ ReLU6).
    #[allow(clippy::too_many_arguments)]
    fn conv_bn(
        &mut self,
        x: NodeId,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        group: usize,
        relu6: bool,
        fold_bn: bool,
    ) -> NodeId {
        // He-like scale keeps activations in a sane range through 50 layers.
        let fan_in = (cin / group) * k * k;
        let s = (3.0 / fan_in as f32).sqrt();
        let w = self.constant(&[cout, cin / group, k, k], -s, s);
        let attrs = Conv {
            strides: [stride, stride],
            pads: [k / 2; 4],
            dilations: [1, 1],
            group,
            activation: None,
        };
        let mut y = if fold_bn {
            let b = self.constant(&[cout], -0.1, 0.1);
            self.node(Op::Conv(attrs), &[x, w, b])
        } else {
            let c = self.node(Op::Conv(attrs), &[x, w]);
            let scale = self.constant(&[cout], 0.5, 1.5);
            let bias = self.constant(&[cout], -0.1, 0.1);
            let mean = self.constant(&[cout], -0.1, 0.1);
            let var = self.constant(&[cout], 0.5, 1.5);
            self.node(
                Op::BatchNorm { epsilon: 1e-5 },
                &[c, scale, bias, mean, var],
            )
        };
        if relu6 {
            let clip = Activation::Clip {
                min: Some(0.0),
                max: Some(6.0),
            };
            y = self.node(Op::Activation(clip), &[y]);
        }
        y
    }
}

/// MobileNetV2 (width 1.0) for `batch × 3 × resolution × resolution` inputs, 1000
/// classes. With `fold_bn` every BatchNorm is replaced by a conv bias, as after lutq's BN
/// folding.
pub fn mobilenet_v2(batch: usize, resolution: usize, fold_bn: bool, seed: u64) -> Graph {
    let mut b = Builder {
        g: Graph::new("mobilenet_v2_like"),
        seed: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        count: 0,
    };
    let x =
        b.g.add_input("input", TensorType::f32([batch, 3, resolution, resolution]));
    let mut y = b.conv_bn(x, 3, 32, 3, 2, 1, true, fold_bn);
    let mut cin = 32;
    // (expansion t, channels c, repeats n, first stride s), as in the paper.
    let settings = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ];
    for (t, c, n, s) in settings {
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            let hidden = cin * t;
            let mut h = y;
            if t != 1 {
                h = b.conv_bn(h, cin, hidden, 1, 1, 1, true, fold_bn);
            }
            h = b.conv_bn(h, hidden, hidden, 3, stride, hidden, true, fold_bn);
            h = b.conv_bn(h, hidden, c, 1, 1, 1, false, fold_bn);
            y = if stride == 1 && cin == c {
                b.node(Op::Binary(BinaryOp::Add), &[y, h])
            } else {
                h
            };
            cin = c;
        }
    }
    y = b.conv_bn(y, cin, 1280, 1, 1, 1, true, fold_bn);
    y = b.node(Op::GlobalAveragePool, &[y]);
    y = b.node(
        Op::Reshape {
            shape: vec![batch, 1280],
        },
        &[y],
    );
    let w = b.constant(&[1000, 1280], -0.05, 0.05);
    let bias = b.constant(&[1000], -0.1, 0.1);
    let gemm = Gemm {
        trans_b: true,
        ..Gemm::default()
    };
    y = b.node(Op::Gemm(gemm), &[y, w, bias]);
    b.g.add_output("logits", y).unwrap();
    b.g
}
