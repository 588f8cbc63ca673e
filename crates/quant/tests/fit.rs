//! Tests of the weight fitting (`lutq_quant::fit`) on random problems with correlated
//! calibration inputs, built with a small deterministic PRNG.

use lutq_quant::fit::{
    FitOptions, Fitted, LayerProblem, RowScale, ScaleKind, TARGET_DAMP, TARGET_RIDGES,
    TargetMoments, WeightFormat, choose_float_target, cross_times_rows, fit_layer,
    float_target_rows, kmeans_lut, max_fit_exponent, output_error,
};

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
    /// Heavy-tailed (Laplace).
    fn laplace(&mut self) -> f64 {
        let u = self.uniform() - 0.5;
        -u.signum() * (1.0 - 2.0 * u.abs()).max(1e-300).ln()
    }
}

/// `n` input patches of length `k` with strongly correlated columns: a few shared latent
/// factors plus a little independent noise (and a common offset, like post-ReLU data).
fn patches(rng: &mut Rng, n: usize, k: usize) -> Vec<f64> {
    let factors = 3;
    let mix: Vec<f64> = (0..factors * k).map(|_| rng.normal()).collect();
    let mut x = vec![0.0; n * k];
    for p in 0..n {
        let f: Vec<f64> = (0..factors).map(|_| rng.normal()).collect();
        for j in 0..k {
            let mut v = 0.5 + 0.2 * rng.normal();
            for (l, fl) in f.iter().enumerate() {
                v += fl * mix[l * k + j];
            }
            x[p * k + j] = v;
        }
    }
    x
}

/// `Σ_p x_p x_pᵀ`.
fn second_moment(x: &[f64], k: usize) -> Vec<f64> {
    let n = x.len() / k;
    let mut h = vec![0.0; k * k];
    for p in 0..n {
        let row = &x[p * k..(p + 1) * k];
        for i in 0..k {
            let xi = row[i];
            for j in 0..k {
                h[i * k + j] += xi * row[j];
            }
        }
    }
    h
}

struct Problem {
    w: Vec<f32>,
    rows: usize,
    k: usize,
    h: Vec<Vec<f64>>,
}

impl Problem {
    /// Rows with magnitudes spread over a factor of ~16 and heavy-tailed weights.
    fn random(seed: u64, rows: usize, k: usize, groups: usize, with_data: bool) -> Problem {
        let mut rng = Rng::new(seed);
        let mut w = Vec::with_capacity(rows * k);
        for _ in 0..rows {
            let scale = 0.05 * (4.0 * rng.uniform() - 2.0).exp2();
            for _ in 0..k {
                w.push((scale * rng.laplace()) as f32);
            }
        }
        let h = if with_data {
            (0..groups)
                .map(|_| second_moment(&patches(&mut rng, 4 * k + 16, k), k))
                .collect()
        } else {
            Vec::new()
        };
        Problem { w, rows, k, h }
    }
    fn view(&self) -> LayerProblem<'_> {
        LayerProblem {
            weights: &self.w,
            rows: self.rows,
            row_len: self.k,
            hessians: &self.h,
        }
    }
    fn fit(&self, format: WeightFormat, scale: ScaleKind, data_aware: bool) -> Fitted {
        let f = fit_layer(
            &self.view(),
            &FitOptions {
                format,
                scale,
                data_aware,
            },
        );
        check_structure(self, &f, format, scale);
        f
    }
}

const INT8: WeightFormat = WeightFormat::Uniform {
    min: -128,
    max: 127,
};
const INT4: WeightFormat = WeightFormat::Uniform { min: -8, max: 7 };
const FORMATS: [WeightFormat; 3] = [WeightFormat::Lut4, INT4, INT8];
const POT: [ScaleKind; 2] = [ScaleKind::PotLayer, ScaleKind::PotChannel];

