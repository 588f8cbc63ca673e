//! The builder copies what the integer program and the reports say, refuses modes that
//! disagree on the layers, and the page escapes names and marks only measured values.

use lutq_backend_c::{CSummary, LayerKind};
use lutq_ir::int::{
    ConvGeom, IntElem, IntGraph, IntInput, IntNode, IntOp, QLinear, QType, QWeights, Rescale,
    ValueId,
};
use lutq_quant::QuantReport;
use lutq_report::data::{M4Model, WeightFormat};
use lutq_report::{ActivationCounts, ModeInput, Report, ReportBuilder, ReportError, RescaleRange};

fn ty(shape: &[usize], exp: i32) -> QType {
    QType {
        elem: IntElem::I8,
        shape: shape.to_vec(),
        exp,
    }
}

/// input [1,2,4,4] → 3×3 conv to 4 channels (`conv_name`, LUT per channel or int8) →
/// dense 64 → 3 (`fc<b>`, fixed-point multipliers).
fn program(conv_name: &str, lut: bool) -> IntGraph {
    let mut g = IntGraph::new("t");
    g.inputs.push(IntInput {
        name: "x".into(),
        shape: vec![1, 2, 4, 4],
    });
    let x = g.push(IntNode {
        name: "x".into(),
        op: IntOp::QuantizeInput { input: 0 },
        inputs: vec![],
        ty: ty(&[1, 2, 4, 4], 6),
    });
    let shape = [4, 2, 3, 3];
    let weights = if lut {
        QWeights::Lut {
            shape,
            luts: vec![[0; 16]; 4],
            codes: vec![0; 4 * 9],
        }
    } else {
        QWeights::Int8 {
            shape,
            values: vec![0; 72],
        }
    };
    let conv = g.push(IntNode {
        name: conv_name.into(),
        op: IntOp::Linear(QLinear {
            conv: Some(ConvGeom {
                strides: [1, 1],
                pads: [1, 1, 1, 1],
                dilations: [1, 1],
                group: 1,
            }),
            weights,
            bias: vec![0; 4],
            rescale: vec![
                Rescale::Shift(7),
                Rescale::Shift(9),
                Rescale::Shift(8),
                Rescale::Shift(7),
            ],
            lo: -128,
            hi: 127,
            weight_exps: vec![5, 6, 4, 5],
        }),
        inputs: vec![x],
        ty: ty(&[1, 4, 4, 4], 3),
    });
    let flat = g.push(IntNode {
        name: "flatten".into(),
        op: IntOp::Reshape,
        inputs: vec![conv],
        ty: ty(&[1, 64], 3),
    });
    g.push(IntNode {
        name: "fc<b>".into(),
        op: IntOp::Linear(QLinear {
            conv: None,
            weights: QWeights::Int8 {
                shape: [3, 64, 1, 1],
                values: vec![0; 192],
            },
            bias: vec![0; 3],
            rescale: vec![
                Rescale::Multiplier {
                    multiplier: 1 << 30,
                    shift: -20,
                };
                3
            ],
            lo: -128,
            hi: 127,
            weight_exps: vec![7; 3],
        }),
        inputs: vec![flat],
        ty: ty(&[1, 3], 2),
    });
    g.outputs.push(lutq_ir::int::IntOutput {
        name: "y".into(),
        value: ValueId(3),
    });
    g
}

fn c_summary(constants: usize) -> CSummary {
    CSummary {
        prefix: "t".into(),
        weight_bytes: constants,
        packed_weight_bytes: 0,
        weight_count: 264,
        stack_row_bytes: 0,
        int8_weight_bytes: 400,
        arena_size: 160,
        arena_lower_bound: 128,
        arena_naive: 200,
        scratch_bytes: 0,
        macs: 64 * 18 + 192,
    }
}

