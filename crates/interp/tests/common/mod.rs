//! Helpers shared by the integration tests: a seeded PRNG, graph building shortcuts and
//! tolerant comparisons.

#![allow(dead_code)]

use lutq_ir::{Graph, NodeId, Op, Tensor, TensorType};

/// xorshift64*: deterministic, dependency-free pseudo-random numbers.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    pub fn bool(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }

    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }

    pub fn tensor(&mut self, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        Tensor::f32(shape, self.vec(n)).unwrap()
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.range(0, items.len() - 1)]
    }
}

pub fn input(g: &mut Graph, name: &str, shape: &[usize]) -> NodeId {
    g.add_input(name, TensorType::f32(shape))
}

pub fn constant(g: &mut Graph, name: &str, t: Tensor) -> NodeId {
    g.add_constant(name, t)
}

pub fn node(g: &mut Graph, op: Op, inputs: &[NodeId]) -> NodeId {
    let name = format!("n{}", g.node_count());
    g.add_node(name, op, inputs).unwrap()
}

/// A graph with one op over the given inputs (all graph inputs), and its one output.
pub fn single_op(op: Op, shapes: &[&[usize]]) -> Graph {
    let mut g = Graph::new("single");
    let ids: Vec<NodeId> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| input(&mut g, &format!("x{i}"), s))
        .collect();
    let y = node(&mut g, op, &ids);
    g.add_output("y", y).unwrap();
    g
}

/// Runs `g` and returns its only output.
pub fn run1(g: &Graph, inputs: &[Tensor]) -> Tensor {
    let mut out = lutq_interp::run(g, inputs).unwrap();
    assert_eq!(out.len(), 1);
    out.pop().unwrap()
}

/// Asserts `got` ≈ `want` elementwise: |got − want| ≤ tol · (1 + |want|).
#[track_caller]
pub fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = g == w || (g - w).abs() <= tol * (1.0 + w.abs()) || (g.is_nan() && w.is_nan());
        assert!(ok, "{what}: element {i}: got {g}, want {w}");
    }
}

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// Multi-index of flat position `i` in `shape`.
pub fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d];
        i /= shape[d];
    }
    idx
}

/// Flat position in a tensor of `shape` of the output index `idx` under numpy
/// broadcasting (dims aligned right, size-1 dims read at 0).
pub fn broadcast_index(idx: &[usize], shape: &[usize]) -> usize {
    let lead = idx.len() - shape.len();
    let st = strides(shape);
    (0..shape.len())
        .map(|d| {
            if shape[d] == 1 {
                0
            } else {
                idx[d + lead] * st[d]
            }
        })
        .sum()
}
