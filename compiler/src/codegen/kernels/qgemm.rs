//! The INT8 GEMM: u8 activations times packed i8 weights, i32 accumulators,
//! and the dequantizing epilogue of `QLinear`.
//!
//! Each step of the k loop reads four bytes of each A row and broadcasts
//! them to all four 32-bit lanes. It then takes the dot product with two
//! weight vectors (8 columns x 4 k, see `pack_int8_panels`), which adds
//! four u8 x i8 products into each i32 lane. How that dot product is emitted depends on
//! the target ([`DotStrategy`]). The tile is [`MR`] rows by 8 columns:
//! 8 accumulators, 2 weight vectors and the broadcasts fit in 16 vector
//! registers. The epilogue subtracts `zp[r] * colsum[j]`, converts to f32,
//! multiplies by `scale[r] * w_scale[j]` and adds the bias, in the order
//! the interpreter uses, so both agree bit for bit. A GELU that follows the
//! layer is applied there too, with the same code as the unary kernel.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Value, types};
use cranelift_codegen::isa::TargetIsa;
use target_lexicon::Architecture;

use super::gemm::{TaskRange, task_range};
use crate::codegen::builder::{F32X4, I64, Kb, mem_readonly};
use crate::codegen::math;
use crate::lower::kernel::{Activation, GEMM_NR, QGEMM_KGROUP};

/// Rows per register tile.
pub const MR: usize = 4;
/// Bytes of one packed k group of a panel: 8 columns x 4 k.
const GROUP_BYTES: i64 = (GEMM_NR * QGEMM_KGROUP) as i64;

/// Instruction sequence for the u8 x i8 dot product of four bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DotStrategy {
    /// x86-64 `pmaddubsw` (two products summed in saturating i16) and
    /// `pmaddwd` by ones (pairs summed in i32). Exact only when every
    /// weight is in -64..=63, because 2 * 255 * 64 fits in i16.
    Pmaddubsw,
    /// The exact widening form: zero- and sign-extend to i16, multiply, and
    /// add pairs twice in i32. Cranelift 0.135 folds it into one `vpdpbusd`
    /// on x86-64 with AVX-VNNI or AVX512-VNNI, and into one `usdot` on
    /// AArch64 with FEAT_I8MM. Elsewhere it stays a sequence of widening
    /// multiplies and pairwise adds (`umull`/`smull`-style on AArch64,
    /// `pmovzx`/`pmullw`/`pmaddwd` on x86-64). Cranelift matches the
    /// multiply's operands in order, and the x86-64 rule wants the signed
    /// operand first while the AArch64 rule wants the unsigned one first.
    Widening { unsigned_first: bool },
}

impl DotStrategy {
    /// The strategy for `isa` when the weights are narrow; wider weights
    /// fall back to [`DotStrategy::Widening`].
    ///
    /// On x86-64 with VNNI for 128-bit vectors (AVX512-VNNI with AVX512-VL,
    /// or AVX-VNNI) the widening form becomes one `vpdpbusd`, which beats
    /// `pmaddubsw`: on an Intel Xeon with AVX512-VNNI (`benches/int8-peak`,
    /// one core, a loaded machine) this kernel ran at about 100 GOP/s with
    /// `vpdpbusd` and 70 GOP/s with `pmaddubsw`. Without VNNI, `pmaddubsw`
    /// is the short sequence.
    pub fn for_isa(isa: &dyn TargetIsa) -> DotStrategy {
        match isa.triple().architecture {
            Architecture::X86_64 if has_vnni(isa) => DotStrategy::Widening { unsigned_first: false },
            Architecture::X86_64 => DotStrategy::Pmaddubsw,
            _ => DotStrategy::Widening { unsigned_first: true },
        }
    }
}

/// Returns whether Cranelift folds the widening dot product into
/// `vpdpbusd` on 128-bit vectors for `isa`.
fn has_vnni(isa: &dyn TargetIsa) -> bool {
    let flags = isa.isa_flags();
    let on = |name: &str| flags.iter().any(|f| f.name == name && f.as_bool() == Some(true));
    (on("has_avx512vnni") && on("has_avx512vl")) || (on("has_avx_vnni") && on("has_avx"))
}

