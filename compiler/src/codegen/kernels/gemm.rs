//! The packed F32X4 GEMM and its register-tile micro-kernel.
//!
//! `C[rows, n] = epilogue(A[rows, k] B[k, n])` with `B` packed in panels of
//! 8 columns (`[n / 8][k][8]`). For each panel and each tile of [`MR`] rows,
//! the micro-kernel keeps `MR x 2` F32X4 accumulators in registers and, for
//! each `kk`, loads two vectors of the panel, broadcasts one element of each
//! A row and issues `2 * MR` fused multiply-adds. Rows that do not fill a
//! tile run through the same code with one row. The epilogue scales, adds
//! the bias, applies GELU, adds the residual and stores; the last panel of
//! a width that is not a multiple of 8 stores lane by lane.
//!
//! The block-sparse form ([`emit_sparse_kernel`]) runs the same tiles and
//! epilogue over a weight whose empty `4 x 8` tiles were dropped at compile
//! time (`lower::select::sparse`): for each panel it walks the kept tiles,
//! and a table gives each tile's offset into the rows of A.

use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Value, types};

use crate::codegen::builder::{F32X4, I64, Kb, mem_readonly};
use crate::codegen::math;
use crate::lower::kernel::{Activation, GEMM_NR};

/// Rows per register tile: 4 x 2 accumulators, 2 panel vectors and one
/// broadcast stay within the 16 vector registers of x86-64 and AArch64.
pub const MR: usize = 4;

/// Rows of one GEMM task.
pub const ROW_BLOCK: usize = 64;
/// Panels of one GEMM task.
pub const PANEL_GROUP: usize = 16;

/// Operands and shape of one GEMM call emitted inline.
pub struct GemmCall {
    /// First element of A's first row; rows are `lda` elements apart.
    pub a: Value,
    pub lda: i64,
    /// Packed B.
    pub b: Value,
    pub k: usize,
    pub n: usize,
    /// First element of C's first row; rows are `ldc` elements apart.
    pub c: Value,
    pub ldc: i64,
    /// Bias, padded to a multiple of 8 elements.
    pub bias: Option<Value>,
    /// Residual with the same layout as C.
    pub residual: Option<Value>,
    pub scale: f32,
    pub activation: Activation,
    /// Tile table of a block-sparse `b` (see [`emit_sparse_kernel`]).
    pub tiles: Option<Value>,
}

/// Emits the GEMM over rows `row_start..row_end` and panels
/// `panel_start..panel_end` (all i64 values).
pub fn emit_block(kb: &mut Kb, call: &GemmCall, row_start: Value, row_end: Value, panel_start: Value, panel_end: Value) {
    kb.for_range(panel_start, panel_end, 1, |kb, panel| {
        // Full tiles of MR rows, then single rows.
        let full_end = {
            let span = kb.b.ins().isub(row_end, row_start);
            let tiles = kb.b.ins().udiv_imm_u(span, MR as i64);
            let rows = kb.b.ins().imul_imm_s(tiles, MR as i64);
            kb.b.ins().iadd(row_start, rows)
        };
        kb.for_range(row_start, full_end, MR as i64, |kb, row| tile(kb, call, row, panel, MR));
        kb.for_range(full_end, row_end, 1, |kb, row| tile(kb, call, row, panel, 1));
    });
}

/// Steps of k per loop iteration: unrolling amortizes the loop's branch and
/// the register moves Cranelift inserts for the carried accumulators.
const K_UNROLL: usize = 4;

