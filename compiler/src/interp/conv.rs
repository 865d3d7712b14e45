//! `Conv` and `ConvTranspose` over any number of spatial dimensions
//! (1-D and 2-D in ViT models), with groups, strides, dilations and
//! explicit pads.
//!
//! Both are a GEMM plus a gather or scatter, per batch item and group:
//!
//! - `Conv` copies input patches into a column matrix `[C/g * prod(k), P]`
//!   (im2col, zeros for padding), then multiplies the group's weights
//!   `[M/g, C/g * prod(k)]` by it. A patch-embedding conv with
//!   stride == kernel makes im2col a plain permutation of the input.
//! - `ConvTranspose` multiplies the transposed weights `[M/g * prod(k), C/g]`
//!   by the input `[C/g, P]` and adds each column entry into the output
//!   position it touches (col2im).
//!
//! In both directions a tap (kernel offset `k`, position `p` in the
//! iterated space) meets position `p * stride - pad_begin + k * dilation`
//! of the other space, per dimension; [`TapGeometry`] tabulates that map.

use ndarray::{Array2, ArrayD, ArrayView2, ArrayViewD, Axis};

use super::common::{Real, array_from_vec, expect_dtype, float_kernel};
use super::matmul::GemmScalar;
use crate::error::{OpError, OpResult};
use crate::ir::op::{ConvAttrs, ConvTransposeAttrs};
use crate::op_bail;
use crate::tensor::Tensor;

/// Spatial attributes checked against the operands, with defaults filled in.
struct Window {
    kernel: Vec<usize>,
    strides: Vec<usize>,
    pads_begin: Vec<usize>,
    pads_end: Vec<usize>,
    dilations: Vec<usize>,
}

impl Window {
    fn new(op: &str, kernel_shape: &[usize], attrs: (&[usize], &[usize], &[usize], &[usize])) -> OpResult<Window> {
        let (kernel, strides, pads, dilations) = attrs;
        let rank = kernel_shape.len();
        if !kernel.is_empty() && kernel != kernel_shape {
            op_bail!("{op} attribute kernel {kernel:?} does not match the weight's spatial shape {kernel_shape:?}");
        }
        let per_dim = |values: &[usize], name: &str| -> OpResult<Vec<usize>> {
            match values.len() {
                0 => Ok(vec![1; rank]),
                n if n == rank => Ok(values.to_vec()),
                n => op_bail!("{op} attribute {name} has {n} values, expected {rank} (one per spatial dimension)"),
            }
        };
        let strides = per_dim(strides, "strides")?;
        let dilations = per_dim(dilations, "dilations")?;
        if strides.contains(&0) || dilations.contains(&0) {
            op_bail!("{op} strides {strides:?} and dilations {dilations:?} must all be positive");
        }
        let pads = match pads.len() {
            0 => vec![0; 2 * rank],
            n if n == 2 * rank => pads.to_vec(),
            n => op_bail!("{op} attribute pads has {n} values, expected {} ([begin..., end...])", 2 * rank),
        };
        Ok(Window {
            kernel: kernel_shape.to_vec(),
            strides,
            pads_begin: pads[..rank].to_vec(),
            pads_end: pads[rank..].to_vec(),
            dilations,
        })
    }

    /// Extent of the dilated kernel along dimension `d`.
    fn dilated_kernel(&self, d: usize) -> usize {
        (self.kernel[d].saturating_sub(1)) * self.dilations[d] + 1
    }
}

/// For each spatial dimension, the position in the target space that each
/// (kernel offset, iterated position) pair reaches, or `None` when it
/// falls into the padding.
struct TapGeometry {
    iterated: Vec<usize>,
    target: Vec<usize>,
    kernel: Vec<usize>,
    /// `tables[d][k * iterated[d] + p]`.
    tables: Vec<Vec<Option<usize>>>,
    target_strides: Vec<usize>,
}

