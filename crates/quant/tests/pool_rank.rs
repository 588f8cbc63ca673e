//! A global average pool of a `[N, C, L]` tensor (ONNX allows any rank ≥ 3) has no
//! integer form (the integer pools work on `[N, C, H, W]`): the quantizer reports it by
//! name instead of indexing a fourth dimension. Found by the `onnx_graph` fuzz target
//! (`fuzz/regressions/onnx_graph/crash-64321d663b61f89d34c73bfd1ad0fefa95dd1d78`).

use lutq_ir::{Graph, Op, Tensor, TensorType};
use lutq_quant::{Mode, QuantError, QuantOptions, quantize};

fn global_pool(shape: &[usize]) -> Graph {
    let mut g = Graph::new("pool_rank");
    let x = g.add_input("x", TensorType::f32(shape));
    let y = g.add_node("gap", Op::GlobalAveragePool, &[x]).unwrap();
    g.add_output("y", y).unwrap();
    g
}

fn calibration(shape: &[usize]) -> Tensor {
    let mut shape = shape.to_vec();
    shape[0] = 4;
    let n: usize = shape.iter().product();
    Tensor::f32(shape, (0..n).map(|i| (i % 7) as f32 / 4.0 - 0.5).collect()).unwrap()
}

#[test]
fn a_pool_of_a_rank_3_tensor_is_reported_by_name() {
    let shape = [1, 2, 4];
    let options = QuantOptions::new(Mode::Int8Pc);
    let err = quantize(
        &global_pool(&shape),
        &calibration(&shape),
        &options,
        &|_| {},
    )
    .unwrap_err();
    let QuantError::Unsupported(problems) = &err else {
        panic!("expected Unsupported, got {err}");
    };
    assert!(
        problems
            .iter()
            .any(|p| p.contains("'gap' (global_average_pool)") && p.contains("[N, C, H, W]")),
        "{problems:?}"
    );
}

#[test]
fn the_same_pool_of_a_rank_4_tensor_quantizes() {
    let shape = [1, 2, 2, 2];
    let options = QuantOptions::new(Mode::Int8Pc);
    let (int, _) = quantize(
        &global_pool(&shape),
        &calibration(&shape),
        &options,
        &|_| {},
    )
    .unwrap();
    int.validate().unwrap();
}