/// Emits one `rows x 8` tile at (`row`, `panel`).
fn tile(kb: &mut Kb, call: &GemmCall, row: Value, panel: Value, rows: usize) {
    if let Some(table) = call.tiles {
        return sparse_tile(kb, call, table, row, panel, rows);
    }
    let panel_bytes = (call.k * GEMM_NR * 4) as i64;
    let b_panel = kb.offset(call.b, panel, panel_bytes);
    let a_row0 = {
        let row_elems = kb.b.ins().imul_imm_s(row, call.lda);
        kb.offset(call.a, row_elems, 4)
    };

    // Accumulate over k, carrying the A and B pointers with the accumulators.
    let zero = kb.splat(0.0);
    let mut carried = vec![a_row0, b_panel];
    carried.extend(std::iter::repeat_n(zero, rows * 2));
    let mut types = vec![I64, I64];
    types.extend(std::iter::repeat_n(F32X4, rows * 2));
    let unrolled = call.k / K_UNROLL;
    let mut state = carried;
    for (count, unroll) in [(unrolled, K_UNROLL), (call.k % K_UNROLL, 1)] {
        if count == 0 {
            continue;
        }
        let start = kb.iconst(0);
        let end = kb.iconst(count as i64);
        state = kb.fold_range(start, end, 1, &state, &types, |kb, _, carried| {
            let (a_ptr, b_ptr) = (carried[0], carried[1]);
            let mut acc = carried[2..].to_vec();
            if unroll == K_UNROLL {
                multiply_block(kb, call, a_ptr, b_ptr, rows, &mut acc);
            } else {
                multiply_step(kb, call, a_ptr, b_ptr, 0, rows, &mut acc);
            }
            let mut next = vec![
                kb.b.ins().iadd_imm_s(a_ptr, (unroll * 4) as i64),
                kb.b.ins().iadd_imm_s(b_ptr, (unroll * GEMM_NR * 4) as i64),
            ];
            next.extend(acc);
            next
        });
    }

    epilogue(kb, call, row, panel, rows, &state[2..]);
}

/// Emits one block-sparse tile. `table` holds the first kept tile of each
/// panel (one u32 per panel, and one past the last), then for each kept
/// tile the byte offset of its first k in a row of A.
fn sparse_tile(kb: &mut Kb, call: &GemmCall, table: Value, row: Value, panel: Value, rows: usize) {
    let tile_bytes = (K_UNROLL * GEMM_NR * 4) as i64;
    let start_ptr = kb.offset(table, panel, 4);
    let first = kb.b.ins().uload32(mem_readonly(), start_ptr, 0);
    let last = kb.b.ins().uload32(mem_readonly(), start_ptr, 4);
    let a_row0 = {
        let row_elems = kb.b.ins().imul_imm_s(row, call.lda);
        kb.offset(call.a, row_elems, 4)
    };
    let panels = call.n.div_ceil(GEMM_NR) as i64;
    let offsets = kb.b.ins().iadd_imm_s(table, (panels + 1) * 4);

    let zero = kb.splat(0.0);
    let b_first = kb.offset(call.b, first, tile_bytes);
    let mut init = vec![b_first];
    init.extend(std::iter::repeat_n(zero, rows * 2));
    let mut types = vec![I64];
    types.extend(std::iter::repeat_n(F32X4, rows * 2));
    let state = kb.fold_range(first, last, 1, &init, &types, |kb, j, carried| {
        let b_ptr = carried[0];
        let offset_ptr = kb.offset(offsets, j, 4);
        let offset = kb.b.ins().uload32(mem_readonly(), offset_ptr, 0);
        let a_ptr = kb.b.ins().iadd(a_row0, offset);
        let mut acc = carried[1..].to_vec();
        multiply_block(kb, call, a_ptr, b_ptr, rows, &mut acc);
        let mut next = vec![kb.b.ins().iadd_imm_s(b_ptr, tile_bytes)];
        next.extend(acc);
        next
    });
    epilogue(kb, call, row, panel, rows, &state[1..]);
}

/// Four steps of k at once: each row's four A values come in one vector
/// load and are broadcast lane by lane with a shuffle (one `pshufd` on
/// x86-64), which takes fewer instructions than four scalar broadcasts.
fn multiply_block(kb: &mut Kb, call: &GemmCall, a_ptr: Value, b_ptr: Value, rows: usize, acc: &mut [Value]) {
    let little = MemFlagsData::new().with_endianness(Endianness::Little);
    let a_vectors: Vec<Value> = (0..rows)
        .map(|r| {
            let a = kb.b.ins().load(F32X4, mem_readonly(), a_ptr, (r as i64 * call.lda * 4) as i32);
            kb.b.ins().bitcast(types::I8X16, little, a)
        })
        .collect();
    for u in 0..K_UNROLL {
        let b0 = kb.b.ins().load(F32X4, mem_readonly(), b_ptr, (u * GEMM_NR * 4) as i32);
        let b1 = kb.b.ins().load(F32X4, mem_readonly(), b_ptr, (u * GEMM_NR * 4 + 16) as i32);
        // Byte mask that repeats 32-bit lane u in all four lanes.
        let mask: Vec<u8> = (0..16).map(|i| (u * 4 + i % 4) as u8).collect();
        let mask = kb.b.func.dfg.immediates.push(mask.into());
        for r in 0..rows {
            let lane = kb.b.ins().shuffle(a_vectors[r], a_vectors[r], mask);
            let av = kb.b.ins().bitcast(F32X4, little, lane);
            acc[2 * r] = kb.b.ins().fma(av, b0, acc[2 * r]);
            acc[2 * r + 1] = kb.b.ins().fma(av, b1, acc[2 * r + 1]);
        }
    }
}

