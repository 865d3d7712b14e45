//! Matrix products: MatMul, Gemm, and the canonical Linear and Attention.

use super::{Operands, broadcast_shapes, broadcasts_to, checked_dim_mul, prefix_error};
use crate::error::OpResult;
use crate::ir::graph::Fact;
use crate::op_bail;
use crate::tensor::{DType, ShapeDisplay};

/// Element types of ONNX MatMul and Gemm that the IR can represent. The
/// 8-bit types need MatMulInteger or QLinearMatMul instead.
const MATMUL_DTYPES: &[DType] = &[DType::F32, DType::F16, DType::F64, DType::I64, DType::I32];

/// MatMul with NumPy semantics: a 1-D `a` is promoted to `[1, k]` and a 1-D
/// `b` to `[k, 1]`, and the added dimension is removed from the result. The
/// batch dimensions (all but the last two) broadcast.
pub(super) fn matmul(operands: &Operands) -> OpResult<Vec<Fact>> {
    let a = operands.require_dtype_in(0, MATMUL_DTYPES)?;
    let b = operands.require_dtype_in(1, MATMUL_DTYPES)?;
    operands.require_same_dtype(1, 0)?;

    // Split each operand into batch dimensions and its matrix dimensions.
    let (a_batch, rows, a_inner) = match a.shape.as_slice() {
        [] => op_bail!("operand 0 (a) is a scalar, but MatMul needs operands of rank 1 or more"),
        [k] => (&[][..], None, *k),
        [batch @ .., m, k] => (batch, Some(*m), *k),
    };
    let (b_batch, b_inner, columns) = match b.shape.as_slice() {
        [] => op_bail!("operand 1 (b) is a scalar, but MatMul needs operands of rank 1 or more"),
        [k] => (&[][..], *k, None),
        [batch @ .., k, n] => (batch, *k, Some(*n)),
    };
    if a_inner != b_inner {
        op_bail!(
            "the inner dimensions differ: operand 0 (a) {} has {a_inner} columns, \
             but operand 1 (b) {} has {b_inner} rows",
            ShapeDisplay(&a.shape),
            ShapeDisplay(&b.shape)
        );
    }

    let mut shape = broadcast_shapes(a_batch, b_batch).map_err(|e| {
        let context = format!(
            "batch dimensions of operand 0 (a) {} and operand 1 (b) {}",
            ShapeDisplay(&a.shape),
            ShapeDisplay(&b.shape)
        );
        prefix_error(e, &context)
    })?;
    shape.extend(rows);
    shape.extend(columns);
    Ok(vec![Fact::new(a.dtype, shape)])
}

/// Gemm: `a'` is `[M, K]`, `b'` is `[K, N]` after the optional transposes,
/// and `c` broadcasts unidirectionally to `[M, N]`.
pub(super) fn gemm(operands: &Operands, trans_a: bool, trans_b: bool) -> OpResult<Vec<Fact>> {
    let a = operands.require_dtype_in(0, MATMUL_DTYPES)?;
    let b = operands.required(1)?;
    operands.require_same_dtype(1, 0)?;
    for slot in 0..2 {
        let fact = operands.required(slot)?;
        if fact.rank() != 2 {
            op_bail!("{} has shape {}, but Gemm needs a 2-D matrix", operands.label(slot), ShapeDisplay(&fact.shape));
        }
    }

    let (m, a_inner) = if trans_a { (a.shape[1], a.shape[0]) } else { (a.shape[0], a.shape[1]) };
    let (b_inner, n) = if trans_b { (b.shape[1], b.shape[0]) } else { (b.shape[0], b.shape[1]) };
    if a_inner != b_inner {
        op_bail!(
            "the inner dimensions differ: operand 0 (a) {} with trans_a={trans_a} has {a_inner} columns, \
             but operand 1 (b) {} with trans_b={trans_b} has {b_inner} rows",
            ShapeDisplay(&a.shape),
            ShapeDisplay(&b.shape)
        );
    }

    if let Some(c) = operands.get(2) {
        operands.require_same_dtype(2, 0)?;
        if !broadcasts_to(&c.shape, &[m, n]) {
            op_bail!(
                "operand 2 (c) has shape {}, which does not broadcast to the result shape [{m},{n}]",
                ShapeDisplay(&c.shape)
            );
        }
    }
    Ok(vec![Fact::new(a.dtype, vec![m, n])])
}