/// Shape and operands of one INT8 GEMM call.
struct Call {
    a: Value,
    params: Value,
    b: Value,
    colsum: Value,
    scales: Value,
    bias: Option<Value>,
    c: Value,
    n: usize,
    k: usize,
    per_row_params: bool,
    strategy: DotStrategy,
    activation: Activation,
}

/// Emits the kernel: operands `C, A, params, B, colsum, w_scale, bias?`.
#[allow(clippy::too_many_arguments)]
pub fn emit_kernel(kb: &mut Kb, m: usize, n: usize, k: usize, per_row_params: bool, bias: bool, narrow_weights: bool, activation: Activation) {
    let strategy = match kb.int8 {
        DotStrategy::Pmaddubsw if !narrow_weights => DotStrategy::Widening { unsigned_first: false },
        strategy => strategy,
    };
    let call = Call {
        c: kb.arg(0),
        a: kb.arg(1),
        params: kb.arg(2),
        b: kb.arg(3),
        colsum: kb.arg(4),
        scales: kb.arg(5),
        bias: bias.then(|| kb.arg(6)),
        n,
        k,
        per_row_params,
        strategy,
        activation,
    };

    let TaskRange { row_start, row_end, panel_start, panel_end } = task_range(kb, m, n);
    kb.for_range(panel_start, panel_end, 1, |kb, panel| {
        let full_end = {
            let span = kb.b.ins().isub(row_end, row_start);
            let tiles = kb.b.ins().udiv_imm_u(span, MR as i64);
            let rows = kb.b.ins().imul_imm_s(tiles, MR as i64);
            kb.b.ins().iadd(row_start, rows)
        };
        kb.for_range(row_start, full_end, MR as i64, |kb, row| tile(kb, &call, row, panel, MR));
        kb.for_range(full_end, row_end, 1, |kb, row| tile(kb, &call, row, panel, 1));
    });
}

/// Emits one `rows x 8` tile at (`row`, `panel`).
fn tile(kb: &mut Kb, call: &Call, row: Value, panel: Value, rows: usize) {
    let groups = call.k.div_ceil(QGEMM_KGROUP);
    let b_panel = kb.offset(call.b, panel, groups as i64 * GROUP_BYTES);
    let a_row0 = kb.offset(call.a, row, call.k as i64);
    let zero = {
        let z = kb.b.ins().iconst(types::I32, 0);
        kb.b.ins().splat(types::I32X4, z)
    };

    let mut state = vec![a_row0, b_panel];
    state.extend(std::iter::repeat_n(zero, rows * 2));
    let mut types_of = vec![I64, I64];
    types_of.extend(std::iter::repeat_n(types::I32X4, rows * 2));
    // Unrolled groups first, then the rest one group at a time.
    for (count, unroll) in [(groups / K_UNROLL, K_UNROLL), (groups % K_UNROLL, 1)] {
        if count == 0 {
            continue;
        }
        let start = kb.iconst(0);
        let end = kb.iconst(count as i64);
        state = kb.fold_range(start, end, 1, &state, &types_of, |kb, _, carried| {
            let (a_ptr, b_ptr) = (carried[0], carried[1]);
            let mut acc = carried[2..].to_vec();
            if unroll == K_UNROLL {
                multiply_groups(kb, call, a_ptr, b_ptr, rows, &mut acc);
            } else {
                multiply_group(kb, call, a_ptr, b_ptr, rows, &mut acc);
            }
            let mut next = vec![
                kb.b.ins().iadd_imm_s(a_ptr, (unroll * QGEMM_KGROUP) as i64),
                kb.b.ins().iadd_imm_s(b_ptr, unroll as i64 * GROUP_BYTES),
            ];
            next.extend(acc);
            next
        });
    }
    epilogue(kb, call, row, panel, rows, &state[2..]);
}

/// Groups of k per unrolled loop step. Each A row's 16 bytes come in one
/// vector load, and each group's 4 bytes are broadcast with a shuffle (one
/// `pshufd` on x86-64). The loop's pointer updates and accumulator moves
/// are paid once per 4 groups.
const K_UNROLL: usize = 4;

