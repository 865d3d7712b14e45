//! Shape and type inference: the output facts of one operator, computed from
//! the facts of its operands.
//!
//! [`infer_op`] is the entry point. It assumes that every shape is concrete,
//! because the importer binds dynamic dimensions before inference runs. It
//! rejects operands and attributes that would make a kernel fail or leave its
//! result ambiguous: it checks operand counts, ranks, element types, broadcast
//! compatibility, attribute values and the data of operands that determine
//! the output shape.
//!
//! Operands whose data determines the output shape (the `shape` of Reshape,
//! the `repeats` of Tile, the bounds of Slice, the scalars of Range, ...) are
//! read from their fact's `konst`. When that data is unknown, inference fails
//! with an error that names the operand which has to be a compile-time constant.
//!
//! Output facts carry no constant data, except those of `Shape` and `Size`,
//! whose values follow from the input shape alone. Constant folding of other
//! operators is the job of the passes.
//!
//! Every output shape is limited to [`MAX_ELEMENTS`] elements, and all
//! arithmetic on dimensions is checked, so inference returns an error rather
//! than panicking or overflowing on any input.
//!
//! Messages name operands by position and ONNX role, as in
//! "operand 1 (weight)", and print shapes as `[1,3,224,224]`. They leave out
//! the node name, which [`OpError::at`] adds together with the operator.

mod conv;
mod elementwise;
mod generate;
mod indexing;
mod layout;
mod linalg;
mod norm;
mod quant;
mod reduce;
mod resize;

use std::fmt::Write as _;

use super::graph::Fact;
use super::op::Op;
use crate::error::{OpError, OpResult};
use crate::op_bail;
use crate::tensor::{DType, ShapeDisplay};

/// Maximum number of elements of one inferred tensor (2^40). Larger shapes
/// come from corrupt models or wrong `--input-shape` bindings. Even at one
/// byte per element, such a tensor would take more than 1 TiB.
pub const MAX_ELEMENTS: usize = 1 << 40;

