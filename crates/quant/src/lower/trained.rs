//! Trained grids of QDQ models: a `fake_quant` (an imported QuantizeLinear →
//! DequantizeLinear pair) with a power-of-two scale `2^-e` and zero point 0 fixes the
//! exponent and the clamp of the value it reads, so the integer program computes the
//! trained network instead of one calibrated from scratch. The `fake_quant` itself then
//! maps codes to the same codes (a table that the contract evaluates exactly).
//!
//! The pair rounds ties to even where the contract rounds them up: the two differ only
//! where a value lies exactly halfway between two codes.

use std::collections::{BTreeSet, HashMap};

use lutq_ir::{Activation, Graph, NodeId, Op};

use crate::Mode;
use crate::fit::{Fitted, RowScale, ScaleKind, WeightFormat};

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
                "node '{}': scale {scale}, zero point {zero_point}",
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

/// The exponent of the lowest set bit of a finite non-zero `v` (`v = m · 2^p`, `m` odd).
fn lsb_exponent(v: f32) -> i32 {
    let bits = v.to_bits();
    let (field, mantissa) = (((bits >> 23) & 0xff) as i32, bits & 0x7f_ffff);
    if field == 0 {
        -149 + mantissa.trailing_zeros() as i32
    } else {
        field - 150 + (mantissa | 0x80_0000).trailing_zeros() as i32
    }
}

/// The exponents `e` of one row with every `v · 2^e` an integer of `lo..=hi`: from the
/// coarsest (`.0`) to the finest (`.1`); `None` for a row of zeros or a row on no such
/// grid (within `±EXP_LIMIT`).
fn row_exponents(row: &[f32], lo: i32, hi: i32) -> Option<(i32, i32)> {
    let limit = crate::fit::EXP_LIMIT;
    let mut coarsest = i32::MIN;
    let (mut mn, mut mx) = (0f64, 0f64);
    for &v in row.iter().filter(|v| **v != 0.0) {
        if !v.is_finite() {
            return None;
        }
        coarsest = coarsest.max(-lsb_exponent(v));
        mn = mn.min(v as f64);
        mx = mx.max(v as f64);
    }
    if coarsest == i32::MIN {
        return None;
    }
    let fits = |e: i32| {
        let s = (e as f64).exp2();
        mx * s <= hi as f64 && mn * s >= lo as f64
    };
    let mut finest = coarsest;
    while finest < limit && fits(finest + 1) {
        finest += 1;
    }
    (coarsest >= -limit && finest <= limit && fits(coarsest)).then_some((coarsest, finest))
}

/// The row's integer values at exponent `e` (exact by [`row_exponents`]).
fn integers(row: &[f32], e: i32) -> Vec<i32> {
    let s = (e as f64).exp2();
    row.iter().map(|&v| (v as f64 * s) as i32).collect()
}