impl TapGeometry {
    fn new(window: &Window, iterated: &[usize], target: &[usize]) -> TapGeometry {
        let rank = iterated.len();
        let tables = (0..rank)
            .map(|d| {
                let mut table = Vec::with_capacity(window.kernel[d] * iterated[d]);
                for k in 0..window.kernel[d] {
                    for p in 0..iterated[d] {
                        let position =
                            (p * window.strides[d] + k * window.dilations[d]) as i64 - window.pads_begin[d] as i64;
                        let valid = position >= 0 && (position as usize) < target[d];
                        table.push(valid.then_some(position as usize));
                    }
                }
                table
            })
            .collect();
        let mut target_strides = vec![1; rank];
        for d in (0..rank.saturating_sub(1)).rev() {
            target_strides[d] = target_strides[d + 1] * target[d + 1];
        }
        TapGeometry {
            iterated: iterated.to_vec(),
            target: target.to_vec(),
            kernel: window.kernel.clone(),
            tables,
            target_strides,
        }
    }

    fn kernel_len(&self) -> usize {
        self.kernel.iter().product()
    }

    fn iterated_len(&self) -> usize {
        self.iterated.iter().product()
    }

    fn target_len(&self) -> usize {
        self.target.iter().product()
    }

    /// Calls `f(p, target)` for every flat iterated position `p` with the
    /// flat target position reached through kernel offset `kernel_index`.
    fn visit(&self, kernel_index: &[usize], mut f: impl FnMut(usize, Option<usize>)) {
        let rank = self.iterated.len();
        let last = rank - 1;
        let inner = self.iterated[last];
        let inner_table = &self.tables[last][kernel_index[last] * inner..(kernel_index[last] + 1) * inner];
        let outer_len: usize = self.iterated[..last].iter().product();
        let mut outer_index = vec![0usize; last];
        for outer in 0..outer_len {
            let base = (0..last).try_fold(0usize, |acc, d| {
                self.tables[d][kernel_index[d] * self.iterated[d] + outer_index[d]]
                    .map(|t| acc + t * self.target_strides[d])
            });
            let start = outer * inner;
            for (o, tap) in inner_table.iter().enumerate() {
                f(start + o, base.and_then(|b| tap.map(|t| b + t)));
            }
            advance(&mut outer_index, &self.iterated[..last]);
        }
    }
}

/// Steps a row-major multi-index within `shape`, wrapping to all zeros.
fn advance(index: &mut [usize], shape: &[usize]) {
    for d in (0..index.len()).rev() {
        index[d] += 1;
        if index[d] < shape[d] {
            return;
        }
        index[d] = 0;
    }
}

/// Checks the shapes both operators share and returns `(batch, channels, spatial)`.
fn split_input<'a>(op: &str, x: &'a [usize], w: &[usize]) -> OpResult<(usize, usize, &'a [usize])> {
    if x.len() < 3 {
        op_bail!("{op} input must be [N, C, spatial...] with at least one spatial dimension, got shape {x:?}");
    }
    if w.len() != x.len() {
        op_bail!("{op} weight of shape {w:?} must have the input's rank {} ([channels, channels, kernel...])", x.len());
    }
    Ok((x[0], x[1], &x[2..]))
}

// Conv.

/// `Conv(x, w, b?)`: `x` is `[N, C, spatial...]`, `w` is `[M, C/group, kernel...]`.
pub(crate) fn conv(x: &Tensor, w: &Tensor, b: Option<&Tensor>, attrs: &ConvAttrs) -> OpResult<Tensor> {
    expect_dtype(w, x.dtype(), "Conv weight")?;
    if let Some(b) = b {
        expect_dtype(b, x.dtype(), "Conv bias")?;
    }
    float_kernel!(x, "Conv input", |xv: T| {
        let wv = T::view_of(w, "Conv weight")?;
        let bv = b.map(|b| T::view_of(b, "Conv bias")).transpose()?;
        conv_typed::<T>(xv.view(), wv.view(), bv.as_ref().map(|b| b.view()), attrs)?
    })
}

