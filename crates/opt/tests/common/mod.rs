//! Shared by the rule and CLE tests: a graph under construction with a deterministic
//! source of values. Each test file adds the builder methods it needs.

use lutq_ir::Graph;

pub struct Builder {
    pub g: Graph,
    seed: u64,
}

impl Builder {
    /// Each test file has its own seed, so its snapshots do not depend on the other's.
    pub fn seeded(name: &str, seed: u64) -> Self {
        Builder {
            g: Graph::new(name),
            seed,
        }
    }

    /// `n` values uniform in `[lo, hi)` from a 64-bit LCG.
    pub fn uniform(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.seed = self
                    .seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let u = (self.seed >> 40) as f32 / (1u64 << 24) as f32;
                lo + (hi - lo) * u
            })
            .collect()
    }
}