/// The trained weights of one linear layer (`rows × row_len`, row = output channel)
/// exactly as `format` with `scale` holds them, if they lie on such a grid: levels,
/// codes and tables that dequantize to the very same values. Exponents are the finest
/// that hold the values (so that the bias, quantized at `f_x + f_w`, keeps every bit of
/// a trained int32 bias), and with one table per layer and an exponent per row, the ones
/// that need the fewest table entries. `None` for float scales or weights off the grid.
pub(crate) fn exact_weights(
    weights: &[f32],
    rows: usize,
    row_len: usize,
    format: WeightFormat,
    scale: ScaleKind,
) -> Option<Fitted> {
    if scale == ScaleKind::FloatChannel || rows == 0 || row_len == 0 {
        return None;
    }
    let (lo, hi) = format.range();
    let row = |o: usize| &weights[o * row_len..(o + 1) * row_len];
    let ranges: Vec<Option<(i32, i32)>> = (0..rows)
        .map(|o| {
            if row(o).iter().all(|&v| v == 0.0) {
                Some((i32::MIN, i32::MAX)) // any exponent
            } else {
                row_exponents(row(o), lo, hi)
            }
        })
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .map(|r| (r != (i32::MIN, i32::MAX)).then_some(r))
        .collect();
    let live: Vec<(i32, i32)> = ranges.iter().flatten().copied().collect();
    let fallback = live.iter().map(|r| r.1).min().unwrap_or(0);
    let exps: Vec<i32> = match scale {
        ScaleKind::PotLayer => {
            let coarsest = live.iter().map(|r| r.0).max().unwrap_or(0);
            let finest = live.iter().map(|r| r.1).min().unwrap_or(0);
            if coarsest > finest {
                return None;
            }
            vec![finest; rows]
        }
        ScaleKind::PotChannel if format == WeightFormat::Lut4 => {
            // One table for every row: rows with the least freedom first, each at the
            // exponent that adds the fewest new entries (ties: the finest).
            let mut order: Vec<usize> = (0..rows).filter(|&o| ranges[o].is_some()).collect();
            order.sort_by_key(|&o| {
                let r = ranges[o].unwrap();
                (r.1 - r.0, o)
            });
            let mut table = BTreeSet::new();
            let mut exps = vec![fallback; rows];
            for o in order {
                let (c, f) = ranges[o].unwrap();
                let best = (c..=f)
                    .rev()
                    .min_by_key(|&e| {
                        integers(row(o), e)
                            .into_iter()
                            .filter(|v| !table.contains(v))
                            .collect::<BTreeSet<_>>()
                            .len()
                    })
                    .unwrap_or(f);
                table.extend(integers(row(o), best));
                exps[o] = best;
            }
            exps
        }
        ScaleKind::PotChannel => ranges.iter().map(|r| r.map_or(fallback, |r| r.1)).collect(),
        ScaleKind::FloatChannel => return None,
    };
    let levels: Vec<i32> = (0..rows).flat_map(|o| integers(row(o), exps[o])).collect();
    let scales = exps.iter().map(|&e| RowScale::Pot(e)).collect();
    let to_i8 = |v: &[i32]| v.iter().map(|&l| l as i8).collect::<Vec<i8>>();
    let table_of = |set: &BTreeSet<i32>| -> Option<[i8; 16]> {
        if set.len() > 16 {
            return None;
        }
        let mut t = [*set.last().unwrap_or(&0) as i8; 16];
        for (i, &v) in set.iter().enumerate() {
            t[i] = v as i8;
        }
        Some(t)
    };
    let code = |t: &[i8; 16], v: i32| t.iter().position(|&x| x as i32 == v).unwrap() as u8;
    let (codes, luts) = match format {
        WeightFormat::Uniform { .. } => (None, Vec::new()),
        WeightFormat::Lut4 => {
            let t = table_of(&levels.iter().copied().collect())?;
            (Some(levels.iter().map(|&v| code(&t, v)).collect()), vec![t])
        }
        WeightFormat::Lut4PerChannel | WeightFormat::Lut4Groups(_) => {
            // One table per shared set, each row pointing at its set's.
            let (sets, set_of) = shared_row_tables(&levels, row_len)?;
            let tables = sets.iter().map(table_of).collect::<Option<Vec<_>>>()?;
            let luts: Vec<[i8; 16]> = set_of.iter().map(|&i| tables[i]).collect();
            let codes = levels
                .chunks(row_len)
                .zip(&luts)
                .flat_map(|(r, t)| r.iter().map(|&v| code(t, v)).collect::<Vec<_>>())
                .collect();
            (Some(codes), luts)
        }
    };
    Some(Fitted {
        levels: to_i8(&levels),
        codes,
        lut: luts.first().copied(),
        luts,
        scales,
        output_error: 0.0,
    })
}

/// Per row of `levels` (`row_len` each), the set of values its table holds: rows share
/// one set wherever the union of their values fits 16 entries, so that a model trained
/// with tables shared by groups of rows (`scripts/qat_fashion.py --lut-tables N`), whose
/// rows each use only some of their group's levels, is stored with one table per group
/// (`TableLayout` keeps each distinct table once) and not a table per row. Rows with the
/// most values choose first; each joins the set it adds the fewest new values to, or
/// starts its own. Returns the sets and, per row, its set's index; `None` when a row
/// alone has more than 16 values.
fn shared_row_tables(levels: &[i32], row_len: usize) -> Option<(Vec<BTreeSet<i32>>, Vec<usize>)> {
    let rows: Vec<BTreeSet<i32>> = levels
        .chunks(row_len)
        .map(|r| r.iter().copied().collect())
        .collect();
    if rows.iter().any(|r| r.len() > 16) {
        return None;
    }
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&o| (std::cmp::Reverse(rows[o].len()), o));
    let mut sets: Vec<BTreeSet<i32>> = Vec::new();
    let mut set_of = vec![0; rows.len()];
    for o in order {
        let best = sets
            .iter()
            .enumerate()
            .map(|(i, set)| (rows[o].difference(set).count(), i))
            .filter(|&(added, i)| sets[i].len() + added <= 16)
            .min();
        set_of[o] = match best {
            Some((_, i)) => {
                sets[i].extend(&rows[o]);
                i
            }
            None => {
                sets.push(rows[o].clone());
                sets.len() - 1
            }
        };
    }
    Some((sets, set_of))
}