/// Multiplies four groups of k: `acc[r] += dot4(A[r, 4g..4g + 4], B group g)` for g in 0..4.
fn multiply_groups(kb: &mut Kb, call: &Call, a_ptr: Value, b_ptr: Value, rows: usize, acc: &mut [Value]) {
    let a_vectors: Vec<Value> =
        (0..rows).map(|r| kb.b.ins().load(types::I8X16, mem_readonly(), a_ptr, (r * call.k) as i32)).collect();
    for u in 0..K_UNROLL {
        let w0 = kb.b.ins().load(types::I8X16, mem_readonly(), b_ptr, (u as i64 * GROUP_BYTES) as i32);
        let w1 = kb.b.ins().load(types::I8X16, mem_readonly(), b_ptr, (u as i64 * GROUP_BYTES + 16) as i32);
        // Byte mask that repeats 32-bit lane u in all four lanes.
        let mask: Vec<u8> = (0..16).map(|i| (u * 4 + i % 4) as u8).collect();
        let mask = kb.b.func.dfg.immediates.push(mask.into());
        for r in 0..rows {
            let a = kb.b.ins().shuffle(a_vectors[r], a_vectors[r], mask);
            acc[2 * r] = dot(kb, call.strategy, a, w0, acc[2 * r]);
            acc[2 * r + 1] = dot(kb, call.strategy, a, w1, acc[2 * r + 1]);
        }
    }
}

/// Multiplies one group of k: four bytes of each A row, broadcast to all lanes.
fn multiply_group(kb: &mut Kb, call: &Call, a_ptr: Value, b_ptr: Value, rows: usize, acc: &mut [Value]) {
    let w0 = kb.b.ins().load(types::I8X16, mem_readonly(), b_ptr, 0);
    let w1 = kb.b.ins().load(types::I8X16, mem_readonly(), b_ptr, 16);
    for r in 0..rows {
        let bytes = kb.b.ins().load(types::I32, mem_readonly(), a_ptr, (r * call.k) as i32);
        let lanes = kb.b.ins().splat(types::I32X4, bytes);
        let a = kb.b.ins().bitcast(types::I8X16, MemFlagsData::new().with_endianness(Endianness::Little), lanes);
        acc[2 * r] = dot(kb, call.strategy, a, w0, acc[2 * r]);
        acc[2 * r + 1] = dot(kb, call.strategy, a, w1, acc[2 * r + 1]);
    }
}

/// `acc + dot4(a, w)` in each i32 lane, with `a` unsigned and `w` signed bytes.
fn dot(kb: &mut Kb, strategy: DotStrategy, a: Value, w: Value, acc: Value) -> Value {
    let sum = match strategy {
        DotStrategy::Pmaddubsw => {
            // `x86_pmaddubsw` takes the signed operand first.
            let pairs = kb.b.ins().x86_pmaddubsw(w, a);
            // Widening pairwise add of i16 lanes lowers to `pmaddwd` by ones.
            let lo = kb.b.ins().swiden_low(pairs);
            let hi = kb.b.ins().swiden_high(pairs);
            kb.b.ins().iadd_pairwise(lo, hi)
        }
        DotStrategy::Widening { unsigned_first } => {
            let a_lo = kb.b.ins().uwiden_low(a);
            let w_lo = kb.b.ins().swiden_low(w);
            let a_hi = kb.b.ins().uwiden_high(a);
            let w_hi = kb.b.ins().swiden_high(w);
            let (lo, hi) = if unsigned_first {
                (kb.b.ins().imul(a_lo, w_lo), kb.b.ins().imul(a_hi, w_hi))
            } else {
                (kb.b.ins().imul(w_lo, a_lo), kb.b.ins().imul(w_hi, a_hi))
            };
            let lo_lo = kb.b.ins().swiden_low(lo);
            let lo_hi = kb.b.ins().swiden_high(lo);
            let hi_lo = kb.b.ins().swiden_low(hi);
            let hi_hi = kb.b.ins().swiden_high(hi);
            let lo_sum = kb.b.ins().iadd_pairwise(lo_lo, lo_hi);
            let hi_sum = kb.b.ins().iadd_pairwise(hi_lo, hi_hi);
            kb.b.ins().iadd_pairwise(lo_sum, hi_sum)
        }
    };
    kb.b.ins().iadd(sum, acc)
}