fn add(
    b: &mut ReportBuilder,
    mode: &str,
    g: &IntGraph,
    sqnr: &[(String, f64)],
) -> Result<(), ReportError> {
    let quant = QuantReport {
        calibration_samples: 16,
        weight_bytes: 321,
        float_weight_bytes: 1056,
        warnings: vec!["few samples".into()],
        ..Default::default()
    };
    b.add_mode(ModeInput {
        mode,
        cle: false,
        graph: g,
        quant: &quant,
        c: &c_summary(300),
        top1_accuracy: Some(0.5),
        top1_agreement: 0.75,
        sqnr_db: Some(f64::INFINITY),
        layer_sqnr: sqnr,
        arena: &lutq_backend_c::arena_blocks(g),
        float_weights: &float_weights(g),
        activations: &activations(g),
        m4_flash: None,
    })
}

/// Float weights for the conv (not for the dense layer: it gets no weight chart).
fn float_weights(g: &IntGraph) -> Vec<(String, Vec<f32>)> {
    let conv = &g.nodes[1];
    let rows = (0..4 * 18).map(|i| (i as f32 - 36.0) / 64.0).collect();
    vec![(conv.name.clone(), rows)]
}

/// The conv's output: 0..=40 in steps of 1/8 (its exponent 3: codes 0..=320, clamp
/// [-128, 127], so 40 % of the values lie above).
fn activations(g: &IntGraph) -> Vec<(String, ActivationCounts)> {
    let mut c = ActivationCounts::for_node(g, 1).unwrap();
    let values: Vec<f32> = (0..=320).map(|q| q as f32 / 8.0).collect();
    c.add(&values);
    assert!(
        ActivationCounts::for_node(g, 2).is_none(),
        "a reshape is no linear layer"
    );
    vec![(g.nodes[1].name.clone(), c)]
}

fn two_modes() -> Report {
    let mut b = ReportBuilder::new("m.onnx", 8, "evaluation", "off", 8);
    let sqnr = vec![("conv".to_string(), 20.5), ("fc<b>".to_string(), 12.25)];
    add(&mut b, "int8-pc", &program("conv", false), &sqnr).unwrap();
    // The second mode measured only the conv: the dense layer gets no value and no mark.
    add(
        &mut b,
        "lut4-pot-channel",
        &program("conv", true),
        &sqnr[..1],
    )
    .unwrap();
    b.finish()
}

#[test]
fn builder_copies_shapes_tables_exponents_and_rescales() {
    let r = two_modes();
    assert_eq!(r.macs, 64 * 18 + 192);
    assert_eq!(r.calibration_samples, 16);
    assert_eq!(r.warnings, ["few samples"], "once, not per mode");
    assert_eq!(r.modes.len(), 2);
    assert_eq!(
        r.modes[0].sqnr_db, None,
        "identical outputs: no finite SQNR"
    );
    assert_eq!(r.modes[0].c.constant_bytes, 300);
    assert_eq!(r.modes[0].c.int8_constant_bytes, 400);
    let names: Vec<&str> = r.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["conv", "fc<b>"], "linear layers only, in order");
    let conv = &r.layers[0];
    assert_eq!((conv.op.as_str(), conv.macs), ("conv", 64 * 18));
    assert_eq!(conv.input_shape, [1, 2, 4, 4]);
    assert_eq!(conv.output_shape, [1, 4, 4, 4]);
    let (int8, lut) = (&conv.modes[0], &conv.modes[1]);
    // Four identical per-channel tables: the layer stores one.
    assert_eq!((int8.luts, lut.luts), (0, 1));
    assert_eq!((lut.input_exp, lut.output_exp), (6, 3));
    assert_eq!((lut.weight_exp_min, lut.weight_exp_max), (4, 6));
    assert_eq!(lut.rescale, RescaleRange::Shift { min: 7, max: 9 });
    assert_eq!(lut.sqnr_db, Some(20.5));
    let fc = &r.layers[1];
    assert_eq!(fc.op, "dense");
    assert_eq!(
        fc.modes[0].rescale,
        RescaleRange::Multiplier { min: 11, max: 11 }
    );
    assert_eq!(fc.modes[0].sqnr_db, Some(12.25));
    assert_eq!(fc.modes[1].sqnr_db, None);
}

