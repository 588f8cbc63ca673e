//! The static memory plan: one arena, every activation at a fixed offset.
//!
//! Each value of an [`IntGraph`] lives from the step that computes it to the last step
//! that reads it (graph outputs to the end). Two values may share bytes only if their
//! lifetimes do not overlap. The plan is *greedy*: buffers one by one, each at the
//! lowest aligned offset that does not collide with a buffer already placed whose
//! lifetime overlaps, in a few orders ([`ORDERS`]: by decreasing size first, then by
//! decreasing size × lifetime, by longest lifetime, by start), keeping the smallest arena
//! (the first order on ties). Greedy by size alone left the MLPerf Tiny VWW network at
//! 1.17× its lower bound (a big early buffer pushed the next two apart); the orders
//! together reach the bound there.
//!
//! Three kinds of values take no buffer of their own:
//! * a quantized graph input stays in the caller's input buffer (the C API takes it
//!   already quantized);
//! * a `reshape` does not move data: it shares its input's buffer;
//! * an `add` or a `requant` runs **in place** of an operand whose buffer dies at that
//!   step (elementwise, same element size: each element is read before it is written).
//!
//! A shared buffer lives as long as any value in it.
//!
//! Reported next to the arena size: the **lower bound** (the most arena bytes live at
//! any one step, with the sharing above: no plan of these buffers can do better) and the
//! **naive sum** (every computed value its own buffer, no sharing).

use std::fmt::Write as _;

use lutq_ir::int::{IntGraph, IntOp};
use serde::Serialize;

/// Offsets are multiples of this (i32 accumulator outputs need 4-byte alignment).
pub const ALIGN: usize = 4;

/// One buffer to place: `size` bytes, live during steps `start..=end`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Buffer {
    pub size: usize,
    pub start: usize,
    pub end: usize,
}

impl Buffer {
    fn overlaps_in_time(&self, other: &Buffer) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

/// A placement order's sort key of a buffer.
type OrderKey = fn(&Buffer) -> (i64, i64);

/// The orders [`plan_buffers`] tries, as sort keys (smaller first; ties: earlier start,
/// then index): decreasing size; decreasing size × lifetime; decreasing lifetime, then
/// size; increasing start, then decreasing size.
const ORDERS: [OrderKey; 4] = [
    |b| (-(b.size as i64), 0),
    |b| (-((b.size * (b.end - b.start + 1)) as i64), 0),
    |b| (-((b.end - b.start) as i64), -(b.size as i64)),
    |b| (b.start as i64, -(b.size as i64)),
];

/// Places `buffers`: returns each one's offset and the arena size.
pub fn plan_buffers(buffers: &[Buffer]) -> (Vec<usize>, usize) {
    let mut best: Option<(Vec<usize>, usize)> = None;
    for key in ORDERS {
        let mut order: Vec<usize> = (0..buffers.len()).collect();
        order.sort_by(|&a, &b| {
            key(&buffers[a])
                .cmp(&key(&buffers[b]))
                .then(buffers[a].start.cmp(&buffers[b].start))
                .then(a.cmp(&b))
        });
        let plan = place_in_order(buffers, &order);
        if best.as_ref().is_none_or(|(_, arena)| plan.1 < *arena) {
            best = Some(plan);
        }
    }
    best.unwrap_or_default()
}

/// Greedy placement of `buffers` in `order`: each at the lowest aligned offset free of
/// the buffers placed before it whose lifetimes overlap its own.
fn place_in_order(buffers: &[Buffer], order: &[usize]) -> (Vec<usize>, usize) {
    let mut offsets = vec![0usize; buffers.len()];
    let mut placed: Vec<usize> = Vec::new();
    let mut arena = 0;
    for &i in order {
        let b = &buffers[i];
        // Busy ranges of time-overlapping buffers, by offset.
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&j| buffers[j].overlaps_in_time(b) && buffers[j].size > 0)
            .map(|&j| (offsets[j], offsets[j] + buffers[j].size))
            .collect();
        busy.sort_unstable();
        let mut offset = 0;
        for (lo, hi) in busy {
            if offset + b.size <= lo {
                break;
            }
            offset = offset.max(hi.next_multiple_of(ALIGN));
        }
        offsets[i] = offset;
        arena = arena.max(offset + b.size);
        placed.push(i);
    }
    (offsets, arena)
}

/// Where every value of a program lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemoryPlan {
    /// Per value (node index): its buffer's offset in the arena (meaningless for a value
    /// in the caller's input, see `input_of`).
    pub offsets: Vec<usize>,
    /// Per value: bytes.
    pub sizes: Vec<usize>,
    /// Per value: the first and last step its buffer is live (aliases included).
    pub live: Vec<(usize, usize)>,
    /// Per value: the value whose buffer it shares (a reshape, or an op computed in
    /// place of an operand that dies there), if any.
    pub alias_of: Vec<Option<usize>>,
    /// Per value: `Some(k)` if it is graph input `k` as quantized by the caller (a
    /// `quantize_input`, or a reshape of one): it stays in the caller's input buffer and
    /// takes no arena bytes.
    pub input_of: Vec<Option<usize>>,
    /// Bytes the caller's arena needs.
    pub arena_size: usize,
    /// The most arena bytes live at one step: no plan needs less.
    pub lower_bound: usize,
    /// Every arena value in its own buffer.
    pub naive_sum: usize,
}