/// Where a trained linear layer's weights sit exactly (`exact_weights`), per format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainedLayer {
    /// The Conv / Gemm node.
    pub name: String,
    /// The node that holds its weights (the initializer or DequantizeLinear output).
    pub weights: String,
    /// One table and one exponent per layer (`lut4-pot-layer`).
    pub lut4_layer: bool,
    /// One table per layer, an exponent per output channel (`lut4-pot-channel`).
    pub lut4_channel: bool,
    /// One table per output channel, one exponent (`lut4-pot-layer --lut-per-channel`).
    pub lut4_tables_layer: bool,
    /// One table and one exponent per output channel (`lut4-pot-channel --lut-per-channel`).
    pub lut4_tables_channel: bool,
    /// Uniform int4 with one exponent per layer / per channel.
    pub int4_layer: bool,
    pub int4_channel: bool,
    /// Uniform int8 with an exponent per output channel (`int8-pot-channel`).
    pub int8_channel: bool,
}

impl TrainedLayer {
    /// Whether `mode` (with `lut_per_channel`, or int8 for a kept layer) holds the
    /// trained weights exactly.
    pub fn holds(&self, mode: Mode, lut_per_channel: bool, keep_8bit: bool) -> bool {
        if keep_8bit {
            return self.int8_channel;
        }
        match (mode, lut_per_channel) {
            (Mode::Lut4PotLayer, false) => self.lut4_layer,
            (Mode::Lut4PotChannel, false) => self.lut4_channel,
            (Mode::Lut4PotLayer, true) => self.lut4_tables_layer,
            (Mode::Lut4PotChannel, true) => self.lut4_tables_channel,
            (Mode::Int4PotLayer, _) => self.int4_layer,
            (Mode::Int4PotChannel, _) => self.int4_channel,
            (Mode::Int8PotChannel, _) => self.int8_channel,
            (Mode::Fp32, _) => true,
            (Mode::Int8Pc | Mode::Int4Pc, _) => false,
        }
    }

    /// Whether the weights are on any power-of-two grid lutq holds (int8 per channel).
    pub fn on_grid(&self) -> bool {
        self.int8_channel
    }
}

/// What a QDQ model's trained quantization says (`trained_quantization`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainedQuantization {
    /// QuantizeLinear → DequantizeLinear pairs on run-time data.
    pub pairs: usize,
    /// The pairs whose scale is no power of two or whose zero point is not 0, one line
    /// each with the node's name.
    pub off_grid: Vec<String>,
    /// Every Conv / Gemm with constant weights, in graph order.
    pub layers: Vec<TrainedLayer>,
}

/// A mode that holds a trained model's weights exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DerivedMode {
    pub mode: Mode,
    pub lut_per_channel: bool,
    /// Layers that must stay int8 (their weights take more than 16 values).
    pub keep_8bit: Vec<String>,
}

impl std::fmt::Display for DerivedMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "--mode {}", self.mode)?;
        if self.lut_per_channel {
            write!(f, " --lut-per-channel")?;
        }
        if !self.keep_8bit.is_empty() {
            write!(f, " --keep-8bit {}", self.keep_8bit.join(","))?;
        }
        Ok(())
    }
}

/// A requested mode that cannot hold the trained weights.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "layer '{layer}' (weights '{weights}'): its trained weights do not fit {requested}{}; the model's quantization implies {derived}",
    if *.lut_per_channel { " with --lut-per-channel" } else { "" }
)]
pub struct ModeContradiction {
    pub layer: String,
    pub weights: String,
    pub requested: Mode,
    pub lut_per_channel: bool,
    pub derived: String,
}