/// `acc[r] += A[r, kk + u] * B[kk + u, 0..8]` for each row of the tile.
fn multiply_step(kb: &mut Kb, call: &GemmCall, a_ptr: Value, b_ptr: Value, u: usize, rows: usize, acc: &mut [Value]) {
    let b0 = kb.b.ins().load(F32X4, mem_readonly(), b_ptr, (u * GEMM_NR * 4) as i32);
    let b1 = kb.b.ins().load(F32X4, mem_readonly(), b_ptr, (u * GEMM_NR * 4 + 16) as i32);
    for r in 0..rows {
        let offset = (r as i64 * call.lda * 4 + u as i64 * 4) as i32;
        let a = kb.b.ins().load(cranelift_codegen::ir::types::F32, mem_readonly(), a_ptr, offset);
        let av = kb.b.ins().splat(F32X4, a);
        acc[2 * r] = kb.b.ins().fma(av, b0, acc[2 * r]);
        acc[2 * r + 1] = kb.b.ins().fma(av, b1, acc[2 * r + 1]);
    }
}

fn epilogue(kb: &mut Kb, call: &GemmCall, row: Value, panel: Value, rows: usize, acc: &[Value]) {
    let col0 = kb.b.ins().imul_imm_s(panel, GEMM_NR as i64);
    let bias = call.bias.map(|bias| {
        let ptr = kb.offset(bias, col0, 4);
        let lo = kb.b.ins().load(F32X4, mem_readonly(), ptr, 0);
        let hi = kb.b.ins().load(F32X4, mem_readonly(), ptr, 16);
        [lo, hi]
    });
    let scale = (call.scale != 1.0).then(|| kb.splat(call.scale));

    let mut values = Vec::with_capacity(acc.len());
    for (i, &v) in acc.iter().enumerate() {
        let mut v = v;
        if let Some(s) = scale {
            v = kb.b.ins().fmul(v, s);
        }
        if let Some(b) = bias {
            v = kb.b.ins().fadd(v, b[i % 2]);
        }
        values.push(math::activation(kb, call.activation, v));
    }

    // Stores: whole vectors unless this is a partial last panel.
    let full_panels = (call.n / GEMM_NR) as i64;
    let partial = !call.n.is_multiple_of(GEMM_NR);
    let store_full = kb.b.create_block();
    let store_partial = kb.b.create_block();
    let done = kb.b.create_block();
    if partial {
        let is_full = kb.b.ins().icmp_imm_s(cranelift_codegen::ir::condcodes::IntCC::SignedLessThan, panel, full_panels);
        kb.b.ins().brif(is_full, store_full, &[], store_partial, &[]);
    } else {
        kb.b.ins().jump(store_full, &[]);
    }

    kb.b.switch_to_block(store_full);
    for r in 0..rows {
        let (c_ptr, res_ptr) = row_pointers(kb, call, row, r, col0);
        for half in 0..2 {
            let mut v = values[2 * r + half];
            if let Some(res) = res_ptr {
                let rv = kb.load_v(res, (half * 16) as i32);
                v = kb.b.ins().fadd(v, rv);
            }
            kb.store(v, c_ptr, (half * 16) as i32);
        }
    }
    kb.b.ins().jump(done, &[]);

    kb.b.switch_to_block(store_partial);
    if partial {
        let valid = call.n % GEMM_NR;
        for r in 0..rows {
            let (c_ptr, res_ptr) = row_pointers(kb, call, row, r, col0);
            for lane in 0..valid {
                let mut x = kb.b.ins().extractlane(values[2 * r + lane / 4], (lane % 4) as u8);
                if let Some(res) = res_ptr {
                    let rv = kb.load_f32(res, (lane * 4) as i32);
                    x = kb.b.ins().fadd(x, rv);
                }
                kb.store(x, c_ptr, (lane * 4) as i32);
            }
        }
    }
    kb.b.ins().jump(done, &[]);
    kb.b.switch_to_block(done);
}