/// Infers the output facts of `op` from the facts of its operands.
///
/// `inputs` lists the operands in ONNX order, with `None` for an absent
/// optional operand. The result has one fact per output of `op`. Only the
/// outputs of `Shape` and `Size` carry constant data.
pub fn infer_op(op: &Op, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
    check_arity(op, inputs)?;
    let operands = Operands { op, facts: inputs };

    let outputs = match op {
        Op::Input | Op::Constant => op_bail!(
            "graph inputs and constants have no shape rule, because their facts are set when the node is created"
        ),
        Op::Identity => elementwise::identity(&operands),
        Op::Unary(unary) => elementwise::unary(&operands, *unary),
        Op::Binary(binary) => elementwise::binary(&operands, *binary),
        Op::Where => elementwise::where_(&operands),
        Op::Clip => elementwise::clip(&operands),
        Op::HardSigmoid { .. } | Op::LeakyRelu { .. } | Op::Gelu { .. } => elementwise::float_activation(&operands),
        Op::Softmax { axis, .. } | Op::LogSoftmax { axis, .. } => elementwise::softmax(&operands, *axis),
        Op::Cast { to } => elementwise::cast(&operands, *to),
        Op::LayerNorm { axis, .. } => norm::layer_norm(&operands, *axis),
        Op::BatchNorm { .. } => norm::batch_norm(&operands),
        Op::MatMul => linalg::matmul(&operands),
        Op::Gemm { trans_a, trans_b, .. } => linalg::gemm(&operands, *trans_a, *trans_b),
        Op::Linear => linalg::linear(&operands),
        Op::Attention { heads, head_dim, .. } => linalg::attention(&operands, *heads, *head_dim),
        Op::Conv(attrs) => conv::conv(&operands, attrs),
        Op::ConvTranspose(attrs) => conv::conv_transpose(&operands, attrs),
        Op::Col2im(attrs) => conv::col2im(&operands, attrs),
        Op::Reshape { allowzero } => layout::reshape(&operands, *allowzero),
        Op::Transpose { perm } => layout::transpose(&operands, perm),
        Op::Flatten { axis } => layout::flatten(&operands, *axis),
        Op::Squeeze { axes } => layout::squeeze(&operands, axes.as_deref()),
        Op::Unsqueeze { axes } => layout::unsqueeze(&operands, axes),
        Op::Expand => layout::expand(&operands),
        Op::Tile => layout::tile(&operands),
        Op::Concat { axis } => indexing::concat(&operands, *axis),
        Op::Split { axis, sizes } => indexing::split(&operands, *axis, sizes),
        Op::Slice => indexing::slice(&operands),
        Op::Gather { axis } => indexing::gather(&operands, *axis),
        Op::Pad { mode } => indexing::pad(&operands, *mode),
        Op::Shape { start, end } => generate::shape(&operands, *start, *end),
        Op::Size => generate::size(&operands),
        Op::ConstantOfShape { value } => generate::constant_of_shape(&operands, value),
        Op::Range => generate::range(&operands),
        Op::Reduce { kind, axes, keepdims, noop_with_empty_axes } => {
            reduce::reduce(&operands, *kind, axes.as_deref(), *keepdims, *noop_with_empty_axes)
        }
        Op::ArgMax { axis, keepdims, .. } | Op::ArgMin { axis, keepdims, .. } => {
            reduce::arg_reduce(&operands, *axis, *keepdims)
        }
        Op::Resize(attrs) => resize::resize(&operands, attrs),
        Op::Quantize { scale, zero_point } => quant::quantize(&operands, *scale, *zero_point),
        Op::DynamicQuantize { per_token } => quant::dynamic_quantize(&operands, *per_token),
        Op::Dequantize { scale, .. } => quant::dequantize(&operands, *scale),
        Op::QLinear => quant::qlinear(&operands),
    }?;

    for (index, output) in outputs.iter().enumerate() {
        checked_numel(&output.shape).map_err(|e| prefix_error(e, &format!("output {index}")))?;
    }
    Ok(outputs)
}

/// Broadcasts two shapes with the multidirectional (NumPy) rule: shapes are
/// aligned at their last dimension, and each pair of dimensions must be equal
/// or contain a 1, which stretches to the other size.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> OpResult<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut shape = vec![0; rank];
    for i in 0..rank {
        // `i` counts from the last dimension, and missing leading dimensions count as 1.
        let da = if i < a.len() { a[a.len() - 1 - i] } else { 1 };
        let db = if i < b.len() { b[b.len() - 1 - i] } else { 1 };
        shape[rank - 1 - i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            op_bail!(
                "shapes {} and {} cannot be broadcast, because dimension {} from the end \
                 is {} in one and {} in the other and neither is 1",
                ShapeDisplay(a),
                ShapeDisplay(b),
                i + 1,
                da,
                db
            )
        };
    }
    Ok(shape)
}

/// Normalizes `axis` against a tensor of rank `rank`: a negative axis counts
/// from the end, and the valid range is `-rank..=rank-1`.
pub fn normalize_axis(axis: i64, rank: usize) -> OpResult<usize> {
    let signed_rank = i64::try_from(rank).map_err(|_| OpError::new(format!("rank {rank} is too large")))?;
    if rank == 0 {
        op_bail!("axis {axis} is invalid for a tensor of rank 0, which has no axes");
    }
    if axis < -signed_rank || axis >= signed_rank {
        op_bail!(
            "axis {axis} is out of range for a tensor of rank {rank}. Expected a value in {}..={}",
            -signed_rank,
            signed_rank - 1
        );
    }
    let normalized = if axis < 0 { axis + signed_rank } else { axis };
    Ok(normalized as usize)
}

// Helpers shared by the operator families.

/// The operands of one node, with their ONNX names for messages.
pub(super) struct Operands<'a> {
    op: &'a Op,
    facts: &'a [Option<&'a Fact>],
}