fn conv_typed<T: Real + GemmScalar>(
    x: ArrayViewD<'_, T>,
    w: ArrayViewD<'_, T>,
    b: Option<ArrayViewD<'_, T>>,
    attrs: &ConvAttrs,
) -> OpResult<ArrayD<T>> {
    let (batch, channels, input) = split_input("Conv", x.shape(), w.shape())?;
    let (out_channels, group_channels) = (w.shape()[0], w.shape()[1]);
    let group = attrs.group;
    if group == 0 || channels % group != 0 || out_channels % group != 0 || channels / group != group_channels {
        op_bail!(
            "Conv with group {group}: input channels {channels} and output channels {out_channels} must divide by the group count, and the weight's dimension 1 ({group_channels}) must equal input channels / group"
        );
    }
    check_bias("Conv", b.as_ref(), out_channels)?;
    let window = Window::new("Conv", &w.shape()[2..], (&attrs.kernel, &attrs.strides, &attrs.pads, &attrs.dilations))?;

    // Output size per dimension: floor((in + pads - dilated kernel) / stride) + 1.
    let mut output = Vec::with_capacity(input.len());
    for (d, &size) in input.iter().enumerate() {
        let padded = size + window.pads_begin[d] + window.pads_end[d];
        let extent = window.dilated_kernel(d);
        if padded < extent {
            op_bail!(
                "Conv: the dilated kernel ({extent}) is larger than the padded input ({padded}) along spatial dimension {d}"
            );
        }
        output.push((padded - extent) / window.strides[d] + 1);
    }
    let geometry = TapGeometry::new(&window, &output, input);

    // One GEMM per batch item and group.
    let x = x.as_standard_layout();
    let w = w.as_standard_layout();
    let (kernel_len, positions, plane) = (geometry.kernel_len(), geometry.iterated_len(), geometry.target_len());
    let out_per_group = out_channels / group;
    let weights = w.view().into_shape_with_order((out_channels, group_channels * kernel_len)).map_err(internal)?;
    let x_data = x.as_slice().expect("standard layout is contiguous");
    let mut y = Array2::<T>::zeros((batch * out_channels, positions));
    let mut columns = Array2::<T>::zeros((group_channels * kernel_len, positions));
    for n in 0..batch {
        for g in 0..group {
            let first_channel = n * channels + g * group_channels;
            im2col(&geometry, &x_data[first_channel * plane..(first_channel + group_channels) * plane], &mut columns);
            let w_group = weights.slice(ndarray::s![g * out_per_group..(g + 1) * out_per_group, ..]);
            let first_row = n * out_channels + g * out_per_group;
            let mut y_group = y.slice_mut(ndarray::s![first_row..first_row + out_per_group, ..]);
            T::gemm(T::one(), &w_group, &columns.view(), T::zero(), &mut y_group);
        }
    }

    add_bias(&mut y, b.as_ref(), out_channels)?;
    let shape = [&[batch, out_channels][..], &output].concat();
    array_from_vec(&shape, y.into_raw_vec_and_offset().0)
}

/// Fills `columns[c * prod(k) + kernel offset, p]` from the channel planes in `planes`.
fn im2col<T: Real>(geometry: &TapGeometry, planes: &[T], columns: &mut Array2<T>) {
    let kernel_len = geometry.kernel_len();
    let plane_len = geometry.target_len();
    let mut kernel_index = vec![0usize; geometry.kernel.len()];
    for k in 0..kernel_len {
        for (c, plane) in planes.chunks(plane_len.max(1)).enumerate() {
            let mut row = columns.row_mut(c * kernel_len + k);
            let row = row.as_slice_mut().expect("rows of a standard matrix are contiguous");
            geometry.visit(&kernel_index, |p, source| row[p] = source.map_or(T::zero(), |s| plane[s]));
        }
        advance(&mut kernel_index, &geometry.kernel);
    }
}

fn check_bias<T>(op: &str, b: Option<&ArrayViewD<'_, T>>, out_channels: usize) -> OpResult<()> {
    if let Some(b) = b
        && (b.ndim() != 1 || b.len() != out_channels)
    {
        op_bail!(
            "{op} bias must be 1-D with {out_channels} elements (one per output channel), got shape {:?}",
            b.shape()
        );
    }
    Ok(())
}