/// Linear: `x` is `[.., in]`, `weight` is `[out, in]`, `bias` is `[out]`.
pub(super) fn linear(operands: &Operands) -> OpResult<Vec<Fact>> {
    let x = operands.require_float(0)?;
    let weight = operands.required(1)?;
    operands.require_same_dtype(1, 0)?;
    let Some((&in_features, batch)) = x.shape.split_last() else {
        op_bail!("operand 0 (x) is a scalar, but Linear needs an input of shape [.., in_features]");
    };
    let [out_features, weight_in] = weight.shape[..] else {
        op_bail!(
            "operand 1 (weight) has shape {}, but Linear needs a 2-D weight [out_features, in_features]",
            ShapeDisplay(&weight.shape)
        );
    };
    if weight_in != in_features {
        op_bail!(
            "operand 1 (weight) has shape {}, but operand 0 (x) {} has {in_features} input features. \
             Expected a weight of shape [{out_features},{in_features}]",
            ShapeDisplay(&weight.shape),
            ShapeDisplay(&x.shape)
        );
    }

    if let Some(bias) = operands.get(2) {
        operands.require_same_dtype(2, 0)?;
        if bias.shape != [out_features] {
            op_bail!(
                "operand 2 (bias) has shape {}, but expected [{out_features}] \
                 to match the output features of the weight",
                ShapeDisplay(&bias.shape)
            );
        }
    }

    let mut shape = batch.to_vec();
    shape.push(out_features);
    Ok(vec![Fact::new(x.dtype, shape)])
}

