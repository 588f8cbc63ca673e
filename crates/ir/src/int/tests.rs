use super::*;

/// The contract's definition, written out naively over i128 with floor division.
fn reference(a: i64, s: i32) -> i64 {
    if s > 0 {
        let d = 1i128 << s;
        (a as i128 + d / 2).div_euclid(d) as i64
    } else {
        (a as i128 * (1i128 << -s)) as i64
    }
}

#[test]
fn rshift_round_ties_go_up_for_both_signs() {
    assert_eq!(rshift_round(1, 1), 1); // 0.5 -> 1
    assert_eq!(rshift_round(-1, 1), 0); // -0.5 -> 0 (toward +inf)
    assert_eq!(rshift_round(3, 1), 2); // 1.5 -> 2
    assert_eq!(rshift_round(-3, 1), -1); // -1.5 -> -1
    assert_eq!(rshift_round(-5, 2), -1); // -1.25 -> -1
    assert_eq!(rshift_round(-6, 2), -1); // -1.5 -> -1
    assert_eq!(rshift_round(-7, 2), -2); // -1.75 -> -2
}

#[test]
fn rshift_round_zero_and_negative_shifts() {
    assert_eq!(rshift_round(-17, 0), -17);
    assert_eq!(rshift_round(-17, -2), -68);
    assert_eq!(rshift_round(5, -3), 40);
}

#[test]
fn rshift_round_large_shifts() {
    assert_eq!(rshift_round(i32::MAX as i64, 31), 1);
    assert_eq!(rshift_round(i32::MIN as i64, 31), -1);
    assert_eq!(rshift_round(i32::MIN as i64, 32), 0);
    assert_eq!(rshift_round(i32::MAX as i64, 40), 0);
    assert_eq!(rshift_round(-1, 63), 0);
    assert_eq!(rshift_round(i32::MIN as i64, 100), 0);
}

#[test]
fn rshift_round_matches_the_reference_everywhere() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..200_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let a = (x as i64) >> (x % 40); // spread magnitudes
        let a = a.clamp(i32::MIN as i64, i32::MAX as i64);
        let s = (x >> 48) as i32 % 40 - 8;
        assert_eq!(rshift_round(a, s), reference(a, s), "a={a} s={s}");
    }
}

#[test]
fn shifting_twice_is_not_shifting_once() {
    // The counterexample every shift-merging rewrite must respect: 1 · 2^-1 = 0.5 rounds
    // up to 1, and 1 · 2^-1 again rounds up to 1; 1 · 2^-2 = 0.25 rounds to 0.
    assert_eq!(rshift_round(rshift_round(1, 1), 1), 1);
    assert_eq!(rshift_round(1, 2), 0);
}

#[test]
fn clamp_saturates() {
    assert_eq!(clamp(300, 0, 255), 255);
    assert_eq!(clamp(-300, -128, 127), -128);
    assert_eq!(clamp(5, 0, 6), 5);
}

#[test]
fn fixed_point_rescale_approximates_its_factor() {
    for &f in &[1e-9, 3.7e-5, 0.001953125, 0.3, 0.99999, 1.0, 1.5, 1000.0] {
        let r = Rescale::from_factor(f).unwrap();
        let Rescale::Multiplier { multiplier, .. } = r else {
            panic!()
        };
        assert!((1 << 30..=i32::MAX).contains(&multiplier), "{multiplier}");
        assert!((r.factor() / f - 1.0).abs() < 1e-9, "{f} -> {}", r.factor());
        let acc = 123_456i64;
        let got = r.apply(acc, Rounding::HalfUp);
        assert!((got as f64 - acc as f64 * f).abs() <= 0.5 + 1e-6 * acc as f64 * f);
    }
    assert_eq!(Rescale::from_factor(0.0), None);
    assert_eq!(Rescale::from_factor(f64::NAN), None);
    assert_eq!(Rescale::from_factor(2f64.powi(31)), None);
}