/// Every invariant of a `Fitted`, including that its reported error is `E` of its levels.
fn check_structure(p: &Problem, f: &Fitted, format: WeightFormat, scale: ScaleKind) {
    assert_eq!(f.levels.len(), p.rows * p.k);
    assert_eq!(f.scales.len(), p.rows);
    assert!(f.output_error.is_finite() && f.output_error >= 0.0);
    match format {
        WeightFormat::Lut4 | WeightFormat::Lut4PerChannel | WeightFormat::Lut4Groups(_) => {
            let lut = f.lut.expect("Lut4 has a table");
            let codes = f.codes.as_ref().expect("Lut4 has codes");
            assert_eq!(codes.len(), p.rows * p.k);
            let tables = if format == WeightFormat::Lut4 {
                1
            } else {
                p.rows
            };
            assert_eq!(f.luts.len(), tables, "one table per layer or per row");
            if let WeightFormat::Lut4Groups(n) = format {
                let distinct: std::collections::BTreeSet<_> = f.luts.iter().collect();
                assert!(
                    distinct.len() <= n + 1,
                    "{} tables for {n} groups and the shared one",
                    distinct.len()
                );
            }
            if let Some(first) = f.luts.first() {
                assert_eq!(lut, *first, "lut is luts[0]");
            }
            for (i, (&c, &l)) in codes.iter().zip(&f.levels).enumerate() {
                assert!(c < 16, "code {c}");
                let t = if tables == 1 { 0 } else { i / p.k };
                assert_eq!(l, f.luts[t][c as usize], "level {i} is its table's entry");
            }
            for lut in &f.luts {
                assert!(
                    lut.windows(2).all(|w| w[0] <= w[1]),
                    "table sorted: {lut:?}"
                );
            }
        }
        WeightFormat::Uniform { min, max } => {
            assert!(f.lut.is_none() && f.codes.is_none() && f.luts.is_empty());
            for &l in &f.levels {
                assert!(
                    (min..=max).contains(&(l as i32)),
                    "level {l} outside {min}..={max}"
                );
            }
        }
    }
    match scale {
        _ if p.rows == 0 => {}
        ScaleKind::PotLayer => {
            assert!(matches!(f.scales[0], RowScale::Pot(_)));
            assert!(
                f.scales.iter().all(|&s| s == f.scales[0]),
                "one layer exponent"
            );
        }
        ScaleKind::PotChannel => assert!(f.scales.iter().all(|s| matches!(s, RowScale::Pot(_)))),
        ScaleKind::FloatChannel => {
            assert!(
                f.scales
                    .iter()
                    .all(|s| matches!(s, RowScale::Float(x) if *x > 0.0))
            )
        }
    }
    let e = output_error(&p.view(), &f.levels, &f.scales);
    assert!(
        (e - f.output_error).abs() <= 1e-9 * e.max(1e-300),
        "reported {} vs recomputed {e}",
        f.output_error
    );
}

#[test]
fn kmeans_objective_never_increases() {
    for seed in 0..8u64 {
        let mut rng = Rng::new(100 + seed);
        let n = 500 + 700 * seed as usize;
        let values: Vec<f64> = (0..n).map(|_| 20.0 * rng.laplace()).collect();
        let weights: Vec<f64> = (0..n).map(|_| rng.uniform() * rng.uniform()).collect();
        let r = kmeans_lut(&values, &weights);
        assert!(r.history.len() >= 2, "seed {seed}: Lloyd made no step");
        for w in r.history.windows(2) {
            assert!(
                w[1] <= w[0],
                "seed {seed}: objective rose {} -> {}",
                w[0],
                w[1]
            );
        }
        // The recorded objective is the real one of the final table.
        let direct: f64 = values
            .iter()
            .zip(&weights)
            .map(|(&v, &w)| {
                let d = r
                    .lut
                    .iter()
                    .map(|&c| (v - c as f64).abs())
                    .fold(f64::INFINITY, f64::min);
                w * d * d
            })
            .sum();
        let last = r.objective();
        assert!((direct - last).abs() <= 1e-9 * direct, "{direct} vs {last}");
        assert!(r.lut.windows(2).all(|w| w[0] < w[1]), "distinct, sorted");
    }
}

#[test]
fn data_aware_never_worse_than_plain() {
    let mut ratio_lut = Vec::new();
    for seed in 0..6u64 {
        let groups = 1 + (seed as usize % 2);
        let p = Problem::random(seed, 8 * groups, 24, groups, true);
        for format in FORMATS {
            let scales: &[ScaleKind] = match format {
                WeightFormat::Lut4 => &[
                    ScaleKind::PotLayer,
                    ScaleKind::PotChannel,
                    ScaleKind::FloatChannel,
                ],
                _ => &[
                    ScaleKind::PotLayer,
                    ScaleKind::PotChannel,
                    ScaleKind::FloatChannel,
                ],
            };
            for &scale in scales {
                let plain = p.fit(format, scale, false);
                let aware = p.fit(format, scale, true);
                assert!(
                    aware.output_error <= plain.output_error,
                    "seed {seed} {format:?} {scale:?}: data-aware {} > plain {}",
                    aware.output_error,
                    plain.output_error
                );
                if format == WeightFormat::Lut4 && scale == ScaleKind::PotChannel {
                    ratio_lut.push(aware.output_error / plain.output_error);
                }
            }
        }
    }
    // With correlated inputs GPTQ must actually help, not only tie.
    let mean = ratio_lut.iter().sum::<f64>() / ratio_lut.len() as f64;
    assert!(
        mean < 0.7,
        "data-aware / plain error ratio {mean} ({ratio_lut:?})"
    );
}

