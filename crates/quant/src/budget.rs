//! Mixed precision under a flash budget (`--flash-budget`): which weight format each
//! linear layer gets so that the constants fit a byte budget with the least output error.
//!
//! Three steps, the first two here, the byte counts from the C backend (the caller's):
//!
//! 1. **Sensitivity pass** ([`crate::sensitivity_pass`]): one quantization in which every
//!    linear layer is emitted with int8 weights (per-channel power-of-two exponents, the
//!    all-int8 network) and, on the same statistics (input moments, float targets, bias
//!    correction), also fitted in each 4-bit format the budget can choose ([`LayerFormat`]):
//!    one [`LayerCandidates`] per layer, each candidate a complete integer node.
//! 2. **Measured sensitivity** ([`measure_sensitivity`]): for every layer and 4-bit
//!    candidate, the all-int8 network is run on calibration samples with *only that layer*
//!    replaced by the candidate, and the output's squared difference from the all-int8
//!    output is the candidate's cost. Only the nodes downstream of the layer are
//!    recomputed.
//! 3. **Plan** ([`plan`]): a multiple-choice knapsack — per layer one candidate, the sum of
//!    bytes within the budget, the least sum of costs (errors of different layers are
//!    treated as independent and additive) — solved exactly by a Pareto frontier over
//!    (bytes, cost): the least-cost plan for every achievable byte count, so a tighter
//!    budget never gives more bytes. A budget that holds the plain mode (every layer in
//!    the mode's own format) plans only formats at least as fine ([`plan_from_default`]).

use std::collections::HashMap;

use lutq_interp::int::{IntData, exec_node};
use lutq_ir::int::{IntGraph, IntNode, ValueId};
use rayon::prelude::*;
use serde::Serialize;

use crate::{LayerFormat, QuantError};

/// One linear layer's fit in one weight format (from the sensitivity pass).
#[derive(Clone, Debug)]
pub struct Candidate {
    pub format: LayerFormat,
    /// The lowered node (its inputs are the all-int8 network's values).
    pub node: IntNode,
    /// The fit objective relative to the layer's output energy (`LayerReport`'s
    /// `relative_output_error`).
    pub relative_error: f64,
}

/// Every format one linear layer may take, fitted on the all-int8 network's activations.
#[derive(Clone, Debug)]
pub struct LayerCandidates {
    pub name: String,
    /// The layer's node in the sensitivity pass's graph.
    pub value: ValueId,
    /// `Int8` always; the 4-bit formats unless the layer is kept at 8 bits.
    pub candidates: Vec<Candidate>,
}