/// Pointers to C and the residual at (`row + r`, `col0`).
fn row_pointers(kb: &mut Kb, call: &GemmCall, row: Value, r: usize, col0: Value) -> (Value, Option<Value>) {
    let row_r = kb.b.ins().iadd_imm_s(row, r as i64);
    let elem = kb.b.ins().imul_imm_s(row_r, call.ldc);
    let elem = kb.b.ins().iadd(elem, col0);
    let c_ptr = kb.offset(call.c, elem, 4);
    let res_ptr = call.residual.map(|res| kb.offset(res, elem, 4));
    (c_ptr, res_ptr)
}

/// Number of tasks of a Linear GEMM: row blocks times panel groups.
pub fn task_count(m: usize, n: usize) -> u32 {
    let panels = n.div_ceil(GEMM_NR);
    (m.div_ceil(ROW_BLOCK) * panels.div_ceil(PANEL_GROUP)) as u32
}

/// Emits the whole-operator GEMM kernel: operands `C, A, B, bias?, residual?`.
pub fn emit_kernel(kb: &mut Kb, m: usize, n: usize, k: usize, bias: bool, activation: Activation, residual: bool) {
    emit_operator(kb, m, n, k, bias, activation, residual, false);
}

/// Emits the block-sparse GEMM kernel: operands `C, A, B tiles, tile
/// table, bias?, residual?` (`Kernel::SparseGemm`). `k` is a multiple of 4.
pub fn emit_sparse_kernel(kb: &mut Kb, m: usize, n: usize, k: usize, bias: bool, activation: Activation, residual: bool) {
    emit_operator(kb, m, n, k, bias, activation, residual, true);
}

#[allow(clippy::too_many_arguments)]
fn emit_operator(kb: &mut Kb, m: usize, n: usize, k: usize, bias: bool, activation: Activation, residual: bool, sparse: bool) {
    let c = kb.arg(0);
    let a = kb.arg(1);
    let b = kb.arg(2);
    let tiles = sparse.then(|| kb.arg(3));
    let mut next = if sparse { 4 } else { 3 };
    let bias_ptr = bias.then(|| {
        next += 1;
        kb.arg(next - 1)
    });
    let residual_ptr = residual.then(|| kb.arg(next));

    let range = task_range(kb, m, n);
    let call = GemmCall { a, lda: k as i64, b, k, n, c, ldc: n as i64, bias: bias_ptr, residual: residual_ptr, scale: 1.0, activation, tiles };
    emit_block(kb, &call, range.row_start, range.row_end, range.panel_start, range.panel_end);
}

/// Rows and panels (i64 values, ends exclusive) of the current task.
pub struct TaskRange {
    pub row_start: Value,
    pub row_end: Value,
    pub panel_start: Value,
    pub panel_end: Value,
}

/// Maps the current task of an `m x n` GEMM (F32 or INT8) to its block of
/// [`ROW_BLOCK`] rows and group of [`PANEL_GROUP`] panels, as [`task_count`] counts them.
pub fn task_range(kb: &mut Kb, m: usize, n: usize) -> TaskRange {
    let panels = n.div_ceil(GEMM_NR) as i64;
    let groups = (panels as usize).div_ceil(PANEL_GROUP) as i64;
    let task = kb.task_i64();
    let block = kb.b.ins().udiv_imm_u(task, groups);
    let group = kb.b.ins().urem_imm_u(task, groups);

    let row_start = kb.b.ins().imul_imm_s(block, ROW_BLOCK as i64);
    let row_end = kb.b.ins().iadd_imm_s(row_start, ROW_BLOCK as i64);
    let m_v = kb.iconst(m as i64);
    let row_end = kb.b.ins().smin(row_end, m_v);

    let panel_start = kb.b.ins().imul_imm_s(group, PANEL_GROUP as i64);
    let panel_end = kb.b.ins().iadd_imm_s(panel_start, PANEL_GROUP as i64);
    let panels_v = kb.iconst(panels);
    let panel_end = kb.b.ins().smin(panel_end, panels_v);
    TaskRange { row_start, row_end, panel_start, panel_end }
}