#[test]
fn data_aware_without_data_is_not_worse() {
    for seed in 0..4u64 {
        let p = Problem::random(50 + seed, 12, 20, 1, false);
        for format in FORMATS {
            for scale in POT {
                let plain = p.fit(format, scale, false);
                let aware = p.fit(format, scale, true);
                assert!(aware.output_error <= plain.output_error);
            }
        }
    }
}

#[test]
/// Per-channel exponents fit rows of different magnitudes better. Compared on the
/// objective each fit actually minimizes: plain fits (round to nearest, which ignores the
/// correlations in `H`) without data, data-aware fits with and without data. (With a
/// strongly correlated `H`, the error of plain rounding is dominated by the accidental
/// bias `Σ_i δ_i` of each row, which no choice of exponent controls.)
fn pot_channel_beats_pot_layer() {
    for seed in 0..12u64 {
        let with_data = seed % 2 == 0;
        let p = Problem::random(200 + seed, 16, 32, 1, with_data);
        for format in FORMATS {
            for data_aware in [false, true] {
                if with_data && !data_aware {
                    continue;
                }
                let layer = p.fit(format, ScaleKind::PotLayer, data_aware);
                let channel = p.fit(format, ScaleKind::PotChannel, data_aware);
                assert!(
                    channel.output_error <= layer.output_error,
                    "seed {seed} {format:?} aware={data_aware}: channel {} > layer {}",
                    channel.output_error,
                    layer.output_error
                );
            }
        }
    }
}

#[test]
fn int8_is_far_better_than_int4() {
    for seed in 0..3u64 {
        let p = Problem::random(300 + seed, 16, 32, 1, true);
        for scale in POT {
            let e8 = p.fit(INT8, scale, true).output_error;
            let e4 = p.fit(INT4, scale, true).output_error;
            assert!(
                e8 * 50.0 < e4,
                "seed {seed} {scale:?}: int8 {e8} vs int4 {e4}"
            );
        }
    }
}

#[test]
fn float_channel_levels_stay_in_range() {
    let p = Problem::random(400, 16, 40, 2, true);
    for (min, max) in [(-8, 7), (-127, 127), (-128, 127)] {
        let format = WeightFormat::Uniform { min, max };
        for data_aware in [false, true] {
            // `check_structure` asserts the range.
            let f = p.fit(format, ScaleKind::FloatChannel, data_aware);
            if !data_aware {
                // The largest weight of each row lands exactly on ±max.
                for o in 0..p.rows {
                    let row = &f.levels[o * p.k..(o + 1) * p.k];
                    let m = row.iter().map(|&l| (l as i32).abs()).max().unwrap();
                    assert_eq!(m, max, "row {o}");
                }
            }
        }
    }
}

#[test]
fn lut_structure_and_exponents() {
    let p = Problem::random(500, 10, 30, 1, true);
    for scale in [ScaleKind::PotLayer, ScaleKind::PotChannel] {
        for data_aware in [false, true] {
            let f = p.fit(WeightFormat::Lut4, scale, data_aware);
            // Scaled weights fill the table's range: the largest |level| is at least 64
            // (the max-fitting exponent puts max|w|·2^e in [64, 128)), except where the
            // data-aware search moved an exponent down by one.
            let max_level = f.levels.iter().map(|&l| (l as i32).abs()).max().unwrap();
            assert!(max_level >= 32, "{scale:?} {data_aware}: {max_level}");
            if scale == ScaleKind::PotLayer && !data_aware {
                // The plain fit uses the max-fitting exponent: the largest weight scales
                // into (63.75, 128.5], the first half of the grid is not enough.
                let RowScale::Pot(e) = f.scales[0] else {
                    panic!("power of two")
                };
                let m = p.w.iter().fold(0.0f64, |m, &x| m.max((x as f64).abs()));
                let scaled = m * (e as f64).exp2();
                assert!(scaled > 63.75 && scaled <= 128.5, "{scaled}");
            }
        }
    }
}