#[test]
fn codes_pack_low_nibble_first_with_byte_aligned_rows() {
    let codes: Vec<u8> = vec![1, 2, 3, 4, 5, 6, 7, 8, 9]; // 3 rows of 3
    let packed = QWeights::pack_codes(3, 3, &codes);
    assert_eq!(packed, vec![0x21, 0x03, 0x54, 0x06, 0x87, 0x09]);
    for o in 0..3 {
        for k in 0..3 {
            assert_eq!(QWeights::code(&packed, 3, o, k), codes[o * 3 + k]);
        }
    }
    let lut: [i8; 16] = std::array::from_fn(|i| (i as i8 - 8) * 10);
    let w = QWeights::Lut {
        shape: [3, 3, 1, 1],
        luts: vec![lut],
        codes: packed,
    };
    let decoded = w.decode();
    assert_eq!(
        decoded,
        codes.iter().map(|&c| lut[c as usize]).collect::<Vec<_>>()
    );
}

fn dense(weights: Vec<i8>, k: usize, bias: i32, shift: i32) -> IntGraph {
    let mut g = IntGraph::new("t");
    g.inputs.push(IntInput {
        name: "x".into(),
        shape: vec![1, k],
    });
    let x = g.push(IntNode {
        name: "x".into(),
        op: IntOp::QuantizeInput { input: 0 },
        inputs: vec![],
        ty: QType {
            elem: IntElem::U8,
            shape: vec![1, k],
            exp: 4,
        },
    });
    let o = weights.len() / k;
    let y = g.push(IntNode {
        name: "fc".into(),
        op: IntOp::Linear(QLinear {
            conv: None,
            weights: QWeights::Int8 {
                shape: [o, k, 1, 1],
                values: weights,
            },
            bias: vec![bias; o],
            rescale: vec![Rescale::Shift(shift); o],
            lo: -128,
            hi: 127,
            weight_exps: vec![0; o],
        }),
        inputs: vec![x],
        ty: QType {
            elem: IntElem::I8,
            shape: vec![1, o],
            exp: 0,
        },
    });
    g.outputs.push(IntOutput {
        name: "y".into(),
        value: y,
    });
    g
}

#[test]
fn overflow_proof_accepts_a_layer_at_the_limit_and_refuses_one_past_it() {
    // 255 · 127 · k + bias: with k = 66_000, 2_137_365_000 < 2^31 - 1.
    let k = 66_000;
    let ok = dense(vec![127; k], k, 0, 0);
    ok.validate().unwrap();
    let bound = accumulator_bound(
        match &ok.nodes[1].op {
            IntOp::Linear(l) => l,
            _ => unreachable!(),
        },
        IntElem::U8,
    );
    assert_eq!(bound.accumulator, 255 * 127 * k as i64);
    // A bias that pushes it past the limit is refused, naming the node.
    let bad = dense(vec![127; k], k, 11_000_000, 0);
    let err = bad.validate().unwrap_err();
    assert!(
        matches!(err, IntCheckError::Overflow { ref node, .. } if node == "fc"),
        "{err}"
    );
    // So is a left shift of a fitting accumulator.
    let bad = dense(vec![127; k], k, 0, -1);
    assert!(matches!(
        bad.validate(),
        Err(IntCheckError::Overflow { .. })
    ));
    // And the rounding term of a right shift counts too.
    let k2 = 66_313; // 255*127*66313 = 2_147_446_305; + 2^16 > 2^31 - 1
    let bad = dense(vec![127; k2], k2, 0, 17);
    assert!(matches!(
        bad.validate(),
        Err(IntCheckError::Overflow { .. })
    ));
}

#[test]
fn validate_rejects_inconsistent_nodes() {
    let mut g = dense(vec![1; 6], 3, 0, 0);
    g.nodes[1].ty.shape = vec![1, 3];
    assert!(matches!(g.validate(), Err(IntCheckError::Invalid { .. })));
    let mut g = dense(vec![1; 6], 3, 0, 0);
    if let IntOp::Linear(l) = &mut g.nodes[1].op {
        l.lo = -200;
    }
    assert!(g.validate().is_err());
}

