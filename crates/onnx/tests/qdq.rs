//! QDQ models (QuantizeLinear → DequantizeLinear, as onnxruntime's `quantize_static`,
//! PyTorch and Brevitas export them): pairs on run-time data become one fake-quantization
//! activation whose float semantics are ONNX's (ties to even, saturation to the zero
//! point's type, a Clip between them narrowing it); pairs on constants fold to the
//! dequantized values, per tensor and per axis; everything else is reported.

mod common;

use common::*;
use lutq_ir::{Activation, Op, Tensor};
use lutq_onnx::proto::TensorProto;
use lutq_onnx::proto::tensor_proto::DataType;

/// An initializer of a narrow integer type, from raw bytes.
fn init_raw(mut m: Model, name: &str, ty: DataType, dims: &[i64], raw: Vec<u8>) -> Model {
    m.graph().initializer.push(TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(ty as i32),
        raw_data: Some(raw),
        ..Default::default()
    });
    m
}

/// ONNX's QuantizeLinear → DequantizeLinear on one value, written from the operator
/// definition (f64 with explicit tie handling, sharing nothing with the importer).
fn reference(x: f32, scale: f32, zp: i64, lo: i64, hi: i64) -> f32 {
    let r = (x / scale) as f64;
    let fl = r.floor();
    let q = if r - fl == 0.5 {
        if fl as i64 % 2 == 0 { fl } else { fl + 1.0 }
    } else {
        r.round()
    };
    let q = (q as i64 + zp).clamp(lo, hi);
    ((q - zp) as f32) * scale
}

fn run(g: &lutq_ir::Graph, x: Vec<f32>) -> Vec<f32> {
    let shape = g.node(g.inputs()[0]).ty.shape.clone();
    let t = Tensor::f32(shape, x).unwrap();
    let y = lutq_interp::Interpreter::new(g)
        .unwrap()
        .run_batch(&t, None)
        .unwrap();
    y.as_f32().unwrap().to_vec()
}

/// Values across the range, ties (k + 0.5 steps) and saturation included.
fn probe(scale: f32) -> Vec<f32> {
    (-80..80)
        .map(|k| k as f32 * scale * 1.75 + scale * 0.5)
        .collect()
}

#[test]
fn activation_pairs_round_ties_to_even_and_saturate_to_the_zero_points_type() {
    // (zero point type, zero point, range, scale): int8, uint8 at 128, int4 via raw
    // bytes, and no zero point (uint8 by default).
    type ZeroPoint = Option<(DataType, Vec<u8>)>;
    let cases: [(ZeroPoint, i64, (i64, i64), f32); 4] = [
        (Some((DataType::Int8, vec![0])), 0, (-128, 127), 0.25),
        (Some((DataType::Uint8, vec![128])), 128, (0, 255), 0.125),
        (Some((DataType::Int4, vec![0x0e])), -2, (-8, 7), 1.0),
        (None, 0, (0, 255), 0.5),
    ];
    for (zp, zp_value, (lo, hi), scale) in cases {
        let mut m = Model::new(13)
            .input("x", &[1, 160])
            .init_f32("s", &[], vec![scale]);
        let mut q_inputs = vec!["x", "s"];
        if let Some((ty, raw)) = zp.clone() {
            m = init_raw(m, "z", ty, &[], raw);
            q_inputs.push("z");
        }
        let m = m
            .node("QuantizeLinear", &q_inputs, &["q"], vec![])
            .node(
                "DequantizeLinear",
                &[&["q"], &q_inputs[1..]].concat(),
                &["y"],
                vec![],
            )
            .output("y");
        let g = import(&m).unwrap_or_else(|e| panic!("{zp:?}: {e}"));
        let fq = g
            .node_ids()
            .filter(|&id| matches!(g.node(id).op, Op::Activation(Activation::FakeQuant { .. })))
            .count();
        assert_eq!(fq, 1, "{zp:?}: one fake-quant node\n{}", g.dump());
        let x = probe(scale);
        let want: Vec<f32> = x
            .iter()
            .map(|&v| reference(v, scale, zp_value, lo, hi))
            .collect();
        assert_eq!(run(&g, x), want, "{zp:?}");
    }
}