#[test]
fn degenerate_inputs_do_not_panic() {
    let mut rng = Rng::new(7);
    let x: Vec<f64> = (0..9).map(|_| rng.normal()).collect();
    let rank1: Vec<f64> = (0..81).map(|i| x[i / 9] * x[i % 9]).collect();
    let w: Vec<f32> = (0..6 * 9).map(|_| rng.laplace() as f32 * 0.1).collect();
    let cases = vec![
        // All zero, with and without data.
        Problem {
            w: vec![0.0; 12],
            rows: 3,
            k: 4,
            h: vec![],
        },
        Problem {
            w: vec![0.0; 12],
            rows: 3,
            k: 4,
            h: vec![vec![1.0; 16]],
        },
        // Row length one; one row; empty.
        Problem {
            w: vec![0.3, -0.2, 0.0, 1e-3],
            rows: 4,
            k: 1,
            h: vec![vec![2.0]; 4],
        },
        Problem {
            w: vec![0.5, -0.25, 0.125],
            rows: 1,
            k: 3,
            h: vec![],
        },
        Problem {
            w: vec![],
            rows: 0,
            k: 5,
            h: vec![],
        },
        Problem {
            w: vec![],
            rows: 2,
            k: 0,
            h: vec![],
        },
        // Tiny and huge weights.
        Problem {
            w: vec![1e-30, -2e-30, 3e-31, 0.0, 1e-38, -1e-40],
            rows: 2,
            k: 3,
            h: vec![vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]],
        },
        Problem {
            w: vec![1e20, -3e19, 5.0, 1.0],
            rows: 2,
            k: 2,
            h: vec![],
        },
        // Singular (rank one) and zero matrices; one row per group (depthwise-like).
        Problem {
            w,
            rows: 6,
            k: 9,
            h: vec![
                rank1.clone(),
                vec![0.0; 81],
                rank1.clone(),
                rank1,
                vec![0.0; 81],
                {
                    let mut id = vec![0.0; 81];
                    for i in 0..9 {
                        id[i * 10] = 1.0;
                    }
                    id
                },
            ],
        },
        // Identical weights everywhere (one distinct value).
        Problem {
            w: vec![0.7; 20],
            rows: 4,
            k: 5,
            h: vec![vec![1.0; 25]],
        },
    ];
    for (i, p) in cases.iter().enumerate() {
        for format in FORMATS.into_iter().chain([
            WeightFormat::Uniform { min: 0, max: 0 },
            WeightFormat::Lut4PerChannel,
        ]) {
            for scale in [
                ScaleKind::PotLayer,
                ScaleKind::PotChannel,
                ScaleKind::FloatChannel,
            ] {
                for data_aware in [false, true] {
                    let f = p.fit(format, scale, data_aware);
                    if p.w.iter().all(|&x| x == 0.0) {
                        assert_eq!(f.output_error, 0.0, "case {i}");
                        assert!(f.levels.iter().all(|&l| l == 0), "case {i}");
                    }
                }
            }
        }
    }
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let p = Problem::random(600, 40, 48, 2, true);
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let three = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    for format in FORMATS.into_iter().chain([WeightFormat::Lut4PerChannel]) {
        for scale in POT {
            let a = one.install(|| p.fit(format, scale, true));
            let b = three.install(|| p.fit(format, scale, true));
            assert_eq!(a, b, "{format:?} {scale:?}");
        }
    }
}

#[test]
#[should_panic(expected = "multiple of the number of groups")]
fn rows_must_divide_into_groups() {
    let p = Problem {
        w: vec![0.1; 6],
        rows: 3,
        k: 2,
        h: vec![vec![1.0, 0.0, 0.0, 1.0]; 2],
    };
    p.fit(WeightFormat::Lut4, ScaleKind::PotLayer, true);
}

/// The size of MobileNetV2's classifier: `cargo test -p lutq-quant --release --test fit
/// -- --ignored --nocapture` (set `RAYON_NUM_THREADS=1` for one core).
#[test]
#[ignore]
fn timing_dense_1000x1280() {
    use std::time::Instant;
    let (rows, k, n) = (1000, 1280, 4096);
    let mut rng = Rng::new(9);
    let t = Instant::now();
    let x = patches(&mut rng, n, k);
    // H = XᵀX, rows of H in parallel would need rayon here; keep it simple: Xᵀ first.
    let mut xt = vec![0.0; k * n];
    for p in 0..n {
        for j in 0..k {
            xt[j * n + p] = x[p * k + j];
        }
    }
    let mut h = vec![0.0; k * k];
    for i in 0..k {
        for j in i..k {
            let s: f64 = xt[i * n..(i + 1) * n]
                .iter()
                .zip(&xt[j * n..(j + 1) * n])
                .map(|(a, b)| a * b)
                .sum();
            h[i * k + j] = s;
            h[j * k + i] = s;
        }
    }
    eprintln!("H built in {:.2?}", t.elapsed());
    let w: Vec<f32> = (0..rows * k)
        .map(|_| (0.02 * rng.laplace()) as f32)
        .collect();
    let p = Problem {
        w,
        rows,
        k,
        h: vec![h],
    };
    for (format, scale, aware) in [
        (WeightFormat::Lut4, ScaleKind::PotChannel, false),
        (WeightFormat::Lut4, ScaleKind::PotChannel, true),
        (WeightFormat::Lut4, ScaleKind::PotLayer, true),
        (INT4, ScaleKind::PotChannel, true),
    ] {
        let t = Instant::now();
        let f = fit_layer(
            &p.view(),
            &FitOptions {
                format,
                scale,
                data_aware: aware,
            },
        );
        eprintln!(
            "{format:?} {scale:?} data_aware={aware}: {:.2?}, E = {:.4e}",
            t.elapsed(),
            f.output_error
        );
    }

    // A depthwise layer (960 groups of one 3×3 row) and the largest pointwise conv.
    let dw = Problem {
        w: (0..960 * 9).map(|_| (0.1 * rng.laplace()) as f32).collect(),
        rows: 960,
        k: 9,
        h: (0..960)
            .map(|_| second_moment(&patches(&mut rng, 4096, 9), 9))
            .collect(),
    };
    let pw = Problem::random(10, 320, 960, 1, false);
    let pw = Problem {
        h: vec![second_moment(&patches(&mut rng, 2048, 960), 960)],
        ..pw
    };
    for (name, p) in [("depthwise 960×9", &dw), ("pointwise 320×960", &pw)] {
        let t = Instant::now();
        let f = p.fit(WeightFormat::Lut4, ScaleKind::PotChannel, true);
        eprintln!("{name}: {:.2?}, E = {:.4e}", t.elapsed(), f.output_error);
    }
}