/// For every layer and candidate (in [`LayerCandidates::candidates`] order): the squared
/// error the candidate adds to the model's outputs when it alone replaces the int8 layer,
/// summed over `samples` and every output element (in the outputs' real units); 0 for the
/// int8 candidate. Unless `all_formats`, only each layer's first 4-bit candidate (lut4)
/// is run and the others' cost is the measured one times the ratio of their fit errors
/// (same layer, same input, same path to the output), which halves the measurement's
/// time but misjudges per-channel tables (docs/quantization.md): the CLI measures all. Also returns the all-int8 outputs' energy `Σ y²` on the same samples,
/// the scale of these errors. `progress(done, total)` counts layers.
pub fn measure_sensitivity(
    graph: &IntGraph,
    layers: &[LayerCandidates],
    samples: &[&[f32]],
    all_formats: bool,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(Vec<Vec<f64>>, f64), QuantError> {
    // Readers of every value, so that a replacement recomputes only what depends on it.
    let n = graph.nodes.len();
    let outputs: Vec<ValueId> = graph.outputs.iter().map(|o| o.value).collect();
    let energy_of = |values: &[Option<IntData>], patch: &HashMap<usize, (IntData, i32)>| {
        outputs
            .iter()
            .map(|v| {
                let i = v.index();
                match patch.get(&i) {
                    Some((d, exp)) => d.to_f32(*exp),
                    None => values[i]
                        .as_ref()
                        .map(|d| d.to_f32(graph.nodes[i].ty.exp))
                        .unwrap_or_default(),
                }
            })
            .collect::<Vec<Vec<f32>>>()
    };
    // The all-int8 network on every sample, every value kept.
    let base: Vec<Vec<Option<IntData>>> = samples
        .par_iter()
        .map(|s| {
            let mut values: Vec<Option<IntData>> = vec![None; n];
            for (i, node) in graph.nodes.iter().enumerate() {
                let ins: Vec<&IntData> = node
                    .inputs
                    .iter()
                    .map(|v| values[v.index()].as_ref().expect("schedule order"))
                    .collect();
                values[i] = Some(exec_node(graph, node, &ins, &[s])?);
            }
            Ok(values)
        })
        .collect::<Result<_, QuantError>>()?;
    let base_outputs: Vec<Vec<Vec<f32>>> =
        base.iter().map(|v| energy_of(v, &HashMap::new())).collect();
    let energy: f64 = base_outputs
        .iter()
        .flatten()
        .flatten()
        .map(|&y| (y as f64) * (y as f64))
        .sum();
    let mut costs = Vec::with_capacity(layers.len());
    for (done, layer) in layers.iter().enumerate() {
        progress(done, layers.len());
        let mut row = Vec::with_capacity(layer.candidates.len());
        // The first 4-bit candidate measured: the others scale by their fit errors.
        let mut measured: Option<(f64, f64)> = None;
        for c in &layer.candidates {
            if c.format == LayerFormat::Int8 {
                row.push(0.0);
                continue;
            }
            if let Some((cost, error)) = measured.filter(|&(_, e)| !all_formats && e > 0.0) {
                row.push(cost * c.relative_error / error);
                continue;
            }
            let at = layer.value.index();
            let same_type = c.node.ty == graph.nodes[at].ty;
            // A candidate of another output type (a wide output's exponent follows the
            // fit) is run in a copy of the graph, so its readers see its type.
            let replaced;
            let g = if same_type {
                graph
            } else {
                let mut copy = graph.clone();
                copy.nodes[at] = c.node.clone();
                replaced = copy;
                &replaced
            };
            let cost: f64 = base
                .par_iter()
                .zip(samples.par_iter())
                .zip(base_outputs.par_iter())
                .map(|((values, s), y0)| {
                    let mut patch: HashMap<usize, (IntData, i32)> = HashMap::new();
                    let out = exec_node(g, &c.node, &node_inputs(&c.node, values), &[s])?;
                    patch.insert(at, (out, c.node.ty.exp));
                    for (i, node) in g.nodes.iter().enumerate().skip(at + 1) {
                        if !node.inputs.iter().any(|v| patch.contains_key(&v.index())) {
                            continue;
                        }
                        let ins: Vec<&IntData> = node
                            .inputs
                            .iter()
                            .map(|v| match patch.get(&v.index()) {
                                Some((d, _)) => d,
                                None => values[v.index()].as_ref().expect("computed"),
                            })
                            .collect();
                        let out = exec_node(g, node, &ins, &[s])?;
                        patch.insert(i, (out, node.ty.exp));
                    }
                    let y = energy_of(values, &patch);
                    Ok(y.iter()
                        .flatten()
                        .zip(y0.iter().flatten())
                        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
                        .sum::<f64>())
                })
                .collect::<Result<Vec<f64>, QuantError>>()?
                .iter()
                .sum();
            measured.get_or_insert((cost, c.relative_error));
            row.push(cost);
        }
        costs.push(row);
    }
    progress(layers.len(), layers.len());
    Ok((costs, energy))
}

fn node_inputs<'v>(node: &IntNode, values: &'v [Option<IntData>]) -> Vec<&'v IntData> {
    node.inputs
        .iter()
        .map(|v| values[v.index()].as_ref().expect("computed"))
        .collect()
}

