//! Memory planning: offsets in one scratch arena.
//!
//! Each temporary slot lives from the first kernel call that uses it to the
//! last. Slots are placed in order of first use at the lowest 64-byte
//! aligned offset that no live slot occupies (first fit), so memory is
//! reused as soon as a value dies. A kernel's results never share memory
//! with its operands, because both are live during that call. Inputs,
//! outputs and weights live outside the arena.

use super::select::{Selected, SlotKind};
use super::{Buf, Program, Step};

/// Alignment of every arena allocation, in bytes.
pub const ARENA_ALIGN: usize = 64;

/// Places the slots of `selected` and resolves every kernel operand.
pub(super) fn plan_memory(selected: Selected) -> Program {
    let slot_count = selected.slots.len();
    let mut first = vec![usize::MAX; slot_count];
    let mut last = vec![0usize; slot_count];
    for (i, step) in selected.steps.iter().enumerate() {
        for &slot in &step.args {
            first[slot] = first[slot].min(i);
            last[slot] = last[slot].max(i);
        }
    }

    let mut order: Vec<usize> = (0..slot_count)
        .filter(|&s| selected.slots[s].kind == SlotKind::Temp && first[s] != usize::MAX)
        .collect();
    order.sort_by_key(|&s| (first[s], s));

    // Live allocations as (offset, bytes, last step).
    let mut live: Vec<(usize, usize, usize)> = Vec::new();
    let mut offsets = vec![0usize; slot_count];
    let mut arena_bytes = 0;
    for slot in order {
        live.retain(|&(_, _, end)| end >= first[slot]);
        live.sort();
        let bytes = (selected.slots[slot].floats * 4).div_ceil(ARENA_ALIGN).max(1) * ARENA_ALIGN;
        let mut offset = 0;
        for &(start, size, _) in &live {
            if offset + bytes <= start {
                break;
            }
            offset = offset.max(start + size);
        }
        offsets[slot] = offset;
        arena_bytes = arena_bytes.max(offset + bytes);
        live.push((offset, bytes, last[slot]));
    }

    let buf = |slot: usize| match selected.slots[slot].kind {
        SlotKind::Input(i) => Buf::Input(i),
        SlotKind::Output(i) => Buf::Output(i),
        SlotKind::Weight(i) => Buf::Weight(i),
        SlotKind::Temp => Buf::Arena { offset: offsets[slot] },
    };
    let steps = selected
        .steps
        .into_iter()
        .map(|s| Step { node: s.node, kernel: s.kernel, args: s.args.iter().map(|&a| buf(a)).collect() })
        .collect();
    Program { inputs: selected.inputs, outputs: selected.outputs, weights: selected.weights, steps, arena_bytes }
}
