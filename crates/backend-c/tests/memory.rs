//! The memory planner on random lifetimes: never overlaps live buffers, stays between
//! the lower bound and the naive sum, and reaches the bound on simple chains.

use lutq_backend_c::{Buffer, plan_buffers};

struct Rng(u64);

impl Rng {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn lower_bound(buffers: &[Buffer]) -> usize {
    let steps = buffers.iter().map(|b| b.end).max().unwrap_or(0) + 1;
    (0..steps)
        .map(|t| {
            buffers
                .iter()
                .filter(|b| b.start <= t && t <= b.end)
                .map(|b| b.size)
                .sum()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn live_buffers_never_share_bytes() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for _ in 0..500 {
        let n = 1 + rng.next(40);
        let buffers: Vec<Buffer> = (0..n)
            .map(|i| Buffer {
                size: 1 + rng.next(5000),
                start: i,
                end: i + rng.next(6),
            })
            .collect();
        let (offsets, arena) = plan_buffers(&buffers);
        for i in 0..n {
            assert_eq!(offsets[i] % lutq_backend_c::memory::ALIGN, 0);
            assert!(offsets[i] + buffers[i].size <= arena);
            for j in 0..i {
                let (a, b) = (&buffers[i], &buffers[j]);
                let time = a.start <= b.end && b.start <= a.end;
                let space = offsets[i] < offsets[j] + b.size && offsets[j] < offsets[i] + a.size;
                assert!(!(time && space), "buffers {i} and {j} collide");
            }
        }
        let naive: usize = buffers.iter().map(|b| b.size.next_multiple_of(4)).sum();
        assert!(arena >= lower_bound(&buffers));
        assert!(arena <= naive, "{arena} > {naive}");
    }
}

#[test]
fn a_chain_needs_only_two_buffers() {
    // x0 -> x1 -> x2 -> …: each value dies when the next is computed.
    let buffers: Vec<Buffer> = (0..10)
        .map(|i| Buffer {
            size: 1000 - 10 * i,
            start: i,
            end: i + 1,
        })
        .collect();
    let (_, arena) = plan_buffers(&buffers);
    assert_eq!(arena, lower_bound(&buffers));
    assert_eq!(arena, 1000 + 990);
}

#[test]
fn bundled_fashion_nets_get_a_valid_plan_near_the_lower_bound() {
    let calib = lutq_bundled::fashion_calib(16).unwrap();
    for name in lutq_bundled::FASHION_MODELS {
        let g = lutq_bundled::lowered(name, lutq_quant::Mode::Lut4PotChannel, &calib).unwrap();
        let plan = lutq_backend_c::plan_memory(&g);
        eprintln!(
            "{name}: arena {} B, lower bound {} B, naive {} B",
            plan.arena_size, plan.lower_bound, plan.naive_sum
        );
        let n = g.nodes.len();
        for i in 0..n {
            if plan.input_of[i].is_some() {
                continue;
            }
            if let Some(r) = plan.alias_of[i] {
                assert_eq!(plan.offsets[i], plan.offsets[r], "{name}: alias %{i}");
                continue;
            }
            for j in 0..i {
                if plan.alias_of[j].is_some() || plan.input_of[j].is_some() {
                    continue;
                }
                let ((a0, a1), (b0, b1)) = (plan.live[i], plan.live[j]);
                let time = a0 <= b1 && b0 <= a1;
                let space = plan.offsets[i] < plan.offsets[j] + plan.sizes[j]
                    && plan.offsets[j] < plan.offsets[i] + plan.sizes[i];
                assert!(!(time && space), "{name}: %{i} and %{j} collide");
            }
        }
        assert!(plan.lower_bound <= plan.arena_size && plan.arena_size < plan.naive_sum);
        // Greedy by size is within 10 % of the bound on these chains of convs.
        assert!(
            plan.arena_size as f64 <= 1.1 * plan.lower_bound as f64,
            "{name}"
        );
        assert!(plan.dump(&g).contains("lower bound"));
        // Both nets have residual adds whose operand dies there: they run in place.
        let in_place = g.nodes.iter().enumerate().any(|(i, n)| {
            matches!(n.op, lutq_ir::int::IntOp::Add(_))
                && plan.alias_of[i].is_some_and(|r| plan.offsets[r] == plan.offsets[i])
        });
        assert!(in_place, "{name}: no add runs in place");
        // The quantized input stays in the caller's buffer.
        assert!(plan.input_of[0].is_some(), "{name}");
    }
}

#[test]
fn a_big_early_buffer_does_not_push_later_ones_apart() {
    // MLPerf Tiny VWW's first steps: a transposed input, two maps, a map twice their
    // size. Largest-first placed the input at 0 and the two maps side by side after it
    // (64512 B); another order reaches the bound (55296 B, step 4).
    let buffers = [
        (27648, 1, 2),
        (18432, 2, 3),
        (18432, 3, 4),
        (36864, 4, 5),
        (9216, 5, 6),
    ]
    .map(|(size, start, end)| Buffer { size, start, end });
    let (_, arena) = plan_buffers(&buffers);
    assert_eq!(lower_bound(&buffers), 55296);
    assert_eq!(arena, 55296);
}

/// `arena_blocks` on random programs: what `emit` places, without collisions, inside
/// `NAME_ARENA_SIZE`, every computed value (or the buffer it shares) present once.
#[test]
fn arena_blocks_are_the_emitted_arena() {
    use lutq_backend_c::{EmitOptions, arena_blocks, emit, plan_memory};
    let mut r = lutq_bundled::random::Rng(0x0a11_0ca7_e5ee_d001);
    let mut checked = 0;
    while checked < 60 {
        let (g, _) = lutq_bundled::random::random_graph(&mut r);
        if g.validate().is_err() {
            continue;
        }
        checked += 1;
        let a = arena_blocks(&g);
        let summary = emit(&g, &EmitOptions::new("m")).unwrap().summary;
        assert_eq!(a.arena_size, summary.arena_size);
        assert_eq!(a.lower_bound, summary.arena_lower_bound);
        let plan = plan_memory(&g);
        let owners = (0..g.nodes.len())
            .filter(|&v| plan.alias_of[v].is_none() && plan.input_of[v].is_none())
            .count();
        assert_eq!(a.blocks.iter().filter(|b| !b.scratch).count(), owners);
        assert_eq!(
            a.blocks.iter().filter(|b| b.scratch).count(),
            (0..g.nodes.len())
                .filter(|&i| a.blocks.iter().any(|b| b.scratch && b.node == i))
                .count(),
            "one scratch block per node at most"
        );
        for (i, x) in a.blocks.iter().enumerate() {
            assert!(x.offset + x.size <= a.arena_size, "{x:?}");
            assert!(x.start <= x.end);
            for y in &a.blocks[i + 1..] {
                let in_time = x.start <= y.end && y.start <= x.end;
                let in_bytes = x.offset < y.offset + y.size && y.offset < x.offset + x.size;
                assert!(!(in_time && in_bytes), "{x:?} and {y:?} collide");
            }
        }
    }
}