/// One layer's choices for [`plan`]: per candidate its bytes and cost.
#[derive(Clone, Debug)]
pub struct LayerChoices {
    pub name: String,
    /// `(format, bytes, cost)`.
    pub options: Vec<(LayerFormat, usize, f64)>,
}

/// The format chosen for each layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Per layer (in [`LayerChoices`] order): the index of the chosen option.
    pub choice: Vec<usize>,
    /// Sum of the chosen options' bytes (plus the fixed bytes given to [`plan`]).
    pub bytes: usize,
    /// Sum of the chosen options' costs.
    pub cost: f64,
}

/// Why no plan fits.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// A user error: the budget is below the smallest plan.
    #[error(
        "a flash budget of {budget} B is below the smallest plan ({minimum} B: every layer in its \
         smallest 4-bit format, plus {fixed} B of tables the plan does not change). Fix: pass \
         --flash-budget {minimum} or more"
    )]
    TooSmall {
        budget: usize,
        minimum: usize,
        fixed: usize,
    },
}

/// The least-cost choice of one option per layer whose bytes, plus `fixed`, are at most
/// `budget`; ties go to fewer bytes. Exact: the Pareto frontier of (bytes, cost) over all
/// combinations, pruned of dominated points after each layer. Frontiers are capped at
/// [`MAX_FRONTIER`] points (thinned evenly by bytes, keeping both ends), which bounds the
/// time on very deep nets at the price of exactness there; every kept point is an exact
/// plan, so the result always fits.
pub fn plan(layers: &[LayerChoices], fixed: usize, budget: usize) -> Result<Plan, BudgetError> {
    // A frontier point: bytes, cost, and the choices (as a persistent list index).
    #[derive(Clone, Copy)]
    struct Point {
        bytes: usize,
        cost: f64,
        trail: usize,
    }
    // Trails: (previous trail, option index) per layer step; usize::MAX = start.
    let mut trails: Vec<(usize, u8)> = Vec::new();
    let mut frontier = vec![Point {
        bytes: fixed,
        cost: 0.0,
        trail: usize::MAX,
    }];
    for layer in layers {
        let mut next = Vec::with_capacity(frontier.len() * layer.options.len());
        for p in &frontier {
            for (k, &(_, bytes, cost)) in layer.options.iter().enumerate() {
                next.push((p.bytes + bytes, p.cost + cost, p.trail, k as u8));
            }
        }
        // Sort by bytes, then cost; keep a point only if it is cheaper than every point
        // with fewer or equal bytes.
        next.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let mut kept = Vec::new();
        let mut best = f64::INFINITY;
        for (bytes, cost, trail, k) in next {
            if cost < best {
                best = cost;
                trails.push((trail, k));
                kept.push(Point {
                    bytes,
                    cost,
                    trail: trails.len() - 1,
                });
            }
        }
        if kept.len() > MAX_FRONTIER {
            let step = kept.len() as f64 / MAX_FRONTIER as f64;
            let last = kept.len() - 1;
            kept = (0..MAX_FRONTIER)
                .map(|i| kept[((i as f64 * step) as usize).min(last)])
                .chain(std::iter::once(kept[last]))
                .collect();
            kept.dedup_by_key(|p| p.bytes);
        }
        frontier = kept;
    }
    let minimum = frontier.first().map_or(fixed, |p| p.bytes);
    // The frontier is sorted by bytes with falling cost: the best fitting point is the
    // last one within the budget.
    let Some(best) = frontier.iter().rev().find(|p| p.bytes <= budget) else {
        return Err(BudgetError::TooSmall {
            budget,
            minimum,
            fixed,
        });
    };
    let mut choice = vec![0; layers.len()];
    let mut t = best.trail;
    for slot in choice.iter_mut().rev() {
        let (prev, k) = trails[t];
        *slot = k as usize;
        t = prev;
    }
    Ok(Plan {
        choice,
        bytes: best.bytes,
        cost: best.cost,
    })
}