#[test]
fn modes_with_other_layers_or_twice_are_refused() {
    let mut b = ReportBuilder::new("m.onnx", 8, "evaluation", "off", 8);
    add(&mut b, "int8-pc", &program("conv", false), &[]).unwrap();
    let err = add(&mut b, "lut4-pot-layer", &program("other", true), &[]).unwrap_err();
    assert!(
        matches!(&err, ReportError::LayerMismatch { layer, .. } if layer == "other"),
        "{err}"
    );
    let err = add(&mut b, "int8-pc", &program("conv", false), &[]).unwrap_err();
    assert!(matches!(err, ReportError::DuplicateMode(m) if m == "int8-pc"));
    // A refused mode leaves the report as it was.
    let r = b.finish();
    assert_eq!(r.modes.len(), 1);
    assert!(
        r.layers.iter().all(|l| l.modes.len() == 1),
        "{:?}",
        r.layers
    );
}

#[test]
fn json_round_trips_and_rejects_other_text() {
    let r = two_modes();
    assert_eq!(Report::from_json(&r.to_json()).unwrap(), r);
    assert!(matches!(
        Report::from_json("{\"model\": 3}"),
        Err(ReportError::Json(_))
    ));
}

#[test]
fn page_escapes_names_and_marks_only_measured_values() {
    let html = two_modes().to_html();
    assert!(!html.contains("fc<b>"), "a raw name would open a tag");
    assert!(html.contains("fc&lt;b&gt;"));
    // conv × 2 modes + fc × 1 mode measured.
    assert_eq!(html.matches("<circle class=\"mark\"").count(), 3);
    assert_eq!(
        html.matches("<polyline fill=").count(),
        2,
        "a line per mode"
    );
    assert_eq!(
        html.matches("<tr class=\"sep\"").count(),
        2,
        "a row group per layer"
    );
    assert!(!html.contains("://"));
    assert!(!html.contains("<script"));
    // The tooltip carries the value.
    assert!(html.contains("20.50 dB in lut4-pot-channel</title>"));
    // A weight chart per mode for the conv (the dense layer has no float weights); the
    // int8 one without levels, the LUT one with one line per distinct entry (all 0: 1).
    assert_eq!(html.matches("data-chart=\"weights\"").count(), 2);
    assert_eq!(html.matches("<line class=\"level\"").count(), 1);
    // An activation chart per mode for the conv, each with its two clamp lines.
    assert_eq!(html.matches("data-chart=\"activations\"").count(), 2);
    assert_eq!(html.matches("<line class=\"clamp\"").count(), 4);
    // A memory chart per mode, one block per buffer.
    assert_eq!(html.matches("data-chart=\"memory\"").count(), 2);
    let r = two_modes();
    let blocks: usize = r.modes.iter().map(|m| m.arena.blocks.len()).sum();
    assert_eq!(html.matches("<rect class=\"block").count(), blocks);
}