#[test]
fn a_clip_between_the_pair_narrows_the_range() {
    let m = Model::new(13)
        .input("x", &[1, 160])
        .init_f32("s", &[], vec![0.25]);
    let m = init_raw(m, "z", DataType::Int8, &[], vec![0]);
    let m = init_raw(m, "lo", DataType::Int8, &[], vec![(-127i8) as u8]);
    let m = init_raw(m, "hi", DataType::Int8, &[], vec![100]);
    let m = m
        .node("QuantizeLinear", &["x", "s", "z"], &["q"], vec![])
        .node("Clip", &["q", "lo", "hi"], &["c"], vec![])
        .node("DequantizeLinear", &["c", "s", "z"], &["y"], vec![])
        .output("y");
    let g = import(&m).unwrap_or_else(|e| panic!("{e}"));
    let x = probe(0.25);
    let want: Vec<f32> = x
        .iter()
        .map(|&v| reference(v, 0.25, 0, -127, 100))
        .collect();
    assert_eq!(run(&g, x), want);
}

#[test]
fn quantized_weights_fold_per_axis_to_their_dequantized_values() {
    // Conv weights [2, 1, 1, 2] as int8 codes with one scale per output channel, and a
    // float bias quantized in the graph (Q → DQ on a constant).
    let codes: [i8; 4] = [-3, 7, 127, -128];
    let m = Model::new(13).input("x", &[1, 1, 2, 2]);
    let m = init_raw(
        m,
        "wq",
        DataType::Int8,
        &[2, 1, 1, 2],
        codes.iter().map(|&c| c as u8).collect(),
    );
    let m = init_raw(m, "wz", DataType::Int8, &[2], vec![0, 0]);
    let m = m
        .init_f32("ws", &[2], vec![0.5, 0.0625])
        .init_f32("b", &[2], vec![0.3, -1.0])
        .init_f32("bs", &[], vec![0.125])
        .node(
            "DequantizeLinear",
            &["wq", "ws", "wz"],
            &["w"],
            vec![int("axis", 0)],
        )
        .node("QuantizeLinear", &["b", "bs"], &["bq"], vec![])
        .node("DequantizeLinear", &["bq", "bs"], &["bd"], vec![])
        .node("Conv", &["x", "w", "bd"], &["y"], vec![])
        .output("y");
    let g = import(&m).unwrap_or_else(|e| panic!("{e}"));
    let conv = g
        .node_ids()
        .find(|&id| matches!(g.node(id).op, Op::Conv(_)))
        .unwrap();
    let ins = g.node_inputs(conv);
    let w = g.constant(ins[1]).unwrap().as_f32().unwrap().to_vec();
    assert_eq!(w, vec![-1.5, 3.5, 127.0 * 0.0625, -8.0]);
    // The bias quantized to uint8 (no zero point): 0.3 → code 2 (0.25), −1.0 → 0.
    let b = g.constant(ins[2]).unwrap().as_f32().unwrap().to_vec();
    assert_eq!(b, vec![0.25, 0.0]);
}

#[test]
fn integer_values_outside_a_pair_are_reported_with_the_producer() {
    // The integer output as a graph output.
    let m = Model::new(13)
        .input("x", &[1, 4])
        .init_f32("s", &[], vec![0.5])
        .node("QuantizeLinear", &["x", "s"], &["q"], vec![])
        .output("q");
    let d = diagnostics(&m);
    assert!(
        d[0].to_string().contains("QuantizeLinear 'q_node'"),
        "{}",
        d[0]
    );
    // Read by a Relu.
    let m = Model::new(13)
        .input("x", &[1, 4])
        .init_f32("s", &[], vec![0.5])
        .node("QuantizeLinear", &["x", "s"], &["q"], vec![])
        .node("Relu", &["q"], &["y"], vec![])
        .output("y");
    let d = diagnostics(&m);
    assert!(
        d[0].to_string().contains("DequantizeLinear reads it"),
        "{}",
        d[0]
    );
    // Dequantized with another scale.
    let m = Model::new(13)
        .input("x", &[1, 4])
        .init_f32("s", &[], vec![0.5])
        .init_f32("s2", &[], vec![0.25])
        .node("QuantizeLinear", &["x", "s"], &["q"], vec![])
        .node("DequantizeLinear", &["q", "s2"], &["y"], vec![])
        .output("y");
    let d = diagnostics(&m);
    assert!(d[0].to_string().contains("quantized with 0.5"), "{}", d[0]);
    // Per-axis scales on run-time data.
    let m = Model::new(13)
        .input("x", &[1, 2, 2, 2])
        .init_f32("s", &[2], vec![0.5, 0.25])
        .node("QuantizeLinear", &["x", "s"], &["q"], vec![])
        .node("DequantizeLinear", &["q", "s"], &["y"], vec![])
        .output("y");
    let d = diagnostics(&m);
    assert!(
        d[0].to_string()
            .contains("per-axis quantization of run-time data"),
        "{}",
        d[0]
    );
}