impl TrainedQuantization {
    /// Whether the model carries trained quantization lutq maps exactly: at least one
    /// pair, each with a power-of-two scale and zero point 0.
    pub fn is_trained(&self) -> bool {
        self.pairs > 0 && self.off_grid.is_empty()
    }

    /// The most compact mode that holds every layer's trained weights exactly, in this
    /// order: lut4-pot-layer, lut4-pot-channel, the same with one table per channel,
    /// int8-pot-channel; in a LUT mode, layers that only int8 holds stay int8. `None`
    /// when no layer sits on a power-of-two grid (weights kept in float: nothing to
    /// derive the weight format from).
    pub fn derived(&self) -> Option<DerivedMode> {
        if !self.layers.iter().any(TrainedLayer::on_grid) {
            return None;
        }
        let candidates = [
            (Mode::Lut4PotLayer, false),
            (Mode::Lut4PotChannel, false),
            (Mode::Lut4PotLayer, true),
            (Mode::Lut4PotChannel, true),
        ];
        for allow_int8 in [false, true] {
            for &(mode, lpc) in &candidates {
                let mut keep = Vec::new();
                let ok = self.layers.iter().all(|l| {
                    if l.holds(mode, lpc, false) {
                        true
                    } else if allow_int8 && l.int8_channel {
                        keep.push(l.name.clone());
                        true
                    } else {
                        false
                    }
                });
                // Mixed precision only while most layers keep their 4-bit codes.
                if ok && keep.len() * 2 <= self.layers.len() {
                    return Some(DerivedMode {
                        mode,
                        lut_per_channel: lpc,
                        keep_8bit: keep,
                    });
                }
            }
        }
        Some(DerivedMode {
            mode: Mode::Int8PotChannel,
            lut_per_channel: false,
            keep_8bit: Vec::new(),
        })
    }

    /// Refuses `mode` when some layer's trained weights do not fit it: the first such
    /// layer, with the derived mode. Layers off every grid (float weights) are fitted as
    /// usual and never contradict.
    pub fn check(
        &self,
        mode: Mode,
        lut_per_channel: bool,
        keep_8bit: &[String],
    ) -> Result<(), ModeContradiction> {
        let derived = self
            .derived()
            .map_or_else(|| "no weight format".to_string(), |d| d.to_string());
        for l in self.layers.iter().filter(|l| l.on_grid()) {
            let keep = keep_8bit.iter().any(|k| k == &l.name)
                || (keep_8bit.iter().any(|k| k == "first")
                    && self.layers.first().is_some_and(|f| f.name == l.name));
            if !l.holds(mode, lut_per_channel, keep) {
                return Err(ModeContradiction {
                    layer: l.name.clone(),
                    weights: l.weights.clone(),
                    requested: mode,
                    lut_per_channel,
                    derived,
                });
            }
        }
        Ok(())
    }
}