#[test]
fn dump_is_stable_and_serde_round_trips() {
    let g = dense(vec![1, -2, 3, 4, 5, -6], 3, 7, 2);
    let text = g.dump();
    assert!(text.contains("%1 = dense %0 w=int8[2, 3, 1, 1]"), "{text}");
    assert!(
        text.contains("shift=2 clamp=[-128,127] : i8[1,2] exp=0  ; fc"),
        "{text}"
    );
    let json = serde_json::to_string(&g).unwrap();
    let back: IntGraph = serde_json::from_str(&json).unwrap();
    assert_eq!(back, g);
    assert_eq!(back.dump(), text);
}

#[test]
fn input_quantizer_floors_exactly_like_f64_floor() {
    // The definition spelled with `f64::floor`, over random bit patterns (every class:
    // normals, subnormals, ±0, ±∞, NaN) and exponents from tiny to huge.
    let naive = |x: f32, exp: i32, lo: i32, hi: i32| {
        let v = (x as f64 * (exp.clamp(-1074, 1023) as f64).exp2() + 0.5).floor();
        clamp(v as i64, lo, hi)
    };
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let specials = [
        0.0f32,
        -0.0,
        0.5,
        -0.5,
        1.5,
        -1.5,
        -2.5,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ];
    // Ties to even: the half-up result, one lower where `x · 2^exp + 0.5` was an exact
    // integer and odd.
    let naive_even = |x: f32, exp: i32, lo: i32, hi: i32| {
        let v = x as f64 * (exp.clamp(-1074, 1023) as f64).exp2() + 0.5;
        let f = v.floor();
        let f = if f == v && f.rem_euclid(2.0) == 1.0 {
            f - 1.0
        } else {
            f
        };
        clamp(f as i64, lo, hi)
    };
    for exp in [-1100, -200, -8, -1, 0, 1, 3, 7, 30, 60, 200, 2000] {
        for (lo, hi) in [(-128, 127), (0, 255), (i32::MIN, i32::MAX)] {
            let q = InputQuantizer::new(exp, lo, hi, Rounding::HalfUp);
            let q_even = InputQuantizer::new(exp, lo, hi, Rounding::HalfEven);
            for i in 0..4000 {
                let x = match specials.get(i) {
                    Some(&v) => v,
                    None => f32::from_bits(next() as u32),
                };
                let want = naive(x, exp, lo, hi);
                assert_eq!(q.apply(x), want, "x {x:e} ({:#x}) exp {exp}", x.to_bits());
                let want = naive_even(x, exp, lo, hi);
                assert_eq!(q_even.apply(x), want, "even: x {x:e} exp {exp}");
            }
        }
    }
}

#[test]
fn rshift_round_even_breaks_ties_to_even_and_agrees_elsewhere() {
    // The definition in exact integer arithmetic: quotient and remainder by 2^s.
    let reference = |a: i64, s: i32| -> i64 {
        if s <= 0 {
            return rshift_round(a, s);
        }
        let d = 1i128 << s;
        let (q, r) = ((a as i128).div_euclid(d), (a as i128).rem_euclid(d));
        let half = d / 2;
        (if r > half || (r == half && q.rem_euclid(2) == 1) {
            q + 1
        } else {
            q
        }) as i64
    };
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut ties = 0;
    for i in 0..200_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let s = (state % 40) as i32 - 4;
        // Exact ties every few draws: a multiple of 2^(s-1).
        let a = if i % 4 == 0 && s > 0 {
            ((state >> 20) as i32 as i64) << (s - 1)
        } else {
            (state >> 16) as i32 as i64
        };
        let got = rshift_round_even(a, s);
        assert_eq!(got, reference(a, s), "a {a} s {s}");
        assert_eq!(Rounding::HalfEven.rshift(a, s), got);
        if s > 0 && a.rem_euclid(1 << s) == 1 << (s - 1) {
            ties += 1;
            // A tie: half-up and half-even differ exactly when half-up is odd.
            let up = rshift_round(a, s);
            assert_eq!(got, if up % 2 != 0 { up - 1 } else { up }, "a {a} s {s}");
        } else {
            assert_eq!(got, rshift_round(a, s), "a {a} s {s}");
        }
    }
    assert!(ties > 10_000, "{ties} ties drawn");
    assert_eq!(rshift_round_even(1, 1), 0); // 0.5 -> 0
    assert_eq!(rshift_round_even(3, 1), 2); // 1.5 -> 2
    assert_eq!(rshift_round_even(-1, 1), 0); // -0.5 -> 0
    assert_eq!(rshift_round_even(-3, 1), -2); // -1.5 -> -2
    assert_eq!(rshift_round_even(-5, 1), -2); // -2.5 -> -2
}

