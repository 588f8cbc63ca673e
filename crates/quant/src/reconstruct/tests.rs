//! The hand-written backward pass against central finite differences, and the pieces
//! of the reconstruction against direct computations.

use super::soft::{Regulariser, SoftLayer};
use super::*;

fn rng_f32(r: &mut Rng) -> f32 {
    (r.next() >> 40) as f32 / (1u64 << 24) as f32
}

/// A random soft layer of `groups` groups of `rpg` rows of `k` weights, one shared table
/// (learned) or one per row, every `h` strictly inside (0, 1).
fn random_layer(r: &mut Rng, groups: usize, rpg: usize, k: usize, per_row: bool) -> SoftLayer {
    let o_n = groups * rpg;
    let table: Vec<f32> = (0..16).map(|i| -60.0 + 8.0 * i as f32).collect();
    let tables = if per_row {
        (0..o_n)
            .map(|_| table.iter().map(|v| v + 3.0 * rng_f32(r)).collect())
            .collect()
    } else {
        vec![table]
    };
    let n = tables.len();
    let mut lo = Vec::new();
    let mut hi = Vec::new();
    for i in 0..o_n * k {
        let l = (r.next() % 15) as u8;
        lo.push(l);
        // A few fixed weights (lo = hi) exercise that path too.
        hi.push(if i % 7 == 3 { l } else { l + 1 });
    }
    SoftLayer {
        o_n,
        k,
        groups,
        scale: (0..o_n).map(|o| 2f32.powi(-6 - (o % 2) as i32)).collect(),
        tables,
        learn_tables: true,
        frozen_entry: vec![vec![false; 16]; n],
        lo,
        hi,
        v: (0..o_n * k).map(|_| 3.6 * rng_f32(r) - 1.8).collect(),
        bias: (0..o_n).map(|_| rng_f32(r) - 0.3).collect(),
        step: 0.05,
        clamp: (0.0, 1.5),
        loss_scale: 0.7,
    }
}

/// Central differences of the loss in every parameter, against the analytic gradient,
/// on the first random problem (from `seed` on) whose outputs all lie away from the
/// clamp's corners by more than the perturbations can move them (so the loss is smooth
/// around the point and the check does not straddle a kink).
fn check_gradients(groups: usize, rpg: usize, k: usize, per_row: bool, seed: u64) {
    let b = 16;
    let (layer, x, t) = (seed..seed + 1000)
        .find_map(|seed| {
            let mut r = Rng(seed);
            let layer = random_layer(&mut r, groups, rpg, k, per_row);
            let x: Vec<Vec<f32>> = (0..groups)
                .map(|_| (0..b * k).map(|_| 2.0 * rng_f32(&mut r)).collect())
                .collect();
            let t: Vec<Vec<f32>> = (0..groups)
                .map(|_| (0..b * rpg).map(|_| 1.6 * rng_f32(&mut r) - 0.1).collect())
                .collect();
            let w = layer.weights(false);
            let smooth = (0..groups).all(|g| {
                (0..b).all(|p| {
                    (0..rpg).all(|j| {
                        let o = g * rpg + j;
                        let y: f32 = (0..k).map(|i| x[g][p * k + i] * w[o * k + i]).sum::<f32>()
                            + layer.bias[o];
                        (y - layer.clamp.0).abs() > 5e-3 && (y - layer.clamp.1).abs() > 5e-3
                    })
                })
            });
            smooth.then_some((layer, x, t))
        })
        .expect("a random problem without outputs at the clamp");
    let reg = Some(Regulariser {
        lambda: 0.5,
        beta: 3.0,
    });
    let (_, grads) = layer.loss_and_grad(&x, &t, b, reg);
    let loss = |l: &SoftLayer| l.loss_and_grad(&x, &t, b, reg).0;
    // Some outputs are clamped and some not: both paths of the backward pass are checked.
    let w = layer.weights(false);
    let inside = (0..groups * b * rpg)
        .filter(|i| {
            let (g, p, j) = (i / (b * rpg), i / rpg % b, i % rpg);
            let o = g * rpg + j;
            let y: f32 =
                (0..k).map(|q| x[g][p * k + q] * w[o * k + q]).sum::<f32>() + layer.bias[o];
            y > layer.clamp.0 && y < layer.clamp.1
        })
        .count();
    assert!(
        inside > 0 && inside < groups * b * rpg,
        "{inside} of {} outputs inside the clamp",
        groups * b * rpg
    );
    let mut checked = 0;
    let mut compare = |what: String, analytic: f32, plus: f64, minus: f64, eps: f64| {
        let numeric = (plus - minus) / (2.0 * eps);
        let tol = 5e-3 * numeric.abs().max(analytic.abs() as f64) + 1e-4;
        assert!(
            (numeric - analytic as f64).abs() <= tol,
            "{what}: analytic {analytic}, finite difference {numeric}"
        );
        checked += 1;
    };
    let eps = 1e-2;
    let eps_t = 1e-2;
    for i in 0..layer.v.len() {
        if layer.lo[i] == layer.hi[i] {
            assert_eq!(grads.v[i], 0.0, "fixed weight {i} has a rounding gradient");
            continue;
        }
        let mut a = layer.clone();
        a.v[i] += eps as f32;
        let mut m = layer.clone();
        m.v[i] -= eps as f32;
        compare(format!("v[{i}]"), grads.v[i], loss(&a), loss(&m), eps);
    }
    for ti in 0..layer.tables.len() {
        for e in 0..16 {
            let mut a = layer.clone();
            a.tables[ti][e] += eps_t as f32;
            let mut m = layer.clone();
            m.tables[ti][e] -= eps_t as f32;
            compare(
                format!("table {ti} entry {e}"),
                grads.tables[ti][e],
                loss(&a),
                loss(&m),
                eps_t,
            );
        }
    }
    let eps_b = 1e-3;
    for o in 0..layer.o_n {
        let mut a = layer.clone();
        a.bias[o] += eps_b as f32;
        let mut m = layer.clone();
        m.bias[o] -= eps_b as f32;
        compare(
            format!("bias {o}"),
            grads.bias[o],
            loss(&a),
            loss(&m),
            eps_b,
        );
    }
    assert!(
        checked > layer.o_n * k / 2,
        "only {checked} parameters checked"
    );
}