impl<'a> Operands<'a> {
    /// Number of operand slots, counting absent optional operands.
    pub(super) fn len(&self) -> usize {
        self.facts.len()
    }

    /// Returns the fact of operand `slot`, or `None` when it is absent.
    pub(super) fn get(&self, slot: usize) -> Option<&'a Fact> {
        self.facts.get(slot).copied().flatten()
    }

    /// Returns the fact of operand `slot`, or an error when it is absent.
    pub(super) fn required(&self, slot: usize) -> OpResult<&'a Fact> {
        match self.get(slot) {
            Some(fact) => Ok(fact),
            None => op_bail!("{} is missing, but it is required", self.label(slot)),
        }
    }

    /// Names operand `slot` for messages, as in "operand 1 (weight)".
    pub(super) fn label(&self, slot: usize) -> String {
        format!("operand {slot} ({})", operand_name(self.op, slot))
    }

    /// Reads the data of an integer operand that must be a 1-D compile-time
    /// constant, such as the target shape of Reshape or the pads of Pad.
    pub(super) fn const_ints(&self, slot: usize) -> OpResult<Vec<i64>> {
        let fact = self.required(slot)?;
        if !matches!(fact.dtype, DType::I64 | DType::I32) {
            op_bail!("{} has element type {}, but it must be i64 or i32", self.label(slot), fact.dtype);
        }
        if fact.rank() != 1 {
            op_bail!("{} has shape {}, but it must be 1-D", self.label(slot), ShapeDisplay(&fact.shape));
        }
        let Some(data) = &fact.konst else {
            op_bail!("{}", self.not_constant_message(slot));
        };
        Ok(data.to_i64_vec())
    }

    /// Formats the error message for an operand whose data is needed but unknown.
    pub(super) fn not_constant_message(&self, slot: usize) -> String {
        format!(
            "{} is not a compile-time constant, but its values determine the output shape. \
             If it is computed from input dimensions, bind them with --input-shape",
            self.label(slot)
        )
    }

    /// Checks that operand `slot` has the element type of operand `reference`.
    pub(super) fn require_same_dtype(&self, slot: usize, reference: usize) -> OpResult<()> {
        let fact = self.required(slot)?;
        let reference_fact = self.required(reference)?;
        if fact.dtype != reference_fact.dtype {
            op_bail!(
                "{} has element type {}, but {} has {}. Both must have the same element type",
                self.label(slot),
                fact.dtype,
                self.label(reference),
                reference_fact.dtype
            );
        }
        Ok(())
    }

    /// Checks that operand `slot` has a floating-point element type.
    pub(super) fn require_float(&self, slot: usize) -> OpResult<&'a Fact> {
        let fact = self.required(slot)?;
        if !fact.dtype.is_float() {
            op_bail!("{} has element type {}, but it must be f16, f32 or f64", self.label(slot), fact.dtype);
        }
        Ok(fact)
    }

    /// Checks that operand `slot` has a numeric (non-bool) element type.
    pub(super) fn require_numeric(&self, slot: usize) -> OpResult<&'a Fact> {
        let fact = self.required(slot)?;
        if fact.dtype == DType::Bool {
            op_bail!("{} has element type bool, but it must be a numeric type", self.label(slot));
        }
        Ok(fact)
    }

    /// Checks that operand `slot` has one of `allowed` element types.
    pub(super) fn require_dtype_in(&self, slot: usize, allowed: &[DType]) -> OpResult<&'a Fact> {
        let fact = self.required(slot)?;
        if !allowed.contains(&fact.dtype) {
            op_bail!("{} has element type {}, but it must be {}", self.label(slot), fact.dtype, list_dtypes(allowed));
        }
        Ok(fact)
    }
}