const ALL_SCALES: [ScaleKind; 3] = [
    ScaleKind::PotLayer,
    ScaleKind::PotChannel,
    ScaleKind::FloatChannel,
];

/// One table per output channel is never worse than the shared table, row by row in
/// total, plain and data-aware, with and without data; and data-aware per-channel fits
/// are never worse than plain ones.
#[test]
fn per_channel_tables_never_worse_than_shared() {
    let mut ratios = Vec::new();
    for seed in 0..8u64 {
        let with_data = seed % 4 != 3;
        let groups = 1 + (seed as usize % 2);
        let p = Problem::random(700 + seed, 12 * groups, 40, groups, with_data);
        for scale in ALL_SCALES {
            let mut pc = Vec::new();
            for data_aware in [false, true] {
                let shared = p.fit(WeightFormat::Lut4, scale, data_aware);
                let own = p.fit(WeightFormat::Lut4PerChannel, scale, data_aware);
                assert!(
                    own.output_error <= shared.output_error,
                    "seed {seed} {scale:?} aware={data_aware}: per-channel {} > shared {}",
                    own.output_error,
                    shared.output_error
                );
                if scale == ScaleKind::PotChannel {
                    ratios.push(own.output_error / shared.output_error);
                }
                pc.push(own.output_error);
            }
            assert!(
                pc[1] <= pc[0],
                "seed {seed} {scale:?}: aware {} > plain {}",
                pc[1],
                pc[0]
            );
        }
    }
    // Rows' own tables must actually help, not only tie.
    let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
    eprintln!("per-channel / shared E, PotChannel: mean {mean:.3} {ratios:.3?}");
    assert!(
        mean < 0.95,
        "per-channel / shared error ratio {mean} ({ratios:?})"
    );
}

/// Table groups on rows of two shapes (heavy-tailed and two-peaked, the kind of mix one
/// shared table serves badly): never worse than the shared table, at most `n + 1`
/// distinct tables (`check_structure`), and clearly better than the shared table with
/// two groups, more so with four. (A table per row, 16 entries for 48 weights, is
/// nearly lossless here: E ≈ 0.2–0.5 of the shared table's.)
#[test]
fn table_groups_fit_rows_of_two_shapes() {
    let mut ratios = [Vec::new(), Vec::new()];
    for seed in 0..6u64 {
        let with_data = seed % 3 != 2;
        let mut p = Problem::random(900 + seed, 32, 48, 2, with_data);
        let mut rng = Rng::new(seed);
        for o in (0..p.rows).filter(|o| o % 2 == 1) {
            let a = 0.05 * (1.0 + rng.uniform());
            for w in &mut p.w[o * p.k..(o + 1) * p.k] {
                let peak = if rng.uniform() < 0.5 { -a } else { a };
                *w = (peak + 0.1 * a * rng.normal()) as f32;
            }
        }
        for scale in POT {
            for data_aware in [false, true] {
                let shared = p.fit(WeightFormat::Lut4, scale, data_aware).output_error;
                for (i, n) in [2, 4].into_iter().enumerate() {
                    let g = p
                        .fit(WeightFormat::Lut4Groups(n), scale, data_aware)
                        .output_error;
                    assert!(
                        g <= shared,
                        "seed {seed} {scale:?} aware={data_aware} n={n}: groups {g} > shared {shared}"
                    );
                    if scale == ScaleKind::PotChannel && data_aware {
                        ratios[i].push(g / shared);
                    }
                }
            }
        }
    }
    let mean = |r: &[f64]| r.iter().sum::<f64>() / r.len() as f64;
    eprintln!("groups / shared E: two {ratios:.3?}");
    assert!(mean(&ratios[0]) < 0.85, "two tables: {:?}", ratios[0]);
    assert!(mean(&ratios[1]) < 0.75, "four tables: {:?}", ratios[1]);
}