#[test]
fn backward_matches_finite_differences_dense_shared_table() {
    check_gradients(1, 12, 10, false, 1);
}

#[test]
fn backward_matches_finite_differences_grouped_per_row_tables() {
    // Depthwise-like: 6 groups of one row, 9 taps; and grouped rows.
    check_gradients(6, 1, 9, true, 2);
    check_gradients(3, 4, 5, true, 3);
}

#[test]
fn frozen_table_entries_get_no_gradient() {
    let mut r = Rng(4);
    let mut layer = random_layer(&mut r, 1, 4, 8, false);
    layer.frozen_entry[0][5] = true;
    let x = vec![(0..8 * 8).map(|_| rng_f32(&mut r)).collect::<Vec<_>>()];
    let t = vec![(0..8 * 4).map(|_| rng_f32(&mut r)).collect::<Vec<_>>()];
    let (_, g) = layer.loss_and_grad(&x, &t, 8, None);
    assert_eq!(g.tables[0][5], 0.0);
    assert!(g.tables[0].iter().any(|&v| v != 0.0));
}

/// The sampled im2col rows equal the conv's own patches: a float conv through
/// `targets` reproduces a direct convolution at the sampled positions.
#[test]
fn patches_are_the_convolution_patches() {
    let mut r = Rng(5);
    let (c, h, w, o, groups) = (4, 7, 6, 4, 2);
    let geom = PatchGeometry {
        channels: c,
        height: h,
        width: w,
        kernel: [3, 2],
        strides: [2, 1],
        pads: [1, 0, 1, 1],
        dilations: [1, 2],
        groups,
        out_height: (h + 2 - 3) / 2 + 1,
        out_width: (w + 1 - 3) + 1,
    };
    let x: Vec<Vec<f32>> = (0..3)
        .map(|_| (0..c * h * w).map(|_| rng_f32(&mut r) - 0.5).collect())
        .collect();
    let float: Vec<&[f32]> = x.iter().map(Vec::as_slice).collect();
    let k = geom.patch_len();
    let rows: Vec<f32> = (0..o * k).map(|_| rng_f32(&mut r) - 0.5).collect();
    let bias = vec![0.0; o];
    let all = geom.out_height * geom.out_width;
    let p = patches::sample(&geom, &x, &float, 3 * all);
    assert_eq!(p.rows, 3 * all);
    let t = targets(&p, &rows, &bias, None, groups);
    let cg = c / groups;
    let rpg = o / groups;
    for s in 0..3 {
        for pos in 0..all {
            let (oy, ox) = (pos / geom.out_width, pos % geom.out_width);
            for oc in 0..o {
                let g = oc / rpg;
                let mut acc = 0f32;
                for ic in 0..cg {
                    for ky in 0..3 {
                        for kx in 0..2 {
                            let iy = (oy * 2 + ky) as isize - 1;
                            let ix = (ox + 2 * kx) as isize;
                            if iy < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            acc += x[s][(g * cg + ic) * h * w + iy as usize * w + ix as usize]
                                * rows[oc * k + (ic * 3 + ky) * 2 + kx];
                        }
                    }
                }
                let got = t[g][(s * all + pos) * rpg + oc % rpg];
                assert!(
                    (got - acc).abs() < 1e-5,
                    "sample {s} position {pos} channel {oc}"
                );
            }
        }
    }
}