/// Adds `b[m]` to every row `n * out_channels + m` of `y`.
fn add_bias<T: Real>(y: &mut Array2<T>, b: Option<&ArrayViewD<'_, T>>, out_channels: usize) -> OpResult<()> {
    if let Some(b) = b {
        for (r, mut row) in y.axis_iter_mut(Axis(0)).enumerate() {
            let bias = b[r % out_channels];
            row.mapv_inplace(|v| v + bias);
        }
    }
    Ok(())
}

fn internal(e: ndarray::ShapeError) -> OpError {
    OpError::new(format!("internal error: {e}"))
}

// ConvTranspose.

/// `ConvTranspose(x, w, b?)`: `x` is `[N, C, spatial...]`, `w` is
/// `[C, M/group, kernel...]`. Output size per dimension is
/// `stride * (in - 1) + output_padding + (kernel - 1) * dilation + 1 - pad_begin - pad_end`.
pub(crate) fn conv_transpose(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    attrs: &ConvTransposeAttrs,
) -> OpResult<Tensor> {
    expect_dtype(w, x.dtype(), "ConvTranspose weight")?;
    if let Some(b) = b {
        expect_dtype(b, x.dtype(), "ConvTranspose bias")?;
    }
    float_kernel!(x, "ConvTranspose input", |xv: T| {
        let wv = T::view_of(w, "ConvTranspose weight")?;
        let bv = b.map(|b| T::view_of(b, "ConvTranspose bias")).transpose()?;
        conv_transpose_typed::<T>(xv.view(), wv.view(), bv.as_ref().map(|b| b.view()), attrs)?
    })
}

fn conv_transpose_typed<T: Real + GemmScalar>(
    x: ArrayViewD<'_, T>,
    w: ArrayViewD<'_, T>,
    b: Option<ArrayViewD<'_, T>>,
    attrs: &ConvTransposeAttrs,
) -> OpResult<ArrayD<T>> {
    let (batch, channels, input) = split_input("ConvTranspose", x.shape(), w.shape())?;
    let group = attrs.group;
    let out_per_group = w.shape()[1];
    if group == 0 || channels % group != 0 || w.shape()[0] != channels {
        op_bail!(
            "ConvTranspose with group {group}: the weight's dimension 0 ({}) must equal the input channels ({channels}), which must divide by the group count",
            w.shape()[0]
        );
    }
    let out_channels = out_per_group * group;
    check_bias("ConvTranspose", b.as_ref(), out_channels)?;
    let window =
        Window::new("ConvTranspose", &w.shape()[2..], (&attrs.kernel, &attrs.strides, &attrs.pads, &attrs.dilations))?;
    let output = transposed_output_size(&window, input, &attrs.output_padding)?;
    let geometry = TapGeometry::new(&window, input, &output);

    // One GEMM and one col2im per batch item and group.
    let x = x.as_standard_layout();
    let w = w.as_standard_layout();
    let in_per_group = channels / group;
    let (kernel_len, positions, plane) = (geometry.kernel_len(), geometry.iterated_len(), geometry.target_len());
    let x2 = x.view().into_shape_with_order((batch * channels, positions)).map_err(internal)?;
    let weights = w.view().into_shape_with_order((channels, out_per_group * kernel_len)).map_err(internal)?;
    let mut y = Array2::<T>::zeros((batch * out_channels, plane));
    let mut columns = Array2::<T>::zeros((out_per_group * kernel_len, positions));
    for n in 0..batch {
        for g in 0..group {
            let w_group = weights.slice(ndarray::s![g * in_per_group..(g + 1) * in_per_group, ..]);
            let first_channel = n * channels + g * in_per_group;
            let x_group = x2.slice(ndarray::s![first_channel..first_channel + in_per_group, ..]);
            T::gemm(T::one(), &w_group.t(), &x_group, T::zero(), &mut columns.view_mut());
            let first_row = n * out_channels + g * out_per_group;
            col2im(&geometry, &columns.view(), &mut y, first_row, out_per_group);
        }
    }

    add_bias(&mut y, b.as_ref(), out_channels)?;
    let shape = [&[batch, out_channels][..], &output].concat();
    array_from_vec(&shape, y.into_raw_vec_and_offset().0)
}