/// Per-channel tables: every row's scaled weights use its table's range (max-fitting
/// exponents with `PotChannel`), and `PotLayer` keeps one exponent.
#[test]
fn per_channel_table_structure() {
    let p = Problem::random(800, 20, 36, 2, true);
    for scale in ALL_SCALES {
        for data_aware in [false, true] {
            // `check_structure` checks levels == luts[o][codes], codes < 16, sorted
            // tables, one table per row and the scale kind.
            let f = p.fit(WeightFormat::Lut4PerChannel, scale, data_aware);
            if scale == ScaleKind::PotChannel && !data_aware {
                for o in 0..p.rows {
                    let row = &f.levels[o * p.k..(o + 1) * p.k];
                    let m = row.iter().map(|&l| (l as i32).abs()).max().unwrap();
                    assert!(m >= 48, "row {o}: largest level {m}");
                }
            }
        }
    }
}

/// `Lut4PerChannel` at the size of MobileNetV2's classifier against the shared table:
/// `cargo test -p lutq-quant --release --test fit -- --ignored --nocapture per_channel`.
#[test]
#[ignore]
fn timing_per_channel_1000x1280() {
    use std::time::Instant;
    let (rows, k, n) = (1000, 1280, 4096);
    let mut rng = Rng::new(19);
    let x = patches(&mut rng, n, k);
    let mut xt = vec![0.0; k * n];
    for p in 0..n {
        for j in 0..k {
            xt[j * n + p] = x[p * k + j];
        }
    }
    let h: Vec<f64> = {
        let rowsum = |i: usize| -> Vec<f64> {
            (0..k)
                .map(|j| {
                    xt[i * n..(i + 1) * n]
                        .iter()
                        .zip(&xt[j * n..(j + 1) * n])
                        .map(|(a, b)| a * b)
                        .sum()
                })
                .collect()
        };
        use rayon::prelude::*;
        (0..k).into_par_iter().flat_map_iter(rowsum).collect()
    };
    // Rows of different magnitudes, as in trained layers.
    let mut w = Vec::with_capacity(rows * k);
    for _ in 0..rows {
        let scale = 0.02 * (3.0 * rng.uniform() - 1.5).exp2();
        for _ in 0..k {
            w.push((scale * rng.laplace()) as f32);
        }
    }
    let p = Problem {
        w,
        rows,
        k,
        h: vec![h],
    };
    for aware in [false, true] {
        let mut res = Vec::new();
        for format in [WeightFormat::Lut4, WeightFormat::Lut4PerChannel] {
            let t = Instant::now();
            let f = fit_layer(
                &p.view(),
                &FitOptions {
                    format,
                    scale: ScaleKind::PotChannel,
                    data_aware: aware,
                },
            );
            let dt = t.elapsed().as_secs_f64();
            eprintln!(
                "{format:?} PotChannel data_aware={aware}: {dt:.2} s, E = {:.4e}",
                f.output_error
            );
            res.push((dt, f.output_error));
        }
        eprintln!(
            "data_aware={aware}: per-channel / shared: time {:.2}, E {:.4}",
            res[1].0 / res[0].0,
            res[1].1 / res[0].1
        );
        assert!(res[1].1 <= res[0].1);
    }
}

/// `Σ_p x̂_p x_pᵀ` of two equally long patch sets.
fn cross_moment(xq: &[f64], x: &[f64], k: usize) -> Vec<f64> {
    let n = x.len() / k;
    let mut c = vec![0.0; k * k];
    for p in 0..n {
        for i in 0..k {
            for j in 0..k {
                c[i * k + j] += xq[p * k + i] * x[p * k + j];
            }
        }
    }
    c
}

#[test]
fn float_targets_are_the_weights_when_the_input_is_exact() {
    let mut rng = Rng::new(31);
    let (rows, k) = (6, 12);
    let x = patches(&mut rng, 200, k);
    let h = second_moment(&x, k);
    let w: Vec<f32> = (0..rows * k).map(|_| rng.laplace() as f32 * 0.1).collect();
    let hs = [h];
    let t = float_target_rows(&w, rows, k, &hs, &cross_times_rows(&w, rows, k, &hs));
    for (a, b) in t.iter().zip(&w) {
        assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
    }
}