/// The formats from the coarsest fit to the finest: one table, table groups, a table per
/// channel, int8 (bytes grow the same way, except that int8 can take fewer than per-channel
/// tables, or even than table groups, in a layer of few weights per channel).
const FINER: [LayerFormat; 4] = [
    LayerFormat::Lut4,
    LayerFormat::Lut4Groups,
    LayerFormat::Lut4PerChannel,
    LayerFormat::Int8,
];

/// Position of `f` in [`FINER`].
fn fineness(f: LayerFormat) -> usize {
    FINER
        .iter()
        .position(|&g| g == f)
        .expect("every format is ranked")
}

/// [`plan`], but where the budget holds every layer in its `default` format (the mode's
/// own, e.g. [`LayerFormat::Lut4Groups`]), no layer gets a coarser format (one table
/// < table groups < a table per channel < int8):
/// the plan starts from the plain mode and spends the rest of the budget on upgrades.
/// Choices index `layers`' options, as [`plan`]'s do. Layers without a `default` option
/// (kept at 8 bits, or one table per layer being the mode's own) keep all of theirs.
///
/// Why: the costs are each layer's output error measured alone, and they do not add up.
/// With one table instead of the default groups in many layers at once (each a small
/// measured cost), MobileNetV2's plan at `0.55x` read 10.8 dB on new photos against the
/// plain mode's 10.9 at 0.526× (stop 41): more flash, worse output. Above the plain
/// mode's size a plan now only moves layers to finer formats than the plain mode's.
pub fn plan_from_default(
    layers: &[LayerChoices],
    fixed: usize,
    budget: usize,
    default: LayerFormat,
) -> Result<Plan, BudgetError> {
    let default_bytes = |l: &LayerChoices| l.options.iter().find(|o| o.0 == default).map(|o| o.1);
    let plain: Option<usize> = layers
        .iter()
        .map(|l| default_bytes(l).or_else(|| l.options.iter().map(|o| o.1).min()))
        .sum::<Option<usize>>()
        .map(|b| b + fixed);
    if plain.is_none_or(|b| b > budget) {
        return plan(layers, fixed, budget);
    }
    // Per layer, the indices of the options kept.
    let kept: Vec<Vec<usize>> = layers
        .iter()
        .map(|l| {
            let has_default = default_bytes(l).is_some();
            (0..l.options.len())
                .filter(|&k| !has_default || fineness(l.options[k].0) >= fineness(default))
                .collect()
        })
        .collect();
    let narrowed: Vec<LayerChoices> = layers
        .iter()
        .zip(&kept)
        .map(|(l, k)| LayerChoices {
            name: l.name.clone(),
            options: k.iter().map(|&k| l.options[k]).collect(),
        })
        .collect();
    let p = plan(&narrowed, fixed, budget)?;
    Ok(Plan {
        choice: p.choice.iter().zip(&kept).map(|(&c, k)| k[c]).collect(),
        ..p
    })
}

/// Most points a frontier of [`plan`] keeps.
pub const MAX_FRONTIER: usize = 50_000;

/// What the budget decided, for the report (`QuantReport::flash_budget`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct BudgetReport {
    /// The budget in bytes of constants (weights, tables, biases, shifts) as the C
    /// backend stores them.
    pub budget_bytes: usize,
    /// The plan's constants, counted like the C backend on the final graph.
    pub bytes: usize,
    /// The smallest plan (every layer in its smallest 4-bit format) and the all-int8 one.
    pub min_bytes: usize,
    pub int8_bytes: usize,
    /// The budget was at least the all-int8 plan, which was chosen.
    pub all_int8: bool,
    /// Calibration samples the sensitivities were measured on.
    pub sensitivity_samples: usize,
    /// Seconds of the sensitivity pass (the extra quantization and the measurement).
    pub sensitivity_seconds: f64,
    /// Of which running the network with one layer replaced.
    pub measure_seconds: f64,
    pub layers: Vec<BudgetLayer>,
}

