//! Where kernel scratch goes in the arena: per node, the lowest offset whose bytes no
//! activation buffer live at that step uses (the memory plan's buffers stay where they
//! are), so a kernel's scratch usually fits in a gap and the arena grows only when no
//! gap is large enough.

use crate::memory::{ALIGN, MemoryPlan};

/// Per node of `plan` (`scratch(i)`: the bytes node `i` needs): its scratch's offset
/// (`None`: it needs none), and the arena size with every scratch placed.
pub(crate) fn place_scratch(
    plan: &MemoryPlan,
    scratch: impl Fn(usize) -> usize,
) -> (Vec<Option<usize>>, usize) {
    let n = plan.offsets.len();
    let buffers = plan_buffers(plan);
    let mut arena = plan.arena_size;
    let offsets = (0..n)
        .map(|i| {
            let size = scratch(i);
            if size == 0 {
                return None;
            }
            let offset = gap_offset(&buffers, i, size);
            arena = arena.max(offset + size);
            Some(offset)
        })
        .collect();
    (offsets, arena)
}

/// The plan's buffers: one per root value (not an alias, not the caller's input), as
/// `(first byte, end byte, first step, last step)`.
fn plan_buffers(plan: &MemoryPlan) -> Vec<(usize, usize, usize, usize)> {
    (0..plan.offsets.len())
        .filter(|&v| plan.alias_of[v].is_none() && plan.input_of[v].is_none())
        .map(|v| {
            let (start, end) = plan.live[v];
            (plan.offsets[v], plan.offsets[v] + plan.sizes[v], start, end)
        })
        .collect()
}

/// The end of `size` bytes of scratch for node `i` placed in the lowest gap of `plan`
/// (what [`place_scratch`] would use).
pub(crate) fn gap_end(plan: &MemoryPlan, i: usize, size: usize) -> usize {
    gap_offset(&plan_buffers(plan), i, size) + size
}

/// The lowest aligned offset where `size` bytes collide with no buffer live at step `i`.
fn gap_offset(buffers: &[(usize, usize, usize, usize)], i: usize, size: usize) -> usize {
    let mut busy: Vec<(usize, usize)> = buffers
        .iter()
        .filter(|&&(lo, hi, start, end)| start <= i && i <= end && hi > lo)
        .map(|&(lo, hi, _, _)| (lo, hi))
        .collect();
    busy.sort_unstable();
    let mut offset = 0;
    for (lo, hi) in busy {
        if offset + size <= lo {
            break;
        }
        offset = offset.max(hi.next_multiple_of(ALIGN));
    }
    offset
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three values: %0 (100 B at 0, live 0..=2), %1 (50 B at 200, live 1..=2), %2
    /// (8 B at 100, live 2..=2); arena 250.
    fn plan() -> MemoryPlan {
        MemoryPlan {
            offsets: vec![0, 200, 100],
            sizes: vec![100, 50, 8],
            live: vec![(0, 2), (1, 2), (2, 2)],
            alias_of: vec![None; 3],
            input_of: vec![None; 3],
            arena_size: 250,
            lower_bound: 158,
            naive_sum: 158,
        }
    }

    #[test]
    fn scratch_goes_into_a_gap_between_live_buffers() {
        // Step 1: %0 and %1 live, bytes 100..200 free.
        let (at, arena) = place_scratch(&plan(), |i| if i == 1 { 100 } else { 0 });
        assert_eq!(at, vec![None, Some(100), None]);
        assert_eq!(arena, 250);
    }

    #[test]
    fn scratch_that_fits_no_gap_grows_the_arena() {
        // Step 2: %2 takes 100..108, so 92 bytes fit at 108 but 101 only past the end.
        let (at, arena) = place_scratch(&plan(), |i| if i == 2 { 92 } else { 0 });
        assert_eq!(at[2], Some(108));
        assert_eq!(arena, 250);
        let (at, arena) = place_scratch(&plan(), |i| if i == 2 { 101 } else { 0 });
        assert_eq!(at[2], Some(252));
        assert_eq!(arena, 353);
    }

    #[test]
    fn buffers_not_live_at_the_step_do_not_block() {
        // Step 0: only %0 is live; %1 and %2 are not yet computed.
        let (at, _) = place_scratch(&plan(), |i| if i == 0 { 150 } else { 0 });
        assert_eq!(at[0], Some(100));
    }
}