fn epilogue(kb: &mut Kb, call: &Call, row: Value, panel: Value, rows: usize, acc: &[Value]) {
    let col0 = kb.b.ins().imul_imm_s(panel, GEMM_NR as i64);
    let mut colsum = [acc[0]; 2];
    let mut scales = [acc[0]; 2];
    let mut bias = None;
    for half in 0..2 {
        let offset = (half * 16) as i32;
        let ptr = kb.offset(call.colsum, col0, 4);
        colsum[half] = kb.b.ins().load(types::I32X4, mem_readonly(), ptr, offset);
        let ptr = kb.offset(call.scales, col0, 4);
        scales[half] = kb.b.ins().load(F32X4, mem_readonly(), ptr, offset);
    }
    if let Some(b) = call.bias {
        let ptr = kb.offset(b, col0, 4);
        let lo = kb.b.ins().load(F32X4, mem_readonly(), ptr, 0);
        let hi = kb.b.ins().load(F32X4, mem_readonly(), ptr, 16);
        bias = Some([lo, hi]);
    }

    let mut values = Vec::with_capacity(acc.len());
    for r in 0..rows {
        let (scale, zero_point) = row_params(kb, call, row, r);
        for half in 0..2 {
            let correction = kb.b.ins().imul(zero_point, colsum[half]);
            let exact = kb.b.ins().isub(acc[2 * r + half], correction);
            let real = kb.b.ins().fcvt_from_sint(F32X4, exact);
            let combined = kb.b.ins().fmul(scale, scales[half]);
            let mut v = kb.b.ins().fmul(real, combined);
            if let Some(b) = bias {
                v = kb.b.ins().fadd(v, b[half]);
            }
            values.push(math::activation(kb, call.activation, v));
        }
    }
    store(kb, call, row, panel, col0, rows, &values);
}

/// Splats of row `row + r`'s scale (f32) and zero point (i32).
fn row_params(kb: &mut Kb, call: &Call, row: Value, r: usize) -> (Value, Value) {
    let ptr = if call.per_row_params {
        let index = kb.b.ins().iadd_imm_s(row, r as i64);
        kb.offset(call.params, index, 8)
    } else {
        call.params
    };
    let scale = kb.load_f32(ptr, 0);
    let zero_point = kb.load_f32(ptr, 4);
    let zero_point = kb.b.ins().fcvt_to_sint_sat(types::I32, zero_point);
    (kb.b.ins().splat(F32X4, scale), kb.b.ins().splat(types::I32X4, zero_point))
}

/// Stores whole vectors, or lane by lane in a partial last panel.
fn store(kb: &mut Kb, call: &Call, row: Value, panel: Value, col0: Value, rows: usize, values: &[Value]) {
    let full_panels = (call.n / GEMM_NR) as i64;
    let partial = !call.n.is_multiple_of(GEMM_NR);
    let store_full = kb.b.create_block();
    let store_partial = kb.b.create_block();
    let done = kb.b.create_block();
    if partial {
        let is_full = kb.b.ins().icmp_imm_s(IntCC::SignedLessThan, panel, full_panels);
        kb.b.ins().brif(is_full, store_full, &[], store_partial, &[]);
    } else {
        kb.b.ins().jump(store_full, &[]);
    }

    kb.b.switch_to_block(store_full);
    for r in 0..rows {
        let c_ptr = c_pointer(kb, call, row, r, col0);
        kb.store(values[2 * r], c_ptr, 0);
        kb.store(values[2 * r + 1], c_ptr, 16);
    }
    kb.b.ins().jump(done, &[]);

    kb.b.switch_to_block(store_partial);
    if partial {
        for r in 0..rows {
            let c_ptr = c_pointer(kb, call, row, r, col0);
            for lane in 0..call.n % GEMM_NR {
                let x = kb.b.ins().extractlane(values[2 * r + lane / 4], (lane % 4) as u8);
                kb.store(x, c_ptr, (lane * 4) as i32);
            }
        }
    }
    kb.b.ins().jump(done, &[]);
    kb.b.switch_to_block(done);
}

fn c_pointer(kb: &mut Kb, call: &Call, row: Value, r: usize, col0: Value) -> Value {
    let row_r = kb.b.ins().iadd_imm_s(row, r as i64);
    let elem = kb.b.ins().imul_imm_s(row_r, call.n as i64);
    let elem = kb.b.ins().iadd(elem, col0);
    kb.offset(call.c, elem, 4)
}
