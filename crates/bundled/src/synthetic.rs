//! Small synthetic float networks with seeded random weights, for the ops no bundled or
//! zoo model has: tests quantize them on real data and compare every backend.

use lutq_ir::{
    Activation, BinaryOp, Conv, CoordMode, Graph, NearestMode, NodeId, Op, Pool, Resize,
    ResizeMode, Tensor, TensorType,
};

use crate::random::Rng;

/// A tensor of `shape` uniform in `[-scale, scale)`.
fn uniform(r: &mut Rng, shape: &[usize], scale: f32) -> Tensor {
    let n = shape.iter().product();
    let data = (0..n)
        .map(|_| (r.range(-(1 << 20), (1 << 20) - 1) as f32 / (1 << 20) as f32) * scale)
        .collect();
    Tensor::f32(shape.to_vec(), data).expect("shape and data agree")
}

/// A `k × k` same-padded convolution to `o` channels with a He-like weight scale.
fn conv(g: &mut Graph, r: &mut Rng, name: &str, x: NodeId, o: usize, k: usize) -> NodeId {
    let c = g.node(x).ty.shape[1];
    let w = uniform(r, &[o, c, k, k], (6.0 / (c * k * k) as f32).sqrt());
    let w = g.add_constant(format!("{name}.w"), w);
    let b = uniform(r, &[o], 0.1);
    let b = g.add_constant(format!("{name}.b"), b);
    let op = Op::Conv(Conv {
        pads: [k / 2; 4],
        ..Conv::default()
    });
    g.add_node(name, op, &[x, w, b]).expect("valid conv")
}

fn node(g: &mut Graph, name: &str, op: Op, inputs: &[NodeId]) -> NodeId {
    g.add_node(name, op, inputs).expect("valid node")
}

/// A ×2 spatial resize of `x`.
pub fn upsample(
    g: &mut Graph,
    name: &str,
    x: NodeId,
    mode: ResizeMode,
    coord: CoordMode,
) -> NodeId {
    let s = g.node(x).ty.shape.clone();
    let op = Op::Resize(Resize {
        mode,
        coord,
        nearest_mode: NearestMode::RoundPreferFloor,
        out: [s[2] * 2, s[3] * 2],
        scales: [2.0, 2.0],
    });
    node(g, name, op, &[x])
}

/// A decoder in the style of FPN / U-Net heads on an `[1, C, H, W]` input (`H`, `W`
/// even): downsample, upsample by nearest and by bilinear interpolation (half-pixel and
/// align-corners), merge skips by the maximum and the minimum of two activations,
/// shuffle channels (ShuffleNet, rank 5) and pixels (DepthToSpace as imported, rank 6).
/// The output is `[1, 4, 2H, 2W]`.
pub fn decoder(input: [usize; 4]) -> Graph {
    let [_, _, h, w] = input;
    let mut r = Rng(0x5eed_1234_abcd_0002);
    let mut g = Graph::new("decoder");
    let x = g.add_input("x", TensorType::f32(input.to_vec()));
    let c1 = conv(&mut g, &mut r, "c1", x, 6, 3);
    let c1 = node(&mut g, "c1.relu", Op::Activation(Activation::Relu), &[c1]);
    let mut pool = Pool::new([2, 2]);
    pool.strides = [2, 2];
    let p = node(&mut g, "down", Op::MaxPool(pool), &[c1]);
    let c2 = conv(&mut g, &mut r, "c2", p, 6, 3);
    let up = upsample(
        &mut g,
        "up.nearest",
        c2,
        ResizeMode::Nearest,
        CoordMode::Asymmetric,
    );
    let merged = node(&mut g, "merge.max", Op::Binary(BinaryOp::Max), &[up, c1]);
    let reshape = |shape: &[usize]| Op::Reshape {
        shape: shape.to_vec(),
    };
    let transpose = |perm: &[usize]| Op::Transpose {
        perm: perm.to_vec(),
    };
    let merged = node(
        &mut g,
        "shuffle.split",
        reshape(&[1, 2, 3, h, w]),
        &[merged],
    );
    let merged = node(
        &mut g,
        "shuffle.swap",
        transpose(&[0, 2, 1, 3, 4]),
        &[merged],
    );
    let merged = node(&mut g, "shuffle.join", reshape(&[1, 6, h, w]), &[merged]);
    let c3 = conv(&mut g, &mut r, "c3", merged, 4, 3);
    let c3b = conv(&mut g, &mut r, "c3b", merged, 4, 1);
    let low = node(&mut g, "merge.min", Op::Binary(BinaryOp::Min), &[c3, c3b]);
    let up2 = upsample(
        &mut g,
        "up.linear",
        low,
        ResizeMode::Linear,
        CoordMode::HalfPixel,
    );
    let up3 = upsample(
        &mut g,
        "up.corners",
        low,
        ResizeMode::Linear,
        CoordMode::AlignCorners,
    );
    let sum = node(&mut g, "sum", Op::Binary(BinaryOp::Add), &[up2, up3]);
    let c4 = conv(&mut g, &mut r, "c4", low, 16, 1);
    let ps = node(&mut g, "d2s.blocks", reshape(&[1, 2, 2, 4, h, w]), &[c4]);
    let ps = node(&mut g, "d2s.permute", transpose(&[0, 3, 4, 1, 5, 2]), &[ps]);
    let ps = node(&mut g, "d2s", reshape(&[1, 4, 2 * h, 2 * w]), &[ps]);
    let out = node(&mut g, "sum2", Op::Binary(BinaryOp::Add), &[sum, ps]);
    g.add_output("y", out).expect("a node");
    g
}