/// `Col2im(cols, b?)`: `cols` is `[N, spatial.., M * prod(kernel)]`, the
/// pixel-major product of a ConvTranspose's input with its weights. The
/// result is the ConvTranspose's output `[N, M, out spatial..]`.
pub(crate) fn col2im_op(cols: &Tensor, b: Option<&Tensor>, attrs: &ConvTransposeAttrs) -> OpResult<Tensor> {
    if let Some(b) = b {
        expect_dtype(b, cols.dtype(), "Col2im bias")?;
    }
    float_kernel!(cols, "Col2im input", |cv: T| {
        let bv = b.map(|b| T::view_of(b, "Col2im bias")).transpose()?;
        col2im_typed::<T>(cv.view(), bv.as_ref().map(|b| b.view()), attrs)?
    })
}

fn col2im_typed<T: Real>(cols: ArrayViewD<'_, T>, b: Option<ArrayViewD<'_, T>>, attrs: &ConvTransposeAttrs) -> OpResult<ArrayD<T>> {
    let shape = cols.shape();
    if shape.len() < 3 || attrs.group != 1 {
        op_bail!("Col2im input must be [N, spatial..., M * prod(kernel)] with group 1, got shape {shape:?} and group {}", attrs.group);
    }
    let (batch, input, columns) = (shape[0], &shape[1..shape.len() - 1], shape[shape.len() - 1]);
    let kernel_len: usize = attrs.kernel.iter().product();
    if attrs.kernel.len() != input.len() || kernel_len == 0 || columns % kernel_len != 0 {
        op_bail!("Col2im input {shape:?} has {columns} columns, which is not a multiple of the taps of kernel {:?}", attrs.kernel);
    }
    let out_channels = columns / kernel_len;
    check_bias("Col2im", b.as_ref(), out_channels)?;
    let window = Window::new("Col2im", &attrs.kernel, (&attrs.kernel, &attrs.strides, &attrs.pads, &attrs.dilations))?;
    let output = transposed_output_size(&window, input, &attrs.output_padding)?;
    let geometry = TapGeometry::new(&window, input, &output);

    let positions = geometry.iterated_len();
    let cols = cols.as_standard_layout();
    let rows = cols.view().into_shape_with_order((batch * positions, columns)).map_err(internal)?;
    let mut y = Array2::<T>::zeros((batch * out_channels, geometry.target_len()));
    for n in 0..batch {
        let block = rows.slice(ndarray::s![n * positions..(n + 1) * positions, ..]);
        col2im(&geometry, &block.t(), &mut y, n * out_channels, out_channels);
    }
    add_bias(&mut y, b.as_ref(), out_channels)?;
    let shape = [&[batch, out_channels][..], &output].concat();
    array_from_vec(&shape, y.into_raw_vec_and_offset().0)
}

fn transposed_output_size(window: &Window, input: &[usize], output_padding: &[usize]) -> OpResult<Vec<usize>> {
    let rank = input.len();
    let output_padding = match output_padding.len() {
        0 => vec![0; rank],
        n if n == rank => output_padding.to_vec(),
        n => op_bail!("ConvTranspose attribute output_padding has {n} values, expected {rank}"),
    };
    let mut output = Vec::with_capacity(rank);
    for d in 0..rank {
        let full = window.strides[d] * input[d].saturating_sub(1) + output_padding[d] + window.dilated_kernel(d);
        let pads = window.pads_begin[d] + window.pads_end[d];
        if full < pads {
            op_bail!("ConvTranspose: pads {pads} exceed the full output size {full} along spatial dimension {d}");
        }
        output.push(full - pads);
    }
    Ok(output)
}