/// Tables are stored once each; an index per row only where rows share tables and that
/// is smaller than a table per row.
#[test]
fn table_layout_stores_shared_tables_once() {
    let a = [1i8; 16];
    let b = [2i8; 16];
    let c = [3i8; 16];
    // One table for the layer: nothing to index.
    let one = TableLayout::of(&[a]);
    assert_eq!((one.tables.len(), one.row_table.is_none()), (1, true));
    assert_eq!(one.size_bytes(), 16);
    // Six rows reading two tables: 32 bytes of tables and 6 of index, not 96.
    let grouped = TableLayout::of(&[a, b, a, a, b, b]);
    assert_eq!(grouped.tables, vec![a, b]);
    assert_eq!(
        grouped.row_table.as_deref(),
        Some(&[0u8, 1, 0, 0, 1, 1][..])
    );
    assert_eq!(grouped.size_bytes(), 38);
    // Every row the same table: stored once, without an index (16 bytes, not 4 + 16).
    let same = TableLayout::of(&[a, a, a, a]);
    assert_eq!((same.tables, same.row_table), (vec![a], None));
    // Every row its own table: the index would only add bytes.
    let own = TableLayout::of(&[a, b, c]);
    assert_eq!((own.tables.len(), own.row_table.is_none()), (3, true));
    assert_eq!(own.size_bytes(), 48);
    // The weights' flash bytes count the same layout.
    let w = QWeights::Lut {
        shape: [6, 2, 1, 1],
        luts: vec![a, b, a, a, b, b],
        codes: vec![0; 6],
    };
    assert_eq!(w.size_bytes(), 6 + 38);
}

#[test]
fn the_dump_names_how_many_distinct_tables_the_rows_read() {
    let a: [i8; 16] = std::array::from_fn(|i| i as i8 - 8);
    let b: [i8; 16] = std::array::from_fn(|i| 2 * (i as i8 - 8));
    let with_luts = |luts: Vec<[i8; 16]>| {
        let mut g = dense(vec![0; 6 * 2], 2, 0, 0);
        if let IntOp::Linear(l) = &mut g.nodes[1].op {
            l.weights = QWeights::Lut {
                shape: [luts.len(), 2, 1, 1],
                codes: QWeights::pack_codes(luts.len(), 2, &vec![0; luts.len() * 2]),
                luts,
            };
        }
        g.dump()
    };
    // Table groups: six rows, two tables.
    let grouped = with_luts(vec![a, b, a, a, b, b]);
    assert!(
        grouped.contains(" luts=6x#") && grouped.contains(" distinct=2 "),
        "{grouped}"
    );
    // A table per row, all different: nothing to add.
    let own = with_luts(vec![a, b]);
    assert!(
        own.contains(" luts=2x#") && !own.contains("distinct"),
        "{own}"
    );
    // One shared table is printed whole.
    let shared = with_luts(vec![a]);
    assert!(shared.contains(" lut=[-8, -7,"), "{shared}");
}