#[test]
fn histograms_and_arena_hold_what_they_were_given() {
    let r = two_modes();
    let conv = &r.layers[0];
    for m in &conv.modes {
        let w = m.weight_hist.as_ref().unwrap();
        assert_eq!(w.hist.total(), 72);
        let a = m.activation_hist.as_ref().unwrap();
        assert_eq!(a.hist.total(), 321);
        assert_eq!(a.clamp, [-16.0, 127.0 / 8.0]);
        // Codes 128..=320 lie above the clamp's 127.
        assert!((a.clipped - 193.0 / 321.0).abs() < 1e-12, "{}", a.clipped);
        assert!(a.hist.lo <= -16.0 && a.hist.hi >= 40.0);
    }
    assert!(
        conv.modes[0]
            .weight_hist
            .as_ref()
            .unwrap()
            .levels
            .is_empty()
    );
    assert_eq!(
        conv.modes[1].weight_hist.as_ref().unwrap().levels,
        [lutq_report::Level {
            value: 0,
            channels: 4
        }]
    );
    let fc = &r.layers[1];
    assert!(fc.modes.iter().all(|m| m.weight_hist.is_none()));
    assert!(
        fc.modes.iter().all(|m| m.activation_hist.is_none()),
        "no counts given"
    );
    for m in &r.modes {
        let a = &m.arena;
        assert!(!a.blocks.is_empty());
        assert!(a.blocks.iter().all(|b| b.offset + b.size <= a.arena_bytes));
        assert_eq!(a.occupancy.len(), a.steps);
        for (t, &o) in a.occupancy.iter().enumerate() {
            let live: usize = a
                .blocks
                .iter()
                .filter(|b| b.start <= t && t <= b.end)
                .map(|b| b.size)
                .sum();
            assert_eq!(o, live);
        }
        assert!(m.m4_instructions > 0);
    }
    // The estimate: MACs times the kind's and format's figure; the whole inference adds
    // the ops without MACs, so the layers' shares sum to 1 / (1 + overhead).
    let model = M4Model::measured();
    assert_eq!(
        r.layers[0].modes[0].m4_instructions,
        (r.layers[0].macs as f64 * model.per_mac(WeightFormat::Int8, LayerKind::Conv3x3)).round()
            as u64
    );
    assert_eq!(r.layers[0].kind, "3×3 conv");
    assert_eq!(r.layers[1].kind, "dense");
    for (k, m) in r.modes.iter().enumerate() {
        let est: u64 = r.layers.iter().map(|l| l.modes[k].m4_instructions).sum();
        assert_eq!(
            m.m4_instructions,
            (est as f64 * (1.0 + model.overhead)).round() as u64
        );
        let share: f64 = r.layers.iter().map(|l| l.modes[k].instruction_share).sum();
        assert!(
            (share - est as f64 / m.m4_instructions as f64).abs() < 1e-9 && share < 1.0,
            "{share}"
        );
    }
}

/// The instruction model reads `docs/results.md`'s per-layer-kind profile table: every
/// linear kind the table measured gets a figure within that kind's per-model range, the
/// ops without MACs a small overhead, and a text without the table no model.
#[test]
fn m4_model_pools_the_measured_per_kind_table() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/results.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let model = M4Model::parse(&text).expect("the per-layer-kind table");
    assert_eq!(&model, M4Model::measured(), "lutq was built with this file");
    assert!(model.models >= 3, "{model:?}");
    assert!(model.overhead > 0.0 && model.overhead < 0.1, "{model:?}");
    let section = &text[text.find("<!-- begin mcu -->").unwrap()..];
    let section = &section[..section.find("<!-- end mcu -->").unwrap()];
    let mut checked = 0;
    for kind in LayerKind::ALL.into_iter().filter(|k| k.is_linear()) {
        for (format, int8) in [(WeightFormat::Codes, false), (WeightFormat::Int8, true)] {
            let per_model: Vec<f64> = section
                .lines()
                .map(|l| l.split('|').map(str::trim).collect::<Vec<_>>())
                .filter(|c| c.len() > 7 && c[3] == kind.name() && c[2].starts_with("int8") == int8)
                .filter_map(|c| c[7].parse().ok())
                .collect();
            if per_model.is_empty() {
                continue;
            }
            let (lo, hi) = per_model
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            let figure = model.per_mac(format, kind);
            // The table prints two decimals.
            assert!(
                figure >= lo - 0.005 && figure <= hi + 0.005,
                "{} {format:?}: {figure} outside {lo}..{hi}",
                kind.name()
            );
            checked += 1;
        }
    }
    assert!(checked >= 6, "{checked} kinds checked");
    assert!(M4Model::parse("no table here").is_none());
    assert!(M4Model::parse("<!-- begin mcu -->\n| a | b |\n<!-- end mcu -->").is_none());
}

#[test]
fn an_empty_report_renders_without_a_chart() {
    let r = ReportBuilder::new("m.onnx", 0, "calibration", "off", 0).finish();
    let html = r.to_html();
    assert!(html.contains("No per-layer SQNR was measured."));
    assert!(!html.contains("<svg"));
    assert!(html.contains("measured on the calibration samples"));
}