#[test]
fn float_targets_undo_upstream_error() {
    // The quantized input is the float input with a per-column gain error and noise:
    // the float-target rows applied to it reproduce `W x` better than `W` does, and
    // they minimise the damped end-to-end objective (a perturbation only raises it).
    let mut rng = Rng::new(32);
    let (rows, k, n, groups) = (4, 10, 400, 2);
    let w: Vec<f32> = (0..rows * k).map(|_| rng.laplace() as f32 * 0.1).collect();
    let mut hs = Vec::new();
    let mut cs = Vec::new();
    let mut data = Vec::new();
    for _ in 0..groups {
        let x = patches(&mut rng, n, k);
        let gain: Vec<f64> = (0..k).map(|_| 1.0 + 0.1 * rng.normal()).collect();
        let xq: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, v)| v * gain[i % k] + 0.02 * rng.normal())
            .collect();
        hs.push(second_moment(&xq, k));
        cs.push(cross_moment(&xq, &x, k));
        data.push((x, xq));
    }
    let t = float_target_rows(&w, rows, k, &hs, &cross_times_rows(&w, rows, k, &cs));
    let rpg = rows / groups;
    for o in 0..rows {
        let g = o / rpg;
        let (x, xq) = &data[g];
        let lambda = TARGET_DAMP * (0..k).map(|i| hs[g][i * k + i]).sum::<f64>() / k as f64;
        let w_o: Vec<f64> = w[o * k..(o + 1) * k].iter().map(|&v| v as f64).collect();
        // Σ_p (w·x − v·x̂)² + λ‖v − w‖².
        let objective = |v: &[f64]| {
            let mut e = 0.0;
            for p in 0..n {
                let (xp, qp) = (&x[p * k..(p + 1) * k], &xq[p * k..(p + 1) * k]);
                let d: f64 = (0..k).map(|i| w_o[i] * xp[i] - v[i] * qp[i]).sum();
                e += d * d;
            }
            e + lambda
                * v.iter()
                    .zip(&w_o)
                    .map(|(a, b)| (a - b).powi(2))
                    .sum::<f64>()
        };
        let t_o: Vec<f64> = t[o * k..(o + 1) * k].iter().map(|&v| v as f64).collect();
        let best = objective(&t_o);
        assert!(
            best < 0.5 * objective(&w_o),
            "row {o}: {best} vs {}",
            objective(&w_o)
        );
        for i in 0..k {
            for step in [-1e-3, 1e-3] {
                let mut v = t_o.clone();
                v[i] += step;
                assert!(objective(&v) >= best * (1.0 - 1e-9), "row {o}, column {i}");
            }
        }
    }
}

/// A layer's input on `n` patches: the float patches `x` and the quantized ones `x̂`,
/// `x̂ = gain ⊙ x + noise`, with `gain` fixed per column (a systematic upstream error
/// that float targets can undo) and `noise` fresh per patch (which they cannot).
fn upstream(rng: &mut Rng, n: usize, k: usize, gain: &[f64], noise: f64) -> (Vec<f64>, Vec<f64>) {
    let x = patches(rng, n, k);
    let xq = x
        .iter()
        .enumerate()
        .map(|(i, v)| v * gain[i % k] + noise * rng.normal())
        .collect();
    (x, xq)
}

/// `Σ_p ‖W x_p − V x̂_p‖²` over explicit patches.
fn end_to_end_error(w: &[f32], v: &[f32], k: usize, x: &[f64], xq: &[f64]) -> f64 {
    let n = x.len() / k;
    let mut e = 0.0;
    for (wr, vr) in w.chunks(k).zip(v.chunks(k)) {
        for p in 0..n {
            let d: f64 = (0..k)
                .map(|i| wr[i] as f64 * x[p * k + i] - vr[i] as f64 * xq[p * k + i])
                .sum();
            e += d * d;
        }
    }
    e
}

fn m<'a>(hessians: &'a [Vec<f64>], cross_rows: &'a [f64]) -> TargetMoments<'a> {
    TargetMoments {
        hessians,
        cross_rows,
    }
}

/// `Ĥ` and every row's `C w_o` of one group of patches.
fn moments_of(x: &[f64], xq: &[f64], k: usize, w: &[f32]) -> (Vec<Vec<f64>>, Vec<f64>) {
    let c = [cross_moment(xq, x, k)];
    (
        vec![second_moment(xq, k)],
        cross_times_rows(w, w.len() / k, k, &c),
    )
}