/// May `node` write its output over operand `slot` (elementwise ops only)? The operand
/// must be dying here, have the output's element size and live in the arena.
fn in_place_operands(node: &lutq_ir::int::IntNode) -> &'static [usize] {
    match node.op {
        IntOp::Add(_) => &[0, 1],
        IntOp::Requant { .. } | IntOp::Table(_) | IntOp::Mul(_) => &[0],
        _ => &[],
    }
}

/// Plans the arena of `graph` (see the module docs).
pub fn plan_memory(graph: &IntGraph) -> MemoryPlan {
    plan_with_scratch(graph, |_| 0).0
}

/// Plans the activations of `graph` together with each node's kernel scratch
/// (`scratch(i)` bytes, live during step `i` only) as buffers of their own: returns the
/// plan (its `arena_size` includes the scratch) and each node's scratch offset (`None`
/// where it needs none). The lower bound stays the activations'.
pub(crate) fn plan_with_scratch(
    graph: &IntGraph,
    scratch: impl Fn(usize) -> usize,
) -> (MemoryPlan, Vec<Option<usize>>) {
    let n = graph.nodes.len();
    let last_use = graph.last_use();
    let own_end: Vec<usize> = (0..n).map(|i| last_use[i].unwrap_or(i)).collect();
    let sizes: Vec<usize> = graph
        .nodes
        .iter()
        .map(|node| node.ty.size_bytes())
        .collect();
    // Buffer sharing: a reshape always shares its input's buffer; an Add or a requant
    // shares the buffer of an operand whose buffer (every value in it) dies at this step.
    let mut root: Vec<usize> = (0..n).collect();
    let mut alias_of = vec![None; n];
    let mut input_of = vec![None; n];
    // Per root: the last step any value sharing its buffer is read.
    let mut end = own_end.clone();
    for (i, node) in graph.nodes.iter().enumerate() {
        let shared = match &node.op {
            IntOp::QuantizeInput { input } => {
                input_of[i] = Some(*input);
                None
            }
            IntOp::Reshape => Some(root[node.inputs[0].index()]),
            _ => in_place_operands(node).iter().find_map(|&slot| {
                let v = node.inputs[slot].index();
                let r = root[v];
                let fits = graph.nodes[v].ty.elem.size_bytes() == node.ty.elem.size_bytes()
                    && sizes[v] == sizes[i];
                (fits && input_of[r].is_none() && end[r] == i).then_some(r)
            }),
        };
        if let Some(r) = shared {
            root[i] = r;
            alias_of[i] = Some(r);
            input_of[i] = input_of[r];
            end[r] = end[r].max(own_end[i]);
        }
    }
    let roots: Vec<usize> = (0..n)
        .filter(|&i| root[i] == i && input_of[i].is_none())
        .collect();
    let mut buffers: Vec<Buffer> = roots
        .iter()
        .map(|&i| Buffer {
            size: sizes[i],
            start: i,
            end: end[i],
        })
        .collect();
    let scratch_nodes: Vec<usize> = (0..n).filter(|&i| scratch(i) > 0).collect();
    buffers.extend(scratch_nodes.iter().map(|&i| Buffer {
        size: scratch(i),
        start: i,
        end: i,
    }));
    let (placed, arena_size) = plan_buffers(&buffers);
    let mut scratch_at = vec![None; n];
    for (k, &i) in scratch_nodes.iter().enumerate() {
        scratch_at[i] = Some(placed[roots.len() + k]);
    }
    buffers.truncate(roots.len());
    let mut offsets = vec![0; n];
    for (k, &i) in roots.iter().enumerate() {
        offsets[i] = placed[k];
    }
    let live: Vec<(usize, usize)> = (0..n).map(|i| (root[i], end[root[i]])).collect();
    for i in 0..n {
        offsets[i] = offsets[root[i]];
    }
    let steps = n + 1;
    let lower_bound = (0..steps)
        .map(|t| {
            buffers
                .iter()
                .filter(|b| b.start <= t && t <= b.end)
                .map(|b| b.size)
                .sum::<usize>()
        })
        .max()
        .unwrap_or(0);
    let naive_sum = (0..n)
        .filter(|&i| input_of[i].is_none() && !matches!(graph.nodes[i].op, IntOp::Reshape))
        .map(|i| sizes[i])
        .sum();
    let plan = MemoryPlan {
        offsets,
        sizes,
        live,
        alias_of,
        input_of,
        arena_size,
        lower_bound,
        naive_sum,
    };
    (plan, scratch_at)
}

impl MemoryPlan {
    /// The plan as text (`lutq dump --stage memory`).
    pub fn dump(&self, graph: &IntGraph) -> String {
        let mut s = format!(
            "memory_plan {:?} {{\n  arena {} bytes; lower bound {} (most bytes live at once); naive {} (no reuse)\n",
            graph.name, self.arena_size, self.lower_bound, self.naive_sum
        );
        for (i, node) in graph.nodes.iter().enumerate() {
            let (a, b) = self.live[i];
            write!(
                s,
                "  %{i:<4} {:<14} {:>9} B  live [{a}, {b}]  offset {}",
                node.op.name(),
                self.sizes[i],
                self.offsets[i]
            )
            .unwrap();
            if let Some(k) = self.input_of[i] {
                write!(s, "  (caller's input {k})").unwrap();
            } else if let Some(r) = self.alias_of[i] {
                write!(s, "  (shares %{r})").unwrap();
            }
            writeln!(s, "  ; {}", node.name).unwrap();
        }
        s.push_str("}\n");
        s
    }
}