/// Returns the ONNX name of operand `slot` of `op`, in lower case.
fn operand_name(op: &Op, slot: usize) -> &'static str {
    let names: &[&str] = match op {
        Op::Binary(_) | Op::MatMul => &["a", "b"],
        Op::Where => &["condition", "x", "y"],
        Op::Clip => &["input", "min", "max"],
        Op::LayerNorm { .. } => &["x", "scale", "bias"],
        Op::BatchNorm { .. } => &["x", "scale", "bias", "mean", "var"],
        Op::Gemm { .. } => &["a", "b", "c"],
        Op::Linear | Op::Conv(_) | Op::ConvTranspose(_) => &["x", "weight", "bias"],
        Op::Attention { .. } => &["q", "k", "v"],
        Op::Col2im(_) => &["cols", "bias"],
        Op::Reshape { .. } => &["data", "shape"],
        Op::Expand => &["input", "shape"],
        Op::Tile => &["input", "repeats"],
        Op::Gather { .. } => &["data", "indices"],
        Op::Slice => &["data", "starts", "ends", "axes", "steps"],
        Op::Pad { .. } => &["data", "pads", "constant_value"],
        Op::ConstantOfShape { .. } => &["shape"],
        Op::Range => &["start", "limit", "delta"],
        Op::Resize(_) => &["x", "roi", "scales", "sizes"],
        Op::Shape { .. } | Op::Size => &["data"],
        Op::QLinear => &["x", "x_params", "weight", "weight_scale", "bias"],
        _ => &["input"],
    };
    names.get(slot).copied().unwrap_or("input")
}

fn check_arity(op: &Op, inputs: &[Option<&Fact>]) -> OpResult<()> {
    let (min, max) = op.arity();
    if inputs.len() < min || inputs.len() > max {
        let expected = if min == max {
            format!("{min}")
        } else if max == usize::MAX {
            format!("at least {min}")
        } else {
            format!("{min} to {max}")
        };
        let noun = if max == 1 { "operand" } else { "operands" };
        op_bail!("{} takes {expected} {noun}, but got {}", op.name(), inputs.len());
    }
    Ok(())
}

/// Returns the number of elements of `shape`, or an error when it exceeds
/// [`MAX_ELEMENTS`].
pub(super) fn checked_numel(shape: &[usize]) -> OpResult<usize> {
    let mut numel: usize = 1;
    for &dim in shape {
        numel = match numel.checked_mul(dim) {
            Some(product) if product <= MAX_ELEMENTS => product,
            _ => op_bail!("shape {} has more than 2^40 elements, the maximum size of one tensor", ShapeDisplay(shape)),
        };
    }
    Ok(numel)
}

/// Multiplies two dimensions, with an error instead of an overflow.
pub(super) fn checked_dim_mul(a: usize, b: usize) -> OpResult<usize> {
    match a.checked_mul(b) {
        Some(product) if product <= MAX_ELEMENTS => Ok(product),
        _ => op_bail!("dimension {a} * {b} exceeds 2^40, the maximum size of one tensor"),
    }
}

/// Converts a dimension computed in `i128` back to `usize`, naming `what` in
/// the error when it is negative or too large.
pub(super) fn dim_from_i128(value: i128, what: &str) -> OpResult<usize> {
    if value < 0 {
        op_bail!("{what} is {value}, but a dimension cannot be negative");
    }
    match usize::try_from(value) {
        Ok(dim) if dim <= MAX_ELEMENTS => Ok(dim),
        _ => op_bail!("{what} is {value}, which exceeds 2^40, the maximum size of one tensor"),
    }
}

/// Checks whether `from` broadcasts to `to` without changing `to`, as the
/// unidirectional broadcast of ONNX Gemm's C and LayerNorm's scale requires.
pub(super) fn broadcasts_to(from: &[usize], to: &[usize]) -> bool {
    if from.len() > to.len() {
        return false;
    }
    let offset = to.len() - from.len();
    from.iter().enumerate().all(|(i, &dim)| dim == 1 || dim == to[offset + i])
}

/// Rejects repeated entries in a list of already normalized axes.
pub(super) fn check_unique_axes(axes: &[usize], original: &[i64], rank: usize) -> OpResult<()> {
    for (i, axis) in axes.iter().enumerate() {
        if axes[..i].contains(axis) {
            op_bail!(
                "axes {} refer to axis {axis} more than once (after normalizing negative axes against rank {rank})",
                format_ints(original)
            );
        }
    }
    Ok(())
}