/// Adds `columns[m * prod(k) + kernel offset, p]` into the output planes
/// `y[first_row + m]` at the positions the taps reach.
fn col2im<T: Real>(
    geometry: &TapGeometry,
    columns: &ArrayView2<'_, T>,
    y: &mut Array2<T>,
    first_row: usize,
    out_channels: usize,
) {
    let kernel_len = geometry.kernel_len();
    let mut kernel_index = vec![0usize; geometry.kernel.len()];
    for k in 0..kernel_len {
        for m in 0..out_channels {
            let column = columns.row(m * kernel_len + k);
            let mut target = y.row_mut(first_row + m);
            let target = target.as_slice_mut().expect("rows of a standard matrix are contiguous");
            geometry.visit(&kernel_index, |p, position| {
                if let Some(t) = position {
                    target[t] += column[p];
                }
            });
        }
        advance(&mut kernel_index, &geometry.kernel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::IxDyn;

    fn f32s(shape: &[usize], data: Vec<f32>) -> Tensor {
        Tensor::F32(ArrayD::from_shape_vec(IxDyn(shape), data).unwrap())
    }

    fn pattern(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| (((i * 37 + seed * 11) % 23) as f32 - 11.0) * 0.125).collect()
    }

    struct Case2d {
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        m: usize,
        kernel: [usize; 2],
        strides: [usize; 2],
        pads: [usize; 4],
        dilations: [usize; 2],
        group: usize,
    }

    /// Computes a 2-D convolution of `[N, C, H, W]` by `[M, C/g, kh, kw]` with direct loops.
    fn naive_conv2d(case: &Case2d, x: &[f32], w: &[f32], b: &[f32]) -> (Vec<usize>, Vec<f32>) {
        let cg = case.c / case.group;
        let mg = case.m / case.group;
        let oh = (case.h + case.pads[0] + case.pads[2] - ((case.kernel[0] - 1) * case.dilations[0] + 1))
            / case.strides[0]
            + 1;
        let ow = (case.w + case.pads[1] + case.pads[3] - ((case.kernel[1] - 1) * case.dilations[1] + 1))
            / case.strides[1]
            + 1;
        let mut y = vec![0.0f32; case.n * case.m * oh * ow];
        for n in 0..case.n {
            for m in 0..case.m {
                let g = m / mg;
                for i in 0..oh {
                    for j in 0..ow {
                        let mut acc = b[m];
                        for c in 0..cg {
                            for ki in 0..case.kernel[0] {
                                for kj in 0..case.kernel[1] {
                                    let hi =
                                        (i * case.strides[0] + ki * case.dilations[0]) as i64 - case.pads[0] as i64;
                                    let wi =
                                        (j * case.strides[1] + kj * case.dilations[1]) as i64 - case.pads[1] as i64;
                                    if hi < 0 || wi < 0 || hi >= case.h as i64 || wi >= case.w as i64 {
                                        continue;
                                    }
                                    let xc = g * cg + c;
                                    let xv = x[((n * case.c + xc) * case.h + hi as usize) * case.w + wi as usize];
                                    let wv = w[((m * cg + c) * case.kernel[0] + ki) * case.kernel[1] + kj];
                                    acc += xv * wv;
                                }
                            }
                        }
                        y[((n * case.m + m) * oh + i) * ow + j] = acc;
                    }
                }
            }
        }
        (vec![case.n, case.m, oh, ow], y)
    }

    fn run_conv_case(case: &Case2d) {
        let x = pattern(case.n * case.c * case.h * case.w, 1);
        let w = pattern(case.m * (case.c / case.group) * case.kernel[0] * case.kernel[1], 2);
        let b = pattern(case.m, 3);
        let attrs = ConvAttrs {
            kernel: case.kernel.to_vec(),
            strides: case.strides.to_vec(),
            pads: case.pads.to_vec(),
            dilations: case.dilations.to_vec(),
            group: case.group,
        };
        let y = conv(
            &f32s(&[case.n, case.c, case.h, case.w], x.clone()),
            &f32s(&[case.m, case.c / case.group, case.kernel[0], case.kernel[1]], w.clone()),
            Some(&f32s(&[case.m], b.clone())),
            &attrs,
        )
        .unwrap();
        let (shape, expected) = naive_conv2d(case, &x, &w, &b);
        assert_eq!(y.shape(), &shape[..]);
        for (i, (got, want)) in y.to_f64_vec().iter().zip(&expected).enumerate() {
            assert!((got - *want as f64).abs() < 1e-4, "element {i}: {got} vs {want}");
        }
    }

    #[test]
    fn conv2d_pads_strides_dilation() {
        run_conv_case(&Case2d {
            n: 2,
            c: 3,
            h: 7,
            w: 6,
            m: 4,
            kernel: [3, 2],
            strides: [2, 1],
            pads: [1, 0, 2, 1],
            dilations: [2, 1],
            group: 1,
        });
    }

    #[test]
    fn conv2d_groups() {
        run_conv_case(&Case2d {
            n: 1,
            c: 4,
            h: 5,
            w: 5,
            m: 6,
            kernel: [3, 3],
            strides: [1, 2],
            pads: [1, 1, 1, 1],
            dilations: [1, 1],
            group: 2,
        });
        // Depthwise.
        run_conv_case(&Case2d {
            n: 1,
            c: 3,
            h: 4,
            w: 4,
            m: 3,
            kernel: [2, 2],
            strides: [1, 1],
            pads: [0, 0, 0, 0],
            dilations: [1, 1],
            group: 3,
        });
    }

    #[test]
    fn conv2d_patch_embedding() {
        run_conv_case(&Case2d {
            n: 1,
            c: 3,
            h: 8,
            w: 8,
            m: 5,
            kernel: [4, 4],
            strides: [4, 4],
            pads: [0; 4],
            dilations: [1, 1],
            group: 1,
        });
    }

    #[test]
    fn conv1d_by_hand() {
        // x = [1, 2, 3, 4], w = [1, -1], pads 1 on both sides: [1, 1, 1, 1, -4].
        let x = f32s(&[1, 1, 4], vec![1.0, 2.0, 3.0, 4.0]);
        let w = f32s(&[1, 1, 2], vec![1.0, -1.0]);
        let attrs = ConvAttrs { kernel: vec![2], strides: vec![1], pads: vec![1, 1], dilations: vec![1], group: 1 };
        let y = conv(&x, &w, None, &attrs).unwrap();
        assert_eq!(y.shape(), &[1, 1, 5]);
        assert_eq!(y.to_f64_vec(), vec![-1.0, -1.0, -1.0, -1.0, 4.0]);
    }

    #[test]
    fn conv_rejects_bad_shapes() {
        let x = f32s(&[1, 3, 4, 4], vec![0.0; 48]);
        let w = f32s(&[2, 2, 3, 3], vec![0.0; 36]);
        let attrs =
            ConvAttrs { kernel: vec![3, 3], strides: vec![1, 1], pads: vec![0; 4], dilations: vec![1, 1], group: 1 };
        assert!(conv(&x, &w, None, &attrs).is_err());
        let w_big = f32s(&[1, 3, 5, 5], vec![0.0; 75]);
        let attrs_big = ConvAttrs { kernel: vec![5, 5], ..attrs };
        let err = conv(&x, &w_big, None, &attrs_big).unwrap_err();
        assert!(err.message.contains("larger than the padded input"), "{}", err.message);
    }

    /// Computes a 2-D transposed convolution with direct loops, in which
    /// every input pixel scatters `x * w` into the output.
    #[allow(clippy::too_many_arguments)]
    fn naive_conv_transpose2d(
        x: &[f32],
        w: &[f32],
        (n, c, h, wd): (usize, usize, usize, usize),
        (mg, group): (usize, usize),
        kernel: [usize; 2],
        strides: [usize; 2],
        pads: [usize; 4],
        dilations: [usize; 2],
        output_padding: [usize; 2],
    ) -> (Vec<usize>, Vec<f32>) {
        let oh = strides[0] * (h - 1) + output_padding[0] + (kernel[0] - 1) * dilations[0] + 1 - pads[0] - pads[2];
        let ow = strides[1] * (wd - 1) + output_padding[1] + (kernel[1] - 1) * dilations[1] + 1 - pads[1] - pads[3];
        let m = mg * group;
        let cg = c / group;
        let mut y = vec![0.0f32; n * m * oh * ow];
        for b in 0..n {
            for ci in 0..c {
                let g = ci / cg;
                for i in 0..h {
                    for j in 0..wd {
                        for mo in 0..mg {
                            for ki in 0..kernel[0] {
                                for kj in 0..kernel[1] {
                                    let oi = (i * strides[0] + ki * dilations[0]) as i64 - pads[0] as i64;
                                    let oj = (j * strides[1] + kj * dilations[1]) as i64 - pads[1] as i64;
                                    if oi < 0 || oj < 0 || oi >= oh as i64 || oj >= ow as i64 {
                                        continue;
                                    }
                                    let xv = x[((b * c + ci) * h + i) * wd + j];
                                    let wv = w[((ci * mg + mo) * kernel[0] + ki) * kernel[1] + kj];
                                    let out_channel = g * mg + mo;
                                    y[((b * m + out_channel) * oh + oi as usize) * ow + oj as usize] += xv * wv;
                                }
                            }
                        }
                    }
                }
            }
        }
        (vec![n, m, oh, ow], y)
    }

    #[test]
    fn conv_transpose_stride2_pad1_kernel4() {
        let (n, c, h, wd, mg) = (2, 3, 4, 5, 2);
        let x = pattern(n * c * h * wd, 4);
        let w = pattern(c * mg * 16, 5);
        let attrs = ConvTransposeAttrs {
            kernel: vec![4, 4],
            strides: vec![2, 2],
            pads: vec![1, 1, 1, 1],
            dilations: vec![1, 1],
            output_padding: vec![0, 0],
            group: 1,
        };
        let y =
            conv_transpose(&f32s(&[n, c, h, wd], x.clone()), &f32s(&[c, mg, 4, 4], w.clone()), None, &attrs).unwrap();
        let (shape, expected) =
            naive_conv_transpose2d(&x, &w, (n, c, h, wd), (mg, 1), [4, 4], [2, 2], [1, 1, 1, 1], [1, 1], [0, 0]);
        assert_eq!(shape, vec![2, 2, 8, 10]);
        assert_eq!(y.shape(), &shape[..]);
        for (i, (got, want)) in y.to_f64_vec().iter().zip(&expected).enumerate() {
            assert!((got - *want as f64).abs() < 1e-4, "element {i}: {got} vs {want}");
        }
    }

    #[test]
    fn conv_transpose_groups_dilation_output_padding() {
        let (n, c, h, wd, mg, group) = (1, 4, 3, 3, 3, 2);
        let x = pattern(n * c * h * wd, 6);
        let w = pattern(c * mg * 6, 7);
        let b = pattern(mg * group, 8);
        let attrs = ConvTransposeAttrs {
            kernel: vec![2, 3],
            strides: vec![3, 2],
            pads: vec![0, 1, 1, 0],
            dilations: vec![2, 1],
            output_padding: vec![1, 1],
            group,
        };
        let y = conv_transpose(
            &f32s(&[n, c, h, wd], x.clone()),
            &f32s(&[c, mg, 2, 3], w.clone()),
            Some(&f32s(&[mg * group], b.clone())),
            &attrs,
        )
        .unwrap();
        let (shape, mut expected) =
            naive_conv_transpose2d(&x, &w, (n, c, h, wd), (mg, group), [2, 3], [3, 2], [0, 1, 1, 0], [2, 1], [1, 1]);
        let plane = shape[2] * shape[3];
        for (i, v) in expected.iter_mut().enumerate() {
            *v += b[(i / plane) % (mg * group)];
        }
        assert_eq!(y.shape(), &shape[..]);
        for (i, (got, want)) in y.to_f64_vec().iter().zip(&expected).enumerate() {
            assert!((got - *want as f64).abs() < 1e-4, "element {i}: {got} vs {want}");
        }
    }

    #[test]
    fn conv_transpose_1d_by_hand() {
        // x = [1, 2], w = [1, 10, 100], stride 2: [1, 10, 102, 20, 200].
        let x = f32s(&[1, 1, 2], vec![1.0, 2.0]);
        let w = f32s(&[1, 1, 3], vec![1.0, 10.0, 100.0]);
        let attrs = ConvTransposeAttrs {
            kernel: vec![3],
            strides: vec![2],
            pads: vec![0, 0],
            dilations: vec![1],
            output_padding: vec![0],
            group: 1,
        };
        let y = conv_transpose(&x, &w, None, &attrs).unwrap();
        assert_eq!(y.to_f64_vec(), vec![1.0, 10.0, 102.0, 20.0, 200.0]);
    }
}