#[test]
fn held_out_choice_takes_targets_that_generalize() {
    // A systematic gain error upstream, the same on fit and held-out patches: float
    // targets undo it, so the choice keeps them, and on patches neither part saw they
    // beat the float weights.
    let mut rng = Rng::new(41);
    let (rows, k) = (5, 8);
    let gain: Vec<f64> = (0..k).map(|_| 1.0 + 0.15 * rng.normal()).collect();
    let w: Vec<f32> = (0..rows * k).map(|_| rng.laplace() as f32 * 0.1).collect();
    let (xa, qa) = upstream(&mut rng, 300, k, &gain, 0.01);
    let (xb, qb) = upstream(&mut rng, 100, k, &gain, 0.01);
    let (xn, qn) = upstream(&mut rng, 400, k, &gain, 0.01);
    let (ha, ca) = moments_of(&xa, &qa, k, &w);
    let (hb, cb) = moments_of(&xb, &qb, k, &w);
    let (xall, qall) = ([xa, xb].concat(), [qa, qb].concat());
    let (h, c) = moments_of(&xall, &qall, k, &w);
    let choice = choose_float_target(&w, rows, k, m(&ha, &ca), m(&hb, &cb), m(&h, &c));
    let ridge = choice
        .ridge
        .expect("targets that undo a systematic error are kept");
    assert!(TARGET_RIDGES.contains(&ridge));
    let fresh = end_to_end_error(&w, &choice.rows, k, &xn, &qn);
    let plain = end_to_end_error(&w, &w, k, &xn, &qn);
    assert!(fresh < 0.5 * plain, "{fresh} vs {plain}");
}

#[test]
fn held_out_choice_keeps_the_float_weights_when_targets_fit_noise() {
    // No systematic error, but the fit part is so small (fewer patches than inputs)
    // that its moments are mostly noise: targets fitted on it do worse on held-out
    // patches than the float weights, so the choice keeps the weights, exactly.
    let mut rng = Rng::new(42);
    let (rows, k) = (4, 24);
    let gain = vec![1.0; k];
    let w: Vec<f32> = (0..rows * k).map(|_| rng.laplace() as f32 * 0.1).collect();
    let (xa, qa) = upstream(&mut rng, 12, k, &gain, 0.3);
    let (xb, qb) = upstream(&mut rng, 400, k, &gain, 0.3);
    let (ha, ca) = moments_of(&xa, &qa, k, &w);
    let (hb, cb) = moments_of(&xb, &qb, k, &w);
    // Every candidate really is worse on the held-out patches than the weights.
    let plain = end_to_end_error(&w, &w, k, &xb, &qb);
    for &ridge in &TARGET_RIDGES {
        let v = lutq_quant::fit::float_target_rows_damped(&w, rows, k, &ha, &ca, ridge);
        let e = end_to_end_error(&w, &v, k, &xb, &qb);
        assert!(
            e > plain,
            "ridge {ridge}: {e} vs {plain}: the premise does not hold"
        );
    }
    let choice = choose_float_target(&w, rows, k, m(&ha, &ca), m(&hb, &cb), m(&ha, &ca));
    assert_eq!(choice.ridge, None);
    assert_eq!(choice.rows, w);
}

/// One row hundreds of times larger than the others but reading an input of tiny
/// variance (BatchNorm folded into a nearly constant channel): with one exponent per
/// layer, the max-fitting exponent leaves the other rows a level or two; the fit must
/// clip the outlier row instead, since that costs almost nothing in `E`.
#[test]
fn pot_layer_clips_an_outlier_row_of_little_output() {
    let (rows, k) = (32, 9);
    let mut p = Problem::random(11, rows, k, rows, true);
    for w in &mut p.w[..k] {
        *w *= 300.0;
    }
    for v in &mut p.h[0] {
        *v *= 1e-6;
    }
    // The output energy of the ordinary rows: the error of quantizing them all to zero.
    let ordinary: f64 = (1..rows)
        .map(|o| {
            let (w, h) = (&p.w[o * k..(o + 1) * k], &p.h[o]);
            (0..k)
                .flat_map(|i| (0..k).map(move |j| (i, j)))
                .map(|(i, j)| w[i] as f64 * h[i * k + j] * w[j] as f64)
                .sum::<f64>()
        })
        .sum();
    let (mn, mx) = p.w.iter().fold((0f64, 0f64), |(a, b), &v| {
        (a.min(v as f64), b.max(v as f64))
    });
    for format in [WeightFormat::Lut4, INT4] {
        let (lo, hi) = format.range();
        let max_fit = max_fit_exponent(mn, mx, lo, hi).unwrap();
        let f = p.fit(format, ScaleKind::PotLayer, true);
        let RowScale::Pot(e) = f.scales[0] else {
            panic!("power-of-two scale")
        };
        assert!(
            e >= max_fit + 2,
            "{format:?}: exponent {e}, max-fitting {max_fit}: the outlier row was not clipped"
        );
        let relative = f.output_error / ordinary;
        assert!(
            relative < 0.05,
            "{format:?}: relative output error {relative:.3} (exponent {e})"
        );
    }
}