/// One linear layer's choice.
#[derive(Clone, Debug, Serialize)]
pub struct BudgetLayer {
    pub name: String,
    /// `lut4`, `lut4/ch` or `int8`.
    pub format: String,
    /// The layer's constants in the final graph (C backend accounting).
    pub bytes: usize,
    /// Per format the budget could choose: its bytes and measured sensitivity.
    pub options: Vec<BudgetOption>,
}

/// One format of one layer.
#[derive(Clone, Debug, Serialize)]
pub struct BudgetOption {
    pub format: String,
    pub bytes: usize,
    /// Output SQNR (dB) against the all-int8 network when only this layer takes this
    /// format (∞ for int8 itself: serialized as null).
    pub sensitivity_db: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute(layers: &[LayerChoices], fixed: usize, budget: usize) -> Option<(usize, f64)> {
        let mut best: Option<(usize, f64)> = None;
        let total: usize = layers.iter().map(|l| l.options.len()).product();
        for mut code in 0..total {
            let (mut bytes, mut cost) = (fixed, 0.0);
            for l in layers {
                let k = code % l.options.len();
                code /= l.options.len();
                bytes += l.options[k].1;
                cost += l.options[k].2;
            }
            if bytes <= budget && best.is_none_or(|(b, c)| cost < c || (cost == c && bytes < b)) {
                best = Some((bytes, cost));
            }
        }
        best
    }

