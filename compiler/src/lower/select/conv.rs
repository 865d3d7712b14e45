//! Kernel selection for convolutions and resizing.
//!
//! `Conv` becomes im2col + GEMM + a transposing copy back to NCHW.
//! `ConvTranspose` becomes a transposing copy to `[pixels, channels]`, a
//! GEMM against the weights viewed as `[Cin, Cout * kh * kw]`, and col2im.
//! `Resize` of the last two axes becomes a separable 2-D kernel whose
//! per-axis tables are computed here with the interpreter's Resize, applied
//! to identity matrices, so the generated code reproduces its ONNX
//! semantics (coordinate transforms, cubic coefficient, exclude_outside).

use ndarray::{Array2, IxDyn};

use super::{SelectResult, Selector, contiguous_strides, pack_panels};
use crate::interp::eval_op;
use crate::ir::op::{ConvAttrs, ConvTransposeAttrs, ResizeAttrs};
use crate::ir::{NodeId, Op};
use crate::lower::kernel::{Activation, ConvGeometry, Kernel};
use crate::tensor::Tensor;

/// Spatial sizes as 2-D, treating a 1-D convolution as height 1.
fn spatial_2d(shape: &[usize]) -> (usize, usize) {
    match shape.len() {
        4 => (shape[2], shape[3]),
        3 => (1, shape[2]),
        _ => (0, 0),
    }
}

fn pair(v: &[usize], default: usize) -> (usize, usize) {
    match v.len() {
        2 => (v[0], v[1]),
        1 => (default, v[0]),
        _ => (default, default),
    }
}

/// Spatial attributes of a convolution, as the IR stores them.
struct Window<'a> {
    kernel: &'a [usize],
    strides: &'a [usize],
    pads: &'a [usize],
    dilations: &'a [usize],
}

/// Builds the 2-D geometry of `window` over spatial sizes `input` and
/// `output` (1-D ones count as height 1), for `batch` items of `c` channels.
fn geometry(window: &Window<'_>, batch: usize, c: usize, input: (usize, usize), output: (usize, usize)) -> ConvGeometry {
    let (kh, kw) = pair(window.kernel, 1);
    ConvGeometry {
        batch,
        c,
        h: input.0,
        w: input.1,
        oh: output.0,
        ow: output.1,
        kh,
        kw,
        stride: pair(window.strides, 1),
        pad: pair(&window.pads[..window.kernel.len()], 0),
        dilation: pair(window.dilations, 1),
    }
}

/// Operands and sizes shared by Conv and ConvTranspose: the input, the
/// constant weight, the result, and the 2-D geometry with `c` set to
/// `channels` (the input channels for Conv, the output channels for
/// ConvTranspose).
struct ConvParts {
    x: crate::ir::ValueId,
    weight: Vec<f32>,
    out: crate::ir::ValueId,
    in_channels: usize,
    out_channels: usize,
    geometry: ConvGeometry,
}

/// The shape and weight of a convolution-like node, with the spatial
/// attributes given. `use_out_channels` puts the output channel count in
/// `geometry.c` (the layout col2im folds into).
#[allow(clippy::too_many_arguments)]
fn conv_parts(
    selector: &Selector<'_>,
    node: NodeId,
    kernel: &[usize],
    strides: &[usize],
    pads: &[usize],
    dilations: &[usize],
    use_out_channels: bool,
) -> Result<ConvParts, String> {
    let graph = selector.graph;
    let x = selector.operand(node, 0)?;
    let w = selector.operand(node, 1)?;
    let weight = graph.konst(w).ok_or("the weight is not a constant")?.as_f32().ok_or("the weight is not f32")?;
    let weight: Vec<f32> = weight.iter().copied().collect();
    let x_shape = graph.fact(x).shape.clone();
    let out = graph.node(node).outputs[0];
    let out_shape = graph.fact(out).shape.clone();
    let (in_channels, out_channels) = (x_shape[1], out_shape[1]);
    let c = if use_out_channels { out_channels } else { in_channels };
    let window = Window { kernel, strides, pads, dilations };
    let geometry = geometry(&window, x_shape[0], c, spatial_2d(&x_shape), spatial_2d(&out_shape));
    Ok(ConvParts { x, weight, out, in_channels, out_channels, geometry })
}