/// The trained quantization of an imported QDQ model: its run-time pairs and where each
/// linear layer's weights sit exactly. Run it on the imported graph: the float rewrites
/// fold a global pool's `1/N` into the next layer's weights, off the trained grid.
pub fn trained_quantization(graph: &Graph) -> TrainedQuantization {
    let mut t = TrainedQuantization::default();
    for id in graph.topo_order() {
        let node = graph.node(id);
        match &node.op {
            Op::Activation(Activation::FakeQuant { .. }) => t.pairs += 1,
            Op::Conv(_) | Op::Gemm(_) => {
                let Ok((rows, shape)) = super::linear_weights(graph, id) else {
                    continue;
                };
                let (o, k) = (shape[0], shape[1] * shape[2] * shape[3]);
                let holds = |format, scale| exact_weights(&rows, o, k, format, scale).is_some();
                const INT4: WeightFormat = WeightFormat::Uniform { min: -8, max: 7 };
                const INT8: WeightFormat = WeightFormat::Uniform {
                    min: -128,
                    max: 127,
                };
                let weights = graph
                    .node_inputs(id)
                    .get(1)
                    .map_or_else(String::new, |&w| graph.node(w).name.clone());
                t.layers.push(TrainedLayer {
                    name: node.name.clone(),
                    weights,
                    lut4_layer: holds(WeightFormat::Lut4, ScaleKind::PotLayer),
                    lut4_channel: holds(WeightFormat::Lut4, ScaleKind::PotChannel),
                    lut4_tables_layer: holds(WeightFormat::Lut4PerChannel, ScaleKind::PotLayer),
                    lut4_tables_channel: holds(WeightFormat::Lut4PerChannel, ScaleKind::PotChannel),
                    int4_layer: holds(INT4, ScaleKind::PotLayer),
                    int4_channel: holds(INT4, ScaleKind::PotChannel),
                    int8_channel: holds(INT8, ScaleKind::PotChannel),
                });
            }
            _ => {}
        }
    }
    if let Err(problems) = trained_grids(graph) {
        t.off_grid = problems;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_that_use_parts_of_one_table_share_it() {
        // Two groups of 16 levels each (0..16 and 100..116, as a model trained with two
        // shared tables), every row using only some levels of its group; one row of 17
        // values is refused.
        let row_len = 12;
        let levels: Vec<i32> = (0..10)
            .flat_map(|o| {
                let base = if o % 2 == 0 { 0 } else { 100 };
                (0..row_len as i32).map(move |i| base + (i * (o + 3)) % 16)
            })
            .collect();
        let (sets, set_of) = shared_row_tables(&levels, row_len).unwrap();
        assert_eq!(set_of.len(), 10);
        for (row, &i) in levels.chunks(row_len).zip(&set_of) {
            assert!(
                row.iter().all(|v| sets[i].contains(v)),
                "a row's values are in its table"
            );
            assert!(sets[i].len() <= 16);
        }
        assert_eq!(sets.len(), 2, "one table per group: {sets:?}");
        let wide: Vec<i32> = (0..17).collect();
        assert!(shared_row_tables(&wide, 17).is_none());
    }

    /// Weights `levels · 2^-e` per row.
    fn on_grid(levels: &[i32], exps: &[i32], row_len: usize) -> Vec<f32> {
        levels
            .chunks(row_len)
            .zip(exps)
            .flat_map(|(r, &e)| r.iter().map(move |&l| l as f32 * (-(e as f32)).exp2()))
            .collect()
    }

    fn dequantized(f: &Fitted, row_len: usize) -> Vec<f32> {
        f.dequantized(row_len)
    }

    #[test]
    fn exact_weights_reproduce_the_trained_values_or_refuse() {
        // A shared table of 16 values, rows at different exponents.
        let table = [
            -100, -60, -31, -17, -9, -4, -2, -1, 0, 1, 3, 7, 15, 33, 70, 127,
        ];
        let row_len = 24;
        let rows = 6;
        let levels: Vec<i32> = (0..rows * row_len)
            .map(|i| table[(i * 7 + i / 5) % 16])
            .collect();
        let exps = [7, 9, 3, 7, -2, 12];
        let w = on_grid(&levels, &exps, row_len);
        for (format, scale, exact) in [
            (WeightFormat::Lut4, ScaleKind::PotChannel, true),
            (WeightFormat::Lut4PerChannel, ScaleKind::PotChannel, true),
            (
                WeightFormat::Uniform {
                    min: -128,
                    max: 127,
                },
                ScaleKind::PotChannel,
                true,
            ),
            // One exponent: row 5 needs 2^-12 steps and row 4 reaches 127 · 4.
            (WeightFormat::Lut4, ScaleKind::PotLayer, false),
            (
                WeightFormat::Uniform { min: -8, max: 7 },
                ScaleKind::PotChannel,
                false,
            ),
        ] {
            let got = exact_weights(&w, rows, row_len, format, scale);
            assert_eq!(got.is_some(), exact, "{format:?} {scale:?}");
            if let Some(f) = got {
                assert_eq!(dequantized(&f, row_len), w, "{format:?} {scale:?}");
                if format == WeightFormat::Lut4 {
                    assert_eq!(f.luts.len(), 1);
                    let codes = f.codes.as_ref().unwrap();
                    for (i, &c) in codes.iter().enumerate() {
                        assert_eq!(f.luts[0][c as usize], f.levels[i]);
                    }
                }
            }
        }
        // 17 values in one row: no table holds them, int8 does.
        let mut levels17: Vec<i32> = (0..row_len as i32).map(|i| i - 8).collect();
        levels17.truncate(row_len);
        let w17 = on_grid(&levels17, &[4], row_len);
        assert!(exact_weights(&w17, 1, row_len, WeightFormat::Lut4, ScaleKind::PotLayer).is_none());
        let int8 = WeightFormat::Uniform {
            min: -128,
            max: 127,
        };
        let f = exact_weights(&w17, 1, row_len, int8, ScaleKind::PotLayer).unwrap();
        assert_eq!(dequantized(&f, row_len), w17);
        // Off any grid (a float scale): nothing is exact.
        let off: Vec<f32> = w.iter().map(|v| v * 0.3).collect();
        assert!(exact_weights(&off, rows, row_len, int8, ScaleKind::PotChannel).is_none());
    }

    fn layer(name: &str, lut4_layer: bool, lut4_channel: bool, int8: bool) -> TrainedLayer {
        TrainedLayer {
            name: name.into(),
            weights: format!("{name}.w"),
            lut4_layer,
            lut4_channel,
            lut4_tables_layer: lut4_layer,
            lut4_tables_channel: lut4_channel,
            int4_layer: false,
            int4_channel: false,
            int8_channel: int8,
        }
    }

    #[test]
    fn the_mode_follows_from_the_weights_and_a_contradiction_names_the_layer() {
        let t = |layers| TrainedQuantization {
            pairs: 3,
            off_grid: Vec::new(),
            layers,
        };
        let derived = |layers| t(layers).derived().unwrap();
        // Every layer holds one table and one exponent: lut4-pot-layer.
        let d = derived(vec![
            layer("a", true, true, true),
            layer("b", true, true, true),
        ]);
        assert_eq!((d.mode, d.lut_per_channel), (Mode::Lut4PotLayer, false));
        // One layer needs an exponent per channel.
        let m = t(vec![
            layer("a", true, true, true),
            layer("b", false, true, true),
        ]);
        assert_eq!(m.derived().unwrap().mode, Mode::Lut4PotChannel);
        let err = m.check(Mode::Lut4PotLayer, false, &[]).unwrap_err();
        assert_eq!((err.layer.as_str(), err.weights.as_str()), ("b", "b.w"));
        assert!(err.to_string().contains("--mode lut4-pot-channel"), "{err}");
        assert!(m.check(Mode::Lut4PotChannel, false, &[]).is_ok());
        assert!(m.check(Mode::Int8PotChannel, false, &[]).is_ok());
        assert!(m.check(Mode::Int8Pc, false, &[]).is_err());
        // A layer only int8 holds stays int8 (mixed precision), or the model is int8.
        let d = derived(vec![
            layer("a", true, true, true),
            layer("b", true, true, true),
            layer("c", false, false, true),
        ]);
        assert_eq!(
            (d.mode, d.keep_8bit.clone()),
            (Mode::Lut4PotLayer, vec!["c".to_string()])
        );
        assert!(
            t(vec![
                layer("a", true, true, true),
                layer("c", false, false, true)
            ])
            .check(d.mode, false, &["c".into()])
            .is_ok()
        );
        let d = derived(vec![
            layer("a", false, false, true),
            layer("c", false, false, true),
        ]);
        assert_eq!(d.mode, Mode::Int8PotChannel);
        // Float weights everywhere: nothing to derive, nothing contradicts.
        let f = t(vec![layer("a", false, false, false)]);
        assert!(f.derived().is_none());
        assert!(f.check(Mode::Lut4PotLayer, false, &[]).is_ok());
    }

    #[test]
    fn the_finest_exponent_is_chosen() {
        // 2 · 2^-4 = 2^-3: int4 holds it at exponents 3..=5 (levels 1, 2, 4).
        let w = [0.125f32, -0.125];
        let f = exact_weights(
            &w,
            1,
            2,
            WeightFormat::Uniform { min: -8, max: 7 },
            ScaleKind::PotLayer,
        )
        .unwrap();
        assert_eq!(f.scales, vec![RowScale::Pot(5)]);
        assert_eq!(f.levels, vec![4, -4]);
    }

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