/// Attention: `q`, `k` and `v` share one shape `[batch, tokens, heads * head_dim]`.
pub(super) fn attention(operands: &Operands, heads: usize, head_dim: usize) -> OpResult<Vec<Fact>> {
    let q = operands.require_float(0)?;
    if heads == 0 || head_dim == 0 {
        op_bail!("heads={heads} and head_dim={head_dim} must both be at least 1");
    }
    if q.rank() != 3 {
        op_bail!(
            "operand 0 (q) has shape {}, but Attention needs [batch, tokens, heads * head_dim]",
            ShapeDisplay(&q.shape)
        );
    }
    let hidden = checked_dim_mul(heads, head_dim)?;
    if q.shape[2] != hidden {
        op_bail!(
            "operand 0 (q) has shape {}, but its last dimension must be \
             heads * head_dim = {heads} * {head_dim} = {hidden}",
            ShapeDisplay(&q.shape)
        );
    }
    for slot in 1..3 {
        let other = operands.required(slot)?;
        operands.require_same_dtype(slot, 0)?;
        if other.shape != q.shape {
            op_bail!(
                "{} has shape {}, but operand 0 (q) has {}. Attention needs q, k and v of the same shape",
                operands.label(slot),
                ShapeDisplay(&other.shape),
                ShapeDisplay(&q.shape)
            );
        }
    }
    Ok(vec![Fact::new(q.dtype, q.shape.clone())])
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{ErrorCase, ShapeCase, check_errors, check_shapes, f32s, fact};
    use crate::ir::op::Op;
    use crate::tensor::DType;

    fn gemm(trans_a: bool, trans_b: bool) -> Op {
        Op::Gemm { alpha: 1.0, beta: 1.0, trans_a, trans_b }
    }

    fn attention(heads: usize, head_dim: usize) -> Op {
        Op::Attention { heads, head_dim, scale: 0.125 }
    }

    #[test]
    fn matmul_shapes() {
        check_shapes(&[
            ShapeCase { name: "2-D", op: Op::MatMul, inputs: vec![f32s(&[2, 3]), f32s(&[3, 4])], shape: vec![2, 4] },
            ShapeCase {
                name: "batched with shared weight",
                op: Op::MatMul,
                inputs: vec![f32s(&[1, 197, 768]), f32s(&[768, 2304])],
                shape: vec![1, 197, 2304],
            },
            ShapeCase {
                name: "batch broadcast",
                op: Op::MatMul,
                inputs: vec![f32s(&[2, 1, 5, 3]), f32s(&[4, 3, 6])],
                shape: vec![2, 4, 5, 6],
            },
            ShapeCase {
                name: "attention scores",
                op: Op::MatMul,
                inputs: vec![f32s(&[1, 12, 197, 64]), f32s(&[1, 12, 64, 197])],
                shape: vec![1, 12, 197, 197],
            },
            ShapeCase {
                name: "vector times vector",
                op: Op::MatMul,
                inputs: vec![f32s(&[3]), f32s(&[3])],
                shape: vec![],
            },
            ShapeCase {
                name: "vector times batch",
                op: Op::MatMul,
                inputs: vec![f32s(&[3]), f32s(&[2, 3, 4])],
                shape: vec![2, 4],
            },
            ShapeCase {
                name: "batch times vector",
                op: Op::MatMul,
                inputs: vec![f32s(&[2, 5, 3]), f32s(&[3])],
                shape: vec![2, 5],
            },
            ShapeCase {
                name: "integer",
                op: Op::MatMul,
                inputs: vec![fact(DType::I64, &[2, 3]), fact(DType::I64, &[3, 1])],
                shape: vec![2, 1],
            },
        ]);
    }

    #[test]
    fn gemm_and_linear_shapes() {
        check_shapes(&[
            ShapeCase {
                name: "gemm plain",
                op: gemm(false, false),
                inputs: vec![f32s(&[2, 3]), f32s(&[3, 4])],
                shape: vec![2, 4],
            },
            ShapeCase {
                name: "gemm trans_b with bias",
                op: gemm(false, true),
                inputs: vec![f32s(&[1, 768]), f32s(&[1000, 768]), f32s(&[1000])],
                shape: vec![1, 1000],
            },
            ShapeCase {
                name: "gemm trans_a",
                op: gemm(true, false),
                inputs: vec![f32s(&[3, 2]), f32s(&[3, 4]), f32s(&[2, 1])],
                shape: vec![2, 4],
            },
            ShapeCase {
                name: "gemm scalar c",
                op: gemm(true, true),
                inputs: vec![f32s(&[3, 2]), f32s(&[4, 3]), f32s(&[])],
                shape: vec![2, 4],
            },
            ShapeCase {
                name: "linear 3-D",
                op: Op::Linear,
                inputs: vec![f32s(&[1, 197, 768]), f32s(&[3072, 768]), f32s(&[3072])],
                shape: vec![1, 197, 3072],
            },
            ShapeCase {
                name: "linear 1-D without bias",
                op: Op::Linear,
                inputs: vec![f32s(&[768]), f32s(&[10, 768]), None],
                shape: vec![10],
            },
            ShapeCase {
                name: "attention",
                op: attention(12, 64),
                inputs: vec![f32s(&[1, 197, 768]), f32s(&[1, 197, 768]), f32s(&[1, 197, 768])],
                shape: vec![1, 197, 768],
            },
        ]);
    }

    #[test]
    fn matmul_errors() {
        check_errors(&[
            ErrorCase {
                name: "inner dim mismatch",
                op: Op::MatMul,
                inputs: vec![f32s(&[2, 3]), f32s(&[4, 5])],
                message: "the inner dimensions differ: operand 0 (a) [2,3] has 3 columns, but operand 1 (b) [4,5] has 4 rows",
            },
            ErrorCase {
                name: "vector inner mismatch",
                op: Op::MatMul,
                inputs: vec![f32s(&[3]), f32s(&[4])],
                message: "has 3 columns, but operand 1 (b) [4] has 4 rows",
            },
            ErrorCase {
                name: "batch mismatch",
                op: Op::MatMul,
                inputs: vec![f32s(&[2, 5, 3]), f32s(&[4, 3, 6])],
                message: "batch dimensions of operand 0 (a) [2,5,3] and operand 1 (b) [4,3,6]",
            },
            ErrorCase {
                name: "scalar operand",
                op: Op::MatMul,
                inputs: vec![f32s(&[]), f32s(&[3])],
                message: "operand 0 (a) is a scalar",
            },
            ErrorCase {
                name: "dtype mismatch",
                op: Op::MatMul,
                inputs: vec![f32s(&[2, 3]), fact(DType::F16, &[3, 4])],
                message: "operand 1 (b) has element type f16, but operand 0 (a) has f32",
            },
            ErrorCase {
                name: "int8",
                op: Op::MatMul,
                inputs: vec![fact(DType::I8, &[2, 3]), fact(DType::I8, &[3, 4])],
                message: "operand 0 (a) has element type i8",
            },
            ErrorCase {
                name: "bool",
                op: Op::MatMul,
                inputs: vec![f32s(&[2, 3]), fact(DType::Bool, &[3, 4])],
                message: "operand 1 (b) has element type bool",
            },
        ]);
    }

    #[test]
    fn gemm_linear_attention_errors() {
        check_errors(&[
            ErrorCase {
                name: "gemm inner mismatch",
                op: gemm(false, true),
                inputs: vec![f32s(&[1, 768]), f32s(&[768, 1000])],
                message: "with trans_b=true has 1000 rows",
            },
            ErrorCase {
                name: "gemm 3-D a",
                op: gemm(false, false),
                inputs: vec![f32s(&[1, 2, 3]), f32s(&[3, 4])],
                message: "operand 0 (a) has shape [1,2,3], but Gemm needs a 2-D matrix",
            },
            ErrorCase {
                name: "gemm 1-D b",
                op: gemm(false, false),
                inputs: vec![f32s(&[2, 3]), f32s(&[3])],
                message: "operand 1 (b) has shape [3], but Gemm needs a 2-D matrix",
            },
            ErrorCase {
                name: "gemm c does not broadcast",
                op: gemm(false, false),
                inputs: vec![f32s(&[2, 3]), f32s(&[3, 4]), f32s(&[3])],
                message: "operand 2 (c) has shape [3], which does not broadcast to the result shape [2,4]",
            },
            ErrorCase {
                name: "gemm c of higher rank",
                op: gemm(false, false),
                inputs: vec![f32s(&[2, 3]), f32s(&[3, 4]), f32s(&[1, 2, 4])],
                message: "does not broadcast",
            },
            ErrorCase {
                name: "gemm c dtype",
                op: gemm(false, false),
                inputs: vec![f32s(&[2, 3]), f32s(&[3, 4]), fact(DType::F64, &[4])],
                message: "operand 2 (c) has element type f64",
            },
            ErrorCase {
                name: "linear in features",
                op: Op::Linear,
                inputs: vec![f32s(&[1, 197, 768]), f32s(&[3072, 512])],
                message: "operand 1 (weight) has shape [3072,512], but operand 0 (x) [1,197,768] has 768 input features",
            },
            ErrorCase {
                name: "linear weight rank",
                op: Op::Linear,
                inputs: vec![f32s(&[1, 768]), f32s(&[768])],
                message: "needs a 2-D weight",
            },
            ErrorCase {
                name: "linear bias shape",
                op: Op::Linear,
                inputs: vec![f32s(&[1, 768]), f32s(&[10, 768]), f32s(&[768])],
                message: "operand 2 (bias) has shape [768], but expected [10]",
            },
            ErrorCase {
                name: "linear scalar x",
                op: Op::Linear,
                inputs: vec![f32s(&[]), f32s(&[10, 1])],
                message: "operand 0 (x) is a scalar",
            },
            ErrorCase {
                name: "linear of ints",
                op: Op::Linear,
                inputs: vec![fact(DType::I64, &[1, 2]), fact(DType::I64, &[3, 2])],
                message: "must be f16, f32 or f64",
            },
            ErrorCase {
                name: "attention hidden size",
                op: attention(12, 32),
                inputs: vec![f32s(&[1, 197, 768]), f32s(&[1, 197, 768]), f32s(&[1, 197, 768])],
                message: "its last dimension must be heads * head_dim = 12 * 32 = 384",
            },
            ErrorCase {
                name: "attention rank",
                op: attention(12, 64),
                inputs: vec![f32s(&[197, 768]), f32s(&[197, 768]), f32s(&[197, 768])],
                message: "operand 0 (q) has shape [197,768]",
            },
            ErrorCase {
                name: "attention k shape",
                op: attention(12, 64),
                inputs: vec![f32s(&[1, 197, 768]), f32s(&[1, 50, 768]), f32s(&[1, 197, 768])],
                message: "operand 1 (k) has shape [1,50,768], but operand 0 (q) has [1,197,768]",
            },
            ErrorCase {
                name: "attention v dtype",
                op: attention(12, 64),
                inputs: vec![f32s(&[1, 197, 768]), f32s(&[1, 197, 768]), fact(DType::F16, &[1, 197, 768])],
                message: "operand 2 (v) has element type f16",
            },
            ErrorCase {
                name: "attention zero heads",
                op: attention(0, 64),
                inputs: vec![f32s(&[1, 197, 768]), f32s(&[1, 197, 768]), f32s(&[1, 197, 768])],
                message: "must both be at least 1",
            },
            ErrorCase {
                name: "attention head overflow",
                op: attention(usize::MAX, 2),
                inputs: vec![f32s(&[1, 197, 768]), f32s(&[1, 197, 768]), f32s(&[1, 197, 768])],
                message: "exceeds 2^40",
            },
        ]);
    }
}