impl Selector<'_> {
    pub(super) fn conv(&mut self, node: NodeId) -> SelectResult {
        let graph = self.graph;
        let Op::Conv(ConvAttrs { kernel, strides, pads, dilations, group }) = graph.node(node).op.clone() else {
            return Err("internal: not a Conv".into());
        };
        if group != 1 {
            return Err(format!("grouped convolution (group={group}) has no kernel"));
        }
        let ConvParts { x, weight, out: out_v, in_channels: c, out_channels: cout, geometry } =
            conv_parts(self, node, &kernel, &strides, &pads, &dilations, false)?;
        let ConvGeometry { batch, oh, ow, kh, kw, .. } = geometry.clone();

        // Phase 1 of 3: unfold the input.
        let k = c * kh * kw;
        let m = batch * oh * ow;
        let input = self.slot_of(x)?;
        let cols = self.temp(m * k);
        self.push(node, Kernel::Im2col { geometry }, vec![cols, input]);

        // Phase 2 of 3: multiply by the weights viewed as [Cout, k].
        let packed = pack_panels(k, cout, |kk, j| weight[j * k + kk]);
        let b = self.add_weight(&format!("{}/packed", graph.node(node).name), packed);
        let product = self.temp(m * cout);
        let mut args = vec![product, cols, b];
        let bias = graph.node(node).inputs.get(2).copied().flatten();
        if let Some(bias) = bias {
            args.push(self.gemm_bias(bias, cout)?);
        }
        let gemm = Kernel::Gemm { m, n: cout, k, bias: bias.is_some(), activation: Activation::None, residual: false };
        self.push(node, gemm, args);

        // Phase 3 of 3: [batch * pixels, Cout] -> [batch, Cout, pixels].
        let pixels = oh * ow;
        let out = self.result_slot(out_v);
        let shape = vec![batch, cout, pixels];
        let in_strides = vec![(pixels * cout) as isize, 1, cout as isize];
        self.copy_step(node, out, product, shape.clone(), 0, contiguous_strides(&shape), 0, in_strides);
        Ok(())
    }

    pub(super) fn conv_transpose(&mut self, node: NodeId) -> SelectResult {
        let graph = self.graph;
        let Op::ConvTranspose(ConvTransposeAttrs { kernel, strides, pads, dilations, group, .. }) = graph.node(node).op.clone() else {
            return Err("internal: not a ConvTranspose".into());
        };
        if group != 1 {
            return Err(format!("grouped transposed convolution (group={group}) has no kernel"));
        }
        let ConvParts { x, weight, out: out_v, in_channels: cin, out_channels: cout, geometry } =
            conv_parts(self, node, &kernel, &strides, &pads, &dilations, true)?;
        let ConvGeometry { batch, h, w: w_, kh, kw, .. } = geometry.clone();

        // Phase 1 of 3: [batch, Cin, pixels] -> [batch * pixels, Cin].
        let pixels = h * w_;
        let input = self.slot_of(x)?;
        let a = self.temp(batch * pixels * cin);
        let shape = vec![batch, pixels, cin];
        let in_strides = vec![(cin * pixels) as isize, 1, pixels as isize];
        self.copy_step(node, a, input, shape.clone(), 0, contiguous_strides(&shape), 0, in_strides);

        // Phase 2 of 3: multiply by the weights viewed as [Cin, Cout * kh * kw].
        let n = cout * kh * kw;
        let packed = pack_panels(cin, n, |kk, j| weight[kk * n + j]);
        let b = self.add_weight(&format!("{}/packed", graph.node(node).name), packed);
        let cols = self.temp(batch * pixels * n);
        let gemm = Kernel::Gemm { m: batch * pixels, n, k: cin, bias: false, activation: Activation::None, residual: false };
        self.push(node, gemm, vec![cols, a, b]);

        // Phase 3 of 3: fold the columns into the output, adding the bias.
        let out = self.result_slot(out_v);
        let mut args = vec![out, cols];
        let bias = graph.node(node).inputs.get(2).copied().flatten();
        if let Some(bias) = bias {
            args.push(self.slot_of(bias)?);
        }
        self.push(node, Kernel::Col2im { geometry, bias: bias.is_some() }, args);
        Ok(())
    }

    /// `Col2im(cols, bias?)`: the fold step of `conv_transpose` on its own,
    /// reading `cols` `[N, spatial.., M * kh * kw]` as `[N * pixels, M * kh * kw]`.
    pub(super) fn col2im(&mut self, node: NodeId) -> SelectResult {
        let graph = self.graph;
        let Op::Col2im(ConvTransposeAttrs { kernel, strides, pads, dilations, .. }) = graph.node(node).op.clone() else {
            return Err("internal: not a Col2im".into());
        };
        let cols = self.operand(node, 0)?;
        let cols_shape = graph.fact(cols).shape.clone();
        let out_v = graph.node(node).outputs[0];
        let out_shape = graph.fact(out_v).shape.clone();

        // cols is [N, spatial.., M * kh * kw]: its spatial sizes sit between the first and last axes.
        let input_spatial = [&[0, 0][..], &cols_shape[1..cols_shape.len() - 1]].concat();
        let window = Window { kernel: &kernel, strides: &strides, pads: &pads, dilations: &dilations };
        let geometry = geometry(&window, out_shape[0], out_shape[1], spatial_2d(&input_spatial), spatial_2d(&out_shape));

        let input = self.slot_of(cols)?;
        let out = self.result_slot(out_v);
        let mut args = vec![out, input];
        let bias = graph.node(node).inputs.get(1).copied().flatten();
        if let Some(bias) = bias {
            args.push(self.slot_of(bias)?);
        }
        self.push(node, Kernel::Col2im { geometry, bias: bias.is_some() }, args);
        Ok(())
    }

    pub(super) fn resize(&mut self, node: NodeId) -> SelectResult {
        let graph = self.graph;
        let Op::Resize(attrs) = graph.node(node).op.clone() else { return Err("internal: not a Resize".into()) };
        if attrs.coordinate_transform == crate::ir::op::CoordinateTransform::TfCropAndResize {
            return Err("tf_crop_and_resize has no kernel".into());
        }
        let x = self.operand(node, 0)?;
        let in_shape = graph.fact(x).shape.clone();
        let out_v = graph.node(node).outputs[0];
        let out_shape = graph.fact(out_v).shape.clone();
        let rank = in_shape.len();
        if rank < 2 || in_shape[..rank - 2] != out_shape[..rank - 2] {
            return Err("only resizing of the last two axes has a kernel".into());
        }
        let scales = match graph.node(node).inputs.get(2).copied().flatten() {
            Some(v) => Some(graph.konst(v).ok_or("scales must be constants")?.to_f64_vec()),
            None => None,
        };
        let (in_h, in_w, out_h, out_w) = (in_shape[rank - 2], in_shape[rank - 1], out_shape[rank - 2], out_shape[rank - 1]);
        let scale_of = |axis: usize| scales.as_ref().map(|s| s[axis] as f32);
        let (y_index, y_weight, taps_y) = axis_table(&attrs, in_h, out_h, scale_of(rank - 2))?;
        let (x_index, x_weight, taps_x) = axis_table(&attrs, in_w, out_w, scale_of(rank - 1))?;
        let taps = taps_y.max(taps_x);
        let widen = |index: Vec<f32>, weight: Vec<f32>, from: usize| -> (Vec<f32>, Vec<f32>) {
            let rows = index.len() / from.max(1);
            let mut i2 = vec![0.0; rows * taps];
            let mut w2 = vec![0.0; rows * taps];
            for r in 0..rows {
                for t in 0..from {
                    i2[r * taps + t] = index[r * from + t];
                    w2[r * taps + t] = weight[r * from + t];
                }
            }
            (i2, w2)
        };
        let (y_index, y_weight) = widen(y_index, y_weight, taps_y);
        let (x_index, x_weight) = widen(x_index, x_weight, taps_x);

        let name = graph.node(node).name.clone();
        let input = self.slot_of(x)?;
        let tables = [
            self.add_weight(&format!("{name}/y_index"), y_index),
            self.add_weight(&format!("{name}/y_weight"), y_weight),
            self.add_weight(&format!("{name}/x_index"), x_index),
            self.add_weight(&format!("{name}/x_weight"), x_weight),
        ];
        let out = self.result_slot(out_v);
        let planes = in_shape[..rank - 2].iter().product();
        let kernel = Kernel::Resize2d { planes, in_h, in_w, out_h, out_w, taps };
        self.push(node, kernel, vec![out, input, tables[0], tables[1], tables[2], tables[3]]);
        Ok(())
    }
}