/// Prefixes an error message with its context, as in "operand 1 (b): ...".
pub(super) fn prefix_error(error: OpError, context: &str) -> OpError {
    OpError::new(format!("{context}: {}", error.message))
}

/// Formats signed values like a shape, as `[2,-1,0]`.
pub(super) fn format_ints(values: &[i64]) -> String {
    let mut text = String::from("[");
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        let _ = write!(text, "{value}");
    }
    text.push(']');
    text
}

fn list_dtypes(dtypes: &[DType]) -> String {
    let names: Vec<String> = dtypes.iter().map(|d| d.to_string()).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::from("no type"),
    }
}

/// Builders and assertions shared by the tests of the operator families.
#[cfg(test)]
pub(super) mod test_support {
    use std::sync::Arc;

    use super::infer_op;
    use crate::ir::graph::Fact;
    use crate::ir::op::Op;
    use crate::tensor::{DType, Tensor};

    pub fn fact(dtype: DType, shape: &[usize]) -> Option<Fact> {
        Some(Fact::new(dtype, shape.to_vec()))
    }

    pub fn f32s(shape: &[usize]) -> Option<Fact> {
        fact(DType::F32, shape)
    }

    /// Builds a 1-D i64 constant, the form of shape, axes and pads operands.
    pub fn ints(values: &[i64]) -> Option<Fact> {
        Some(Fact::of_tensor(Arc::new(Tensor::from_i64s(values))))
    }

    /// Builds a 1-D i64 operand of length `len` whose data is unknown.
    pub fn unknown_ints(len: usize) -> Option<Fact> {
        fact(DType::I64, &[len])
    }

    pub fn tensor(tensor: Tensor) -> Option<Fact> {
        Some(Fact::of_tensor(Arc::new(tensor)))
    }

    pub fn run(op: &Op, inputs: &[Option<Fact>]) -> Result<Vec<Fact>, String> {
        let refs: Vec<Option<&Fact>> = inputs.iter().map(|f| f.as_ref()).collect();
        infer_op(op, &refs).map_err(|e| e.message)
    }

    /// One case whose single output must have `shape`.
    pub struct ShapeCase {
        pub name: &'static str,
        pub op: Op,
        pub inputs: Vec<Option<Fact>>,
        pub shape: Vec<usize>,
    }

    /// One case that must fail with a message containing `message`.
    pub struct ErrorCase {
        pub name: &'static str,
        pub op: Op,
        pub inputs: Vec<Option<Fact>>,
        pub message: &'static str,
    }

    pub fn check_shapes(cases: &[ShapeCase]) {
        for case in cases {
            let result = run(&case.op, &case.inputs);
            assert!(result.is_ok(), "{}: inference failed: {:?}", case.name, result.err());
            let outputs = result.unwrap_or_default();
            assert_eq!(outputs.len(), 1, "{}: number of outputs", case.name);
            assert_eq!(outputs[0].shape, case.shape, "{}: output shape", case.name);
        }
    }

