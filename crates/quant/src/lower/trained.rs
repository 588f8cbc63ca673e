//! Trained grids of QDQ models: a `fake_quant` (an imported QuantizeLinear →
//! DequantizeLinear pair) with a power-of-two scale `2^-e` and zero point 0 fixes the
//! exponent and the clamp of the value it reads, so the integer program computes the
//! trained network instead of one calibrated from scratch. The `fake_quant` itself then
//! maps codes to the same codes (a table that the contract evaluates exactly).
//!
//! The pair rounds ties to even where the contract rounds them up: the two differ only
//! where a value lies exactly halfway between two codes.

use std::collections::HashMap;

use lutq_ir::{Activation, Graph, NodeId, Op};

/// The grid a trained `fake_quant` puts on a value: exponent and code range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Grid {
    pub exp: i32,
    pub lo: i32,
    pub hi: i32,
}

/// The exponent `e` with `scale = 2^-e`, if the scale is a power of two.
pub(crate) fn pot_exponent(scale: f32) -> Option<i32> {
    let bits = scale.to_bits();
    let (exponent, mantissa) = ((bits >> 23) & 0xff, bits & 0x7f_ffff);
    (scale > 0.0 && scale.is_finite() && mantissa == 0 && exponent != 0)
        .then(|| 127 - exponent as i32)
}

/// The trained grids of `graph` (empty without `fake_quant`s), or every pair that cannot
/// be one (not a power of two, or a zero point other than 0), one line each.
pub(crate) fn trained_grids(graph: &Graph) -> Result<HashMap<NodeId, Grid>, Vec<String>> {
    let mut grids = HashMap::new();
    let mut problems = Vec::new();
    for id in graph.topo_order() {
        let Op::Activation(Activation::FakeQuant {
            scale,
            zero_point,
            lo,
            hi,
        }) = graph.node(id).op
        else {
            continue;
        };
        let Some(exp) = pot_exponent(scale).filter(|_| zero_point == 0) else {
            problems.push(format!(
                "node '{}': scale {scale} and zero point {zero_point} (power-of-two scales and zero point 0 map onto the integer contract exactly)",
                graph.node(id).name
            ));
            continue;
        };
        let grid = Grid { exp, lo, hi };
        grids.insert(id, grid);
        if let Some(&x) = graph.node_inputs(id).first()
            && graph.constant(x).is_none()
        {
            grids.entry(x).or_insert(grid);
        }
    }
    if problems.is_empty() {
        Ok(grids)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn powers_of_two_and_nothing_else() {
        assert_eq!(pot_exponent(0.25), Some(2));
        assert_eq!(pot_exponent(8.0), Some(-3));
        assert_eq!(pot_exponent(2f32.powi(-126)), Some(126));
        for s in [0.3, 0.0, -0.25, f32::INFINITY, f32::NAN, 2f32.powi(-130)] {
            assert_eq!(pot_exponent(s), None, "{s}");
        }
    }
}