/// Source indices and weights of each output position along one axis:
/// `(index[out * taps], weight[out * taps], taps)`. The weights come from
/// resizing the identity matrix with the node's own attributes.
fn axis_table(attrs: &ResizeAttrs, input: usize, output: usize, scale: Option<f32>) -> Result<(Vec<f32>, Vec<f32>, usize), String> {
    let identity = Array2::<f32>::eye(input).into_dyn();
    let identity = Tensor::F32(identity.into_shape_with_order(IxDyn(&[input, input])).map_err(|e| e.to_string())?);
    let (scales, sizes) = match scale {
        Some(s) => (Some(Tensor::from_f32s(&[s, 1.0])), None),
        None => (None, Some(Tensor::from_i64s(&[output as i64, input as i64]))),
    };
    let op = Op::Resize(attrs.clone());
    let operands = [Some(&identity), None, scales.as_ref(), sizes.as_ref()];
    let resized = eval_op(&op, &operands).map_err(|e| e.message)?;
    let matrix = resized[0].as_f32().ok_or("resize table is not f32")?;
    if matrix.shape() != [output, input] {
        return Err(format!("resize table has shape {:?}, expected [{output}, {input}]", matrix.shape()));
    }
    let taps = (0..output).map(|o| (0..input).filter(|&i| matrix[[o, i]] != 0.0).count()).max().unwrap_or(1).max(1);
    let mut index = vec![0.0f32; output * taps];
    let mut weight = vec![0.0f32; output * taps];
    for o in 0..output {
        let mut t = 0;
        for i in 0..input {
            let w = matrix[[o, i]];
            if w != 0.0 {
                index[o * taps + t] = i as f32;
                weight[o * taps + t] = w;
                t += 1;
            }
        }
    }
    Ok((index, weight, taps))
}