#[test]
fn round_scales_snaps_activation_scales_to_the_nearest_power_of_two() {
    // An activation pair at 0.1 → 0.125 (and 0.7 → 0.5 would follow from log2 0.7 =
    // −0.51); the weights (per axis, scales 0.3 and 0.7) keep their dequantized values:
    // snapping their scales would rescale the channels. Without the option nothing
    // changes.
    let codes: [i8; 4] = [-3, 7, 100, -128];
    let m = Model::new(13).input("x", &[1, 1, 2, 2]);
    let m = init_raw(
        m,
        "wq",
        DataType::Int8,
        &[2, 1, 1, 2],
        codes.iter().map(|&c| c as u8).collect(),
    );
    let m = init_raw(m, "wz", DataType::Int8, &[2], vec![0, 0]);
    let m = init_raw(m, "z", DataType::Int8, &[], vec![0]);
    let m = m
        .init_f32("ws", &[2], vec![0.3, 0.7])
        .init_f32("s", &[], vec![0.1])
        .node(
            "DequantizeLinear",
            &["wq", "ws", "wz"],
            &["w"],
            vec![int("axis", 0)],
        )
        .node("QuantizeLinear", &["x", "s", "z"], &["q"], vec![])
        .node("DequantizeLinear", &["q", "s", "z"], &["xd"], vec![])
        .node("Conv", &["xd", "w"], &["y"], vec![])
        .output("y");
    let w_scales = [0.3f32, 0.7];
    for (round, a_scale) in [(false, 0.1f32), (true, 0.125)] {
        let options = lutq_onnx::ImportOptions {
            round_scales: round,
            ..Default::default()
        };
        let g = lutq_onnx::import(&m.bytes(), &options).unwrap_or_else(|e| panic!("{e}"));
        let conv = g
            .node_ids()
            .find(|&id| matches!(g.node(id).op, Op::Conv(_)))
            .unwrap();
        let w = g
            .constant(g.node_inputs(conv)[1])
            .unwrap()
            .as_f32()
            .unwrap()
            .to_vec();
        let want: Vec<f32> = codes
            .iter()
            .enumerate()
            .map(|(i, &c)| c as f32 * w_scales[i / 2])
            .collect();
        assert_eq!(w, want, "round_scales {round}");
        let scales: Vec<f32> = g
            .node_ids()
            .filter_map(|id| match g.node(id).op {
                Op::Activation(Activation::FakeQuant { scale, .. }) => Some(scale),
                _ => None,
            })
            .collect();
        assert_eq!(scales, vec![a_scale], "round_scales {round}");
    }
}

#[test]
fn reduce_sum_over_the_plane_is_a_global_sum_pool() {
    // QAT exports sum the plane (ReduceSum, axes an input from opset 13) so that the
    // pooled value keeps a power-of-two grid; keepdims 0 adds a Reshape.
    let x: Vec<f32> = (0..2 * 3 * 4).map(|i| (i as f32 - 7.0) * 0.25).collect();
    for keep in [1, 0] {
        let m = Model::new(13)
            .input("x", &[1, 2, 3, 4])
            .init_i64("axes", &[2], vec![2, 3])
            .node(
                "ReduceSum",
                &["x", "axes"],
                &["y"],
                vec![int("keepdims", keep)],
            )
            .output("y");
        let g = import(&m).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            g.node_ids()
                .any(|id| matches!(g.node(id).op, Op::GlobalSumPool)),
            "{}",
            g.dump()
        );
        let want: Vec<f32> = x.chunks(12).map(|c| c.iter().sum()).collect();
        assert_eq!(run(&g, x.clone()), want, "keepdims {keep}");
    }
}