    pub fn check_errors(cases: &[ErrorCase]) {
        for case in cases {
            let result = run(&case.op, &case.inputs);
            assert!(result.is_err(), "{}: expected an error, got {:?}", case.name, result.ok());
            let message = result.err().unwrap_or_default();
            assert!(
                message.contains(case.message),
                "{}: message {message:?} does not contain {:?}",
                case.name,
                case.message
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{ErrorCase, check_errors, f32s, run};
    use super::*;

    #[test]
    fn broadcast_shapes_cases() {
        let cases: &[(&[usize], &[usize], &[usize])] = &[
            (&[2, 3], &[2, 3], &[2, 3]),
            (&[2, 3], &[3], &[2, 3]),
            (&[1, 3], &[4, 1], &[4, 3]),
            (&[5, 1, 7], &[3, 1], &[5, 3, 7]),
            (&[], &[4, 2], &[4, 2]),
            (&[0, 1], &[1, 5], &[0, 5]),
            (&[1], &[0], &[0]),
        ];
        for (a, b, expected) in cases {
            let result = broadcast_shapes(a, b);
            assert_eq!(result, Ok(expected.to_vec()), "{a:?} with {b:?}");
        }
    }

    #[test]
    fn broadcast_shapes_rejects_mismatch() {
        let result = broadcast_shapes(&[2, 3], &[4]);
        let message = result.err().map(|e| e.message).unwrap_or_default();
        assert!(message.contains("[2,3] and [4]"), "{message}");
        assert!(message.contains("3 in one and 4 in the other"), "{message}");
    }

    #[test]
    fn normalize_axis_cases() {
        assert_eq!(normalize_axis(0, 3), Ok(0));
        assert_eq!(normalize_axis(2, 3), Ok(2));
        assert_eq!(normalize_axis(-1, 3), Ok(2));
        assert_eq!(normalize_axis(-3, 3), Ok(0));
    }

    #[test]
    fn normalize_axis_rejects_out_of_range() {
        let too_large = normalize_axis(3, 3).err().map(|e| e.message).unwrap_or_default();
        assert!(too_large.contains("axis 3 is out of range for a tensor of rank 3"), "{too_large}");
        let too_small = normalize_axis(-4, 3).err().map(|e| e.message).unwrap_or_default();
        assert!(too_small.contains("-3..=2"), "{too_small}");
        let scalar = normalize_axis(0, 0).err().map(|e| e.message).unwrap_or_default();
        assert!(scalar.contains("rank 0"), "{scalar}");
        let extreme = normalize_axis(i64::MIN, 2);
        assert!(extreme.is_err(), "i64::MIN must be rejected");
    }

    #[test]
    fn checked_numel_limit() {
        assert_eq!(checked_numel(&[]), Ok(1));
        assert_eq!(checked_numel(&[2, 0, 3]), Ok(0));
        assert_eq!(checked_numel(&[1 << 20, 1 << 20]), Ok(MAX_ELEMENTS));
        assert!(checked_numel(&[1 << 20, 1 << 20, 2]).is_err(), "2^41 elements");
        assert!(checked_numel(&[usize::MAX, usize::MAX]).is_err(), "overflowing product");
    }

    #[test]
    fn arity_and_special_nodes() {
        check_errors(&[
            ErrorCase {
                name: "too many operands",
                op: Op::Identity,
                inputs: vec![f32s(&[1]), f32s(&[1])],
                message: "Identity takes 1 operand, but got 2",
            },
            ErrorCase {
                name: "too few operands",
                op: Op::MatMul,
                inputs: vec![f32s(&[1])],
                message: "MatMul takes 2 operands, but got 1",
            },
            ErrorCase {
                name: "range of operand counts",
                op: Op::Slice,
                inputs: vec![f32s(&[1])],
                message: "takes 3 to 5 operands",
            },
            ErrorCase {
                name: "concat without operands",
                op: Op::Concat { axis: 0 },
                inputs: vec![],
                message: "takes at least 1 operands",
            },
            ErrorCase {
                name: "missing required operand",
                op: Op::MatMul,
                inputs: vec![f32s(&[2, 2]), None],
                message: "operand 1 (b) is missing",
            },
            ErrorCase { name: "input node", op: Op::Input, inputs: vec![], message: "no shape rule" },
        ]);
    }

    #[test]
    fn output_size_limit() {
        // Each operand is within the limit, but the broadcast result is not.
        let result = run(&Op::Binary(crate::ir::op::BinaryOp::Add), &[f32s(&[1 << 21, 1]), f32s(&[1 << 21])]);
        let message = result.err().unwrap_or_default();
        assert!(message.contains("output 0"), "{message}");
        assert!(message.contains("more than 2^40 elements"), "{message}");
    }
}