    fn random_layers(seed: u64, n: usize) -> Vec<LayerChoices> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        (0..n)
            .map(|i| {
                let small = 10 + (next() % 50) as usize;
                let mid = small + 1 + (next() % 20) as usize;
                let big = mid + 1 + (next() % 60) as usize;
                let e = 1.0 + (next() % 1000) as f64;
                LayerChoices {
                    name: format!("l{i}"),
                    options: vec![
                        (LayerFormat::Lut4, small, e),
                        (
                            LayerFormat::Lut4PerChannel,
                            mid,
                            e * (1 + next() % 100) as f64 / 102.0,
                        ),
                        (LayerFormat::Int8, big, 0.0),
                    ],
                }
            })
            .collect()
    }

    #[test]
    fn plan_is_the_exact_optimum_and_fits() {
        for seed in 0..40 {
            let layers = random_layers(seed, 6);
            let min: usize = 7 + layers.iter().map(|l| l.options[0].1).sum::<usize>();
            let max: usize = 7 + layers.iter().map(|l| l.options[2].1).sum::<usize>();
            for budget in (min..=max).step_by(7) {
                let p = plan(&layers, 7, budget).unwrap();
                let (bytes, cost) = brute(&layers, 7, budget).unwrap();
                assert!(p.bytes <= budget);
                assert!((p.cost - cost).abs() < 1e-9, "seed {seed} budget {budget}");
                assert_eq!(p.bytes, bytes, "ties go to fewer bytes");
                let recount: usize = 7 + p
                    .choice
                    .iter()
                    .zip(&layers)
                    .map(|(&k, l)| l.options[k].1)
                    .sum::<usize>();
                assert_eq!(recount, p.bytes);
            }
        }
    }

    /// [`random_layers`] with a default format between one table and per-channel tables.
    fn layers_with_default(seed: u64, n: usize) -> Vec<LayerChoices> {
        let mut layers = random_layers(seed, n);
        for (i, l) in layers.iter_mut().enumerate() {
            let (small, e) = (l.options[0].1, l.options[0].2);
            // Costs that favour one table in some layers (the measured costs' noise).
            let cost = e * (0.5 + (i % 3) as f64 * 0.5);
            l.options
                .insert(1, (LayerFormat::Lut4Groups, small + 1 + i % 4, cost));
        }
        layers
    }

    #[test]
    fn plans_above_the_default_size_never_go_below_the_default_format() {
        let mut narrowed = 0;
        for seed in 0..20 {
            let layers = layers_with_default(200 + seed, 8);
            let bytes = |k: usize| 5 + layers.iter().map(|l| l.options[k].1).sum::<usize>();
            let (smallest, default, largest) = (bytes(0), bytes(1), bytes(3));
            for budget in (smallest..=largest).step_by(3) {
                let free = plan(&layers, 5, budget).unwrap();
                let p = plan_from_default(&layers, 5, budget, LayerFormat::Lut4Groups).unwrap();
                assert!(p.bytes <= budget);
                let recount: usize = 5 + p
                    .choice
                    .iter()
                    .zip(&layers)
                    .map(|(&k, l)| l.options[k].1)
                    .sum::<usize>();
                assert_eq!(recount, p.bytes, "choices index the original options");
                if budget < default {
                    assert_eq!(p, free, "below the default plan's size: the free plan");
                    continue;
                }
                for (&k, l) in p.choice.iter().zip(&layers) {
                    assert!(
                        l.options[k].0 != LayerFormat::Lut4,
                        "{}: below the default",
                        l.name
                    );
                }
                let all_default: f64 = layers.iter().map(|l| l.options[1].2).sum();
                assert!(p.cost <= all_default + 1e-9, "no worse than the plain mode");
                assert!(
                    p.cost >= free.cost - 1e-9,
                    "a narrower choice costs no less"
                );
                narrowed += usize::from(p.choice != free.choice);
            }
        }
        assert!(
            narrowed > 0,
            "the free plan goes below the default somewhere"
        );
    }

    #[test]
    fn layers_without_the_default_format_keep_every_option() {
        let mut layers = layers_with_default(7, 5);
        layers[2].options.remove(1); // e.g. `--lut-tables 1`: no groups in this layer
        let largest: usize = layers.iter().map(|l| l.options.last().unwrap().1).sum();
        let p = plan_from_default(&layers, 0, largest, LayerFormat::Lut4Groups).unwrap();
        assert_eq!(
            p,
            plan(&layers, 0, largest).unwrap(),
            "everything fits: all int8"
        );
        // Budget just at the default plan (layer 2 at its smallest): layer 2 may take
        // its one-table option.
        let at_default: usize = layers
            .iter()
            .map(|l| {
                l.options
                    .iter()
                    .find(|o| o.0 == LayerFormat::Lut4Groups)
                    .unwrap_or(&l.options[0])
                    .1
            })
            .sum();
        let p = plan_from_default(&layers, 0, at_default, LayerFormat::Lut4Groups).unwrap();
        assert_eq!(p.bytes, at_default, "exactly the default plan fits");
        assert_eq!(p.choice[2], 0);
    }

    #[test]
    fn tighter_budgets_never_give_more_bytes() {
        for seed in 0..10 {
            let layers = random_layers(100 + seed, 12);
            let min: usize = layers.iter().map(|l| l.options[0].1).sum();
            let max: usize = layers.iter().map(|l| l.options[2].1).sum();
            let mut last = 0;
            for budget in min..=max + 5 {
                let p = plan(&layers, 0, budget).unwrap();
                assert!(p.bytes >= last, "budget {budget}: {} < {last}", p.bytes);
                last = p.bytes;
            }
            assert_eq!(last, max, "the largest budget takes every int8 option");
        }
    }

    #[test]
    fn below_the_smallest_plan_is_an_error_naming_the_minimum() {
        let layers = random_layers(7, 3);
        let min: usize = 5 + layers.iter().map(|l| l.options[0].1).sum::<usize>();
        assert_eq!(plan(&layers, 5, min).unwrap().choice, vec![0, 0, 0]);
        let err = plan(&layers, 5, min - 1).unwrap_err();
        assert_eq!(
            err,
            BudgetError::TooSmall {
                budget: min - 1,
                minimum: min,
                fixed: 5
            }
        );
        assert!(err.to_string().contains(&format!("--flash-budget {min}")));
    }
}
