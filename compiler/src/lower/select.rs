//! Kernel selection: one or more kernel calls per IR node.
//!
//! Operands are "slots" here: virtual buffers that [`super::plan`] later
//! places in caller memory, the weights or the arena. Layout-preserving
//! nodes (Reshape, Squeeze, Unsqueeze, Flatten, Identity) reuse their
//! operand's slot. A Linear followed only by a GELU, and then only by a
//! residual Add, becomes one GEMM with that epilogue. Nodes no kernel
//! implements are collected and reported together.

use std::collections::HashMap;

use super::kernel::{Activation, BinaryFn, GEMM_NR, Kernel, UnaryFn, attention_scratch};
use super::{TensorInfo, Weight};
use crate::error::{Error, Result};
use crate::ir::op::{BinaryOp, GeluApprox, ReduceKind, UnaryOp};
use crate::ir::{Graph, NodeId, Op, ValueId};
use crate::tensor::{DType, Tensor};

/// Kind of a slot before memory planning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SlotKind {
    Input(usize),
    Output(usize),
    Weight(usize),
    Temp,
}

#[derive(Clone, Debug)]
pub(super) struct Slot {
    pub kind: SlotKind,
    pub floats: usize,
}

#[derive(Clone, Debug)]
pub(super) struct SelectedStep {
    pub node: String,
    pub kernel: Kernel,
    pub args: Vec<usize>,
}

/// Kernel calls over slots, before memory planning.
pub(super) struct Selected {
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
    pub weights: Vec<Weight>,
    pub slots: Vec<Slot>,
    pub steps: Vec<SelectedStep>,
}

struct Selector<'g> {
    graph: &'g Graph,
    out: Selected,
    /// Slot of each value computed so far.
    value_slot: HashMap<ValueId, usize>,
    /// Nodes already implemented as part of another node's kernel.
    fused: std::collections::HashSet<NodeId>,
    unsupported: Vec<String>,
}

/// Selects kernels for every node of a canonical graph.
pub(super) fn select_kernels(graph: &Graph) -> Result<Selected> {
    let mut s = Selector {
        graph,
        out: Selected { inputs: vec![], outputs: vec![], weights: vec![], slots: vec![], steps: vec![] },
        value_slot: HashMap::new(),
        fused: Default::default(),
        unsupported: vec![],
    };
    for (i, &v) in graph.inputs().iter().enumerate() {
        let fact = graph.fact(v);
        if fact.dtype != DType::F32 {
            return Err(Error::Input { input: graph.value(v).name.clone(), message: format!("generated code takes f32 inputs, not {}", fact.dtype) });
        }
        s.out.inputs.push(TensorInfo { name: graph.value(v).name.clone(), shape: fact.shape.clone() });
        let slot = s.new_slot(SlotKind::Input(i), fact.numel());
        s.value_slot.insert(v, slot);
    }
    for &v in graph.outputs() {
        let fact = graph.fact(v);
        if fact.dtype != DType::F32 {
            return Err(Error::Model(format!("graph output '{}' is {}; generated code returns f32 outputs", graph.value(v).name, fact.dtype)));
        }
        s.out.outputs.push(TensorInfo { name: graph.value(v).name.clone(), shape: fact.shape.clone() });
    }

    // Values downstream of an unsupported node have no buffer; their nodes
    // are skipped rather than reported as well.
    let mut failed = std::collections::HashSet::new();
    if let Some(v) = graph.value_ids().find(|&v| graph.fact(v).numel() == 0) {
        return Err(Error::Codegen(format!(
            "value '{}' has no elements ({}); code generation needs every tensor to have at least one element (check --input-shape for a 0 dimension)",
            graph.value(v).name,
            graph.fact(v)
        )));
    }
    for node in graph.topo_order() {
        if s.fused.contains(&node) {
            continue;
        }
        let n = graph.node(node);
        if n.inputs.iter().flatten().any(|v| failed.contains(v)) {
            failed.extend(n.outputs.iter().copied());
            continue;
        }
        if let Err(message) = s.select_node(node) {
            s.unsupported.push(format!("node '{}' ({}): {message}", n.name, n.op.name()));
            failed.extend(n.outputs.iter().copied());
        }
    }
    if !s.unsupported.is_empty() {
        return Err(Error::Codegen(format!(
            "code generation does not support {} node(s) of this model:\n  {}\nThe reference interpreter runs them: use `vitc run --engine interpreter`.",
            s.unsupported.len(),
            s.unsupported.join("\n  ")
        )));
    }
    s.copy_outputs().map_err(|message| Error::Model(format!("cannot generate code for the graph outputs: {message}")))?;
    Ok(s.out)
}

type SelectResult = std::result::Result<(), String>;

impl Selector<'_> {
    fn new_slot(&mut self, kind: SlotKind, floats: usize) -> usize {
        self.out.slots.push(Slot { kind, floats });
        self.out.slots.len() - 1
    }

    fn add_weight(&mut self, name: &str, data: Vec<f32>) -> usize {
        self.out.weights.push(Weight { name: name.to_string(), data });
        let index = self.out.weights.len() - 1;
        let floats = self.out.weights[index].data.len();
        self.new_slot(SlotKind::Weight(index), floats)
    }

    /// Returns the slot of `v`, creating a weight slot for an f32 constant.
    fn slot_of(&mut self, v: ValueId) -> std::result::Result<usize, String> {
        if let Some(&slot) = self.value_slot.get(&v) {
            return Ok(slot);
        }
        let graph = self.graph;
        match graph.konst(v) {
            Some(t) => {
                let data = f32_data(t)?;
                let slot = self.add_weight(&graph.value(v).name, data);
                self.value_slot.insert(v, slot);
                Ok(slot)
            }
            None => Err(format!("value {v} has no buffer yet (internal ordering error)")),
        }
    }

    /// Creates a result slot for `v`: the caller's output buffer when `v` is a
    /// graph output, otherwise arena memory.
    fn result_slot(&mut self, v: ValueId) -> usize {
        let floats = self.graph.fact(v).numel();
        let output = self.graph.outputs().iter().position(|&o| o == v);
        let kind = match output {
            Some(i) if !self.out.slots.iter().any(|s| s.kind == SlotKind::Output(i)) => SlotKind::Output(i),
            _ => SlotKind::Temp,
        };
        let slot = self.new_slot(kind, floats);
        self.value_slot.insert(v, slot);
        slot
    }

    fn temp(&mut self, floats: usize) -> usize {
        self.new_slot(SlotKind::Temp, floats)
    }

    fn push(&mut self, node: NodeId, kernel: Kernel, args: Vec<usize>) {
        let name = self.graph.node(node).name.clone();
        self.out.steps.push(SelectedStep { node: name, kernel, args });
    }

    /// Copies graph outputs that ended up in another slot (aliases, inputs,
    /// constants) into the caller's output buffers.
    fn copy_outputs(&mut self) -> std::result::Result<(), String> {
        for (i, &v) in self.graph.outputs().iter().enumerate() {
            // A constant output gets its weight slot here.
            let slot = self.slot_of(v)?;
            if self.out.slots[slot].kind == SlotKind::Output(i) {
                continue;
            }
            let numel = self.graph.fact(v).numel();
            let target = self.new_slot(SlotKind::Output(i), numel);
            let kernel = Kernel::Copy { shape: vec![numel], out_offset: 0, out_strides: vec![1], in_offset: 0, in_strides: vec![1] };
            self.out.steps.push(SelectedStep { node: format!("output {i}"), kernel, args: vec![target, slot] });
        }
        Ok(())
    }

    fn operand(&self, node: NodeId, i: usize) -> std::result::Result<ValueId, String> {
        self.graph.node(node).inputs.get(i).copied().flatten().ok_or_else(|| format!("operand {i} is missing"))
    }

    fn select_node(&mut self, node: NodeId) -> SelectResult {
        let graph = self.graph;
        let n = graph.node(node);
        let result = n.outputs[0];
        // Values known at compile time need no code: users read them as weights.
        if n.outputs.iter().all(|&v| graph.konst(v).is_some()) {
            return Ok(());
        }
        match &n.op {
            Op::Input | Op::Constant => Ok(()),
            Op::Reshape { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } | Op::Flatten { .. } | Op::Identity => {
                let slot = self.slot_of(self.operand(node, 0)?)?;
                self.value_slot.insert(result, slot);
                Ok(())
            }
            Op::Cast { to: DType::F32 } if graph.fact(self.operand(node, 0)?).dtype == DType::F32 => {
                let slot = self.slot_of(self.operand(node, 0)?)?;
                self.value_slot.insert(result, slot);
                Ok(())
            }
            Op::Linear => self.linear(node),
            Op::Attention { heads, head_dim, scale } => self.attention(node, *heads, *head_dim, *scale),
            Op::LayerNorm { axis, epsilon } => self.layernorm(node, *axis, *epsilon),
            Op::Softmax { axis, flatten_tail: false } => self.softmax(node, *axis),
            Op::Gelu { approximate } => {
                let function = if *approximate == GeluApprox::Tanh { UnaryFn::GeluTanh } else { UnaryFn::Gelu };
                self.unary(node, function)
            }
            Op::Unary(u) => {
                let function = match u {
                    UnaryOp::Relu => UnaryFn::Relu,
                    UnaryOp::Sigmoid => UnaryFn::Sigmoid,
                    UnaryOp::Tanh => UnaryFn::Tanh,
                    UnaryOp::Erf => UnaryFn::Erf,
                    UnaryOp::Exp => UnaryFn::Exp,
                    UnaryOp::Sqrt => UnaryFn::Sqrt,
                    UnaryOp::Neg => UnaryFn::Neg,
                    UnaryOp::Abs => UnaryFn::Abs,
                    UnaryOp::Reciprocal => UnaryFn::Reciprocal,
                    other => return Err(format!("no kernel for {}", other.name())),
                };
                self.unary(node, function)
            }
            Op::Binary(b) => self.binary(node, *b),
            Op::BatchNorm { epsilon } => self.batch_norm(node, *epsilon),
            Op::Transpose { perm } => self.transpose(node, perm),
            Op::Slice => self.slice(node),
            Op::Concat { axis } => self.concat(node, *axis),
            Op::Split { axis, sizes } => self.split(node, *axis, sizes),
            Op::Gather { axis } => self.gather(node, *axis),
            Op::Expand => self.expand(node),
            Op::Conv(_) => self.conv(node),
            Op::ConvTranspose(_) => self.conv_transpose(node),
            Op::Col2im(_) => self.col2im(node),
            Op::Resize(_) => self.resize(node),
            Op::Quantize { scale, zero_point } => self.quantize(node, *scale, *zero_point),
            Op::DynamicQuantize { .. } => self.dynamic_quantize(node),
            Op::Dequantize { scale, zero_point } => self.dequantize(node, *scale, *zero_point),
            Op::QLinear => self.qlinear(node),
            Op::Reduce { kind: ReduceKind::Mean, .. } => Err("ReduceMean that is not part of a LayerNorm has no kernel".into()),
            other => Err(format!("no kernel for {}", other.name())),
        }
    }
}

/// Converts the elements of a constant to f32 (integer constants convert exactly up to 2^24).
fn f32_data(t: &Tensor) -> std::result::Result<Vec<f32>, String> {
    match t {
        Tensor::F32(a) => Ok(a.iter().copied().collect()),
        Tensor::F16(_) | Tensor::F64(_) => Ok(t.to_f64_vec().into_iter().map(|v| v as f32).collect()),
        other => Err(format!("a {} constant cannot be a kernel operand", other.dtype())),
    }
}

/// Row-major strides of `shape`, in elements.
pub(super) fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// Strides that read an operand of `shape` broadcast to `out` (NumPy rules).
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let own = contiguous_strides(shape);
    let lead = out.len() - shape.len();
    (0..out.len())
        .map(|i| if i < lead || shape[i - lead] == 1 && out[i] != 1 { 0 } else { own[i - lead] })
        .collect()
}

/// Packs `B[k, n]`, given as a closure, into GEMM panels `[n / NR][k][NR]`.
pub fn pack_panels(k: usize, n: usize, b: impl Fn(usize, usize) -> f32) -> Vec<f32> {
    let panels = n.div_ceil(GEMM_NR);
    let mut packed = vec![0.0; panels * k * GEMM_NR];
    for p in 0..panels {
        for kk in 0..k {
            for j in 0..GEMM_NR {
                let col = p * GEMM_NR + j;
                if col < n {
                    packed[(p * k + kk) * GEMM_NR + j] = b(kk, col);
                }
            }
        }
    }
    packed
}

impl Selector<'_> {
    /// Returns the sole user of `v` if it is a node satisfying `pred` and `v` is not a graph output.
    fn sole_user(&self, v: ValueId, pred: impl Fn(&Op) -> bool) -> Option<NodeId> {
        let users = self.graph.users(v);
        if users.len() != 1 || self.graph.is_graph_output(v) {
            return None;
        }
        pred(&self.graph.node(users[0].0).op).then_some(users[0].0)
    }

    /// When the sole user of `output` is a GELU, marks it fused and returns
    /// its kind and output; otherwise `(Activation::None, output)`.
    fn fused_gelu(&mut self, output: ValueId) -> (Activation, ValueId) {
        let Some(gelu) = self.sole_user(output, |op| matches!(op, Op::Gelu { .. })) else {
            return (Activation::None, output);
        };
        let activation = match self.graph.node(gelu).op {
            Op::Gelu { approximate: GeluApprox::Tanh } => Activation::GeluTanh,
            _ => Activation::Gelu,
        };
        self.fused.insert(gelu);
        (activation, self.graph.node(gelu).outputs[0])
    }

    fn linear(&mut self, node: NodeId) -> SelectResult {
        let graph = self.graph;
        let x = self.operand(node, 0)?;
        let w = self.operand(node, 1)?;
        let weight = graph.konst(w).ok_or("the weight is not a constant")?;
        let weight = weight.as_f32().ok_or("the weight is not f32")?;
        let (n, k) = (weight.shape()[0], weight.shape()[1]);
        let m = graph.fact(x).numel() / k;
        let packed = pack_panels(k, n, |kk, j| weight[[j, kk]]);

        // Epilogue: GELU, then a residual Add of a value computed earlier.
        let (activation, mut result) = self.fused_gelu(graph.node(node).outputs[0]);
        let mut residual = None;
        if let Some(add) = self.sole_user(result, |op| *op == Op::Binary(BinaryOp::Add)) {
            let other = if graph.node(add).inputs[0] == Some(result) { graph.node(add).inputs[1] } else { graph.node(add).inputs[0] };
            let sum = graph.node(add).outputs[0];
            if let Some(other) = other
                && other != result
                && graph.fact(other).shape == graph.fact(sum).shape
                && graph.fact(sum).shape == graph.fact(result).shape
                && let Some(&slot) = self.value_slot.get(&other)
            {
                residual = Some(slot);
                self.fused.insert(add);
                result = sum;
            }
        }

        let a = self.slot_of(x)?;
        let name = &graph.node(node).name;
        let sparse = sparse::sparse_panels(&packed, k, n);
        let mut args = match sparse {
            Some(ref tiles) => {
                let b = self.add_weight(&format!("{name}/tiles"), tiles.tiles.clone());
                let table = self.add_weight(&format!("{name}/tile_table"), tiles.index.clone());
                vec![0, a, b, table]
            }
            None => vec![0, a, self.add_weight(&format!("{name}/packed"), packed)],
        };
        let bias = match graph.node(node).inputs.get(2).copied().flatten() {
            Some(bias) => {
                args.push(self.gemm_bias(bias, n)?);
                true
            }
            None => false,
        };
        if let Some(slot) = residual {
            args.push(slot);
        }
        args[0] = self.result_slot(result);
        let residual = residual.is_some();
        let kernel = match sparse {
            Some(tiles) => Kernel::SparseGemm { m, n, k, bias, activation, residual, kept: tiles.kept, total: tiles.total },
            None => Kernel::Gemm { m, n, k, bias, activation, residual },
        };
        self.push(node, kernel, args);
        Ok(())
    }

    /// Adds a copy of bias `v` padded with zeros to whole GEMM panels, so the
    /// epilogue can load it in vectors.
    pub(super) fn gemm_bias(&mut self, v: ValueId, n: usize) -> std::result::Result<usize, String> {
        let graph = self.graph;
        let mut data = f32_data(graph.konst(v).ok_or("the bias is not a constant")?)?;
        if data.len() != n {
            return Err(format!("the bias has {} values for {n} outputs", data.len()));
        }
        data.resize(n.div_ceil(GEMM_NR) * GEMM_NR, 0.0);
        Ok(self.add_weight(&format!("{}/padded", graph.value(v).name), data))
    }

    fn attention(&mut self, node: NodeId, heads: usize, head_dim: usize, scale: f32) -> SelectResult {
        let shape = self.graph.fact(self.operand(node, 0)?).shape.clone();
        let [batch, tokens, _] = shape[..] else { return Err("q must be [batch, tokens, channels]".into()) };
        let (q, k, v) = (self.slot_of(self.operand(node, 0)?)?, self.slot_of(self.operand(node, 1)?)?, self.slot_of(self.operand(node, 2)?)?);
        let scratch = self.temp(batch * heads * attention_scratch(tokens, head_dim));
        let out = self.result_slot(self.graph.node(node).outputs[0]);
        self.push(node, Kernel::Attention { batch, tokens, heads, head_dim, scale }, vec![out, q, k, v, scratch]);
        Ok(())
    }

    fn layernorm(&mut self, node: NodeId, axis: i64, epsilon: f32) -> SelectResult {
        let x = self.operand(node, 0)?;
        let shape = self.graph.fact(x).shape.clone();
        let cols = *shape.last().ok_or("LayerNorm of a scalar")?;
        if !(axis == -1 || axis == shape.len() as i64 - 1) {
            return Err(format!("normalization over axis {axis} (not the last) has no kernel"));
        }
        let mut args = vec![0, self.slot_of(x)?];
        for i in 1..3 {
            if let Some(v) = self.graph.node(node).inputs.get(i).copied().flatten() {
                if self.graph.fact(v).numel() != cols {
                    return Err("scale and bias must have one value per channel".into());
                }
                args.push(self.slot_of(v)?);
            }
        }
        let bias = args.len() == 4;
        args[0] = self.result_slot(self.graph.node(node).outputs[0]);
        self.push(node, Kernel::LayerNorm { rows: shape.iter().product::<usize>() / cols.max(1), cols, epsilon, bias }, args);
        Ok(())
    }

    fn softmax(&mut self, node: NodeId, axis: i64) -> SelectResult {
        let x = self.operand(node, 0)?;
        let shape = self.graph.fact(x).shape.clone();
        if !(axis == -1 || axis == shape.len() as i64 - 1) {
            return Err(format!("softmax over axis {axis} (not the last) has no kernel"));
        }
        let cols = *shape.last().ok_or("Softmax of a scalar")?;
        let input = self.slot_of(x)?;
        let out = self.result_slot(self.graph.node(node).outputs[0]);
        self.push(node, Kernel::Softmax { rows: shape.iter().product::<usize>() / cols.max(1), cols }, vec![out, input]);
        Ok(())
    }

    fn unary(&mut self, node: NodeId, function: UnaryFn) -> SelectResult {
        let x = self.operand(node, 0)?;
        let len = self.graph.fact(x).numel();
        let input = self.slot_of(x)?;
        let out = self.result_slot(self.graph.node(node).outputs[0]);
        self.push(node, Kernel::Unary { len, function }, vec![out, input]);
        Ok(())
    }

    fn binary(&mut self, node: NodeId, op: BinaryOp) -> SelectResult {
        let function = match op {
            BinaryOp::Add => BinaryFn::Add,
            BinaryOp::Sub => BinaryFn::Sub,
            BinaryOp::Mul => BinaryFn::Mul,
            BinaryOp::Div => BinaryFn::Div,
            BinaryOp::Max => BinaryFn::Max,
            BinaryOp::Min => BinaryFn::Min,
            other => return Err(format!("no kernel for {}", other.name())),
        };
        let (a, b) = (self.operand(node, 0)?, self.operand(node, 1)?);
        if self.graph.fact(a).dtype != DType::F32 || self.graph.fact(b).dtype != DType::F32 {
            return Err("only f32 operands have kernels".into());
        }
        let shape = self.graph.fact(self.graph.node(node).outputs[0]).shape.clone();
        let a_strides = broadcast_strides(&self.graph.fact(a).shape, &shape);
        let b_strides = broadcast_strides(&self.graph.fact(b).shape, &shape);
        let (sa, sb) = (self.slot_of(a)?, self.slot_of(b)?);
        let out = self.result_slot(self.graph.node(node).outputs[0]);
        self.push(node, Kernel::Binary { function, shape, a_strides, b_strides }, vec![out, sa, sb]);
        Ok(())
    }

    fn batch_norm(&mut self, node: NodeId, epsilon: f32) -> SelectResult {
        let x = self.operand(node, 0)?;
        let mut params = Vec::new();
        for i in 1..5 {
            let v = self.operand(node, i)?;
            let t = self.graph.konst(v).ok_or("BatchNorm parameters must be constants")?;
            params.push(f32_data(t)?);
        }
        let (gamma, beta, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
        let scale: Vec<f32> = gamma.iter().zip(var).map(|(g, v)| g / (v + epsilon).sqrt()).collect();
        let shift: Vec<f32> = beta.iter().zip(mean).zip(&scale).map(|((b, m), s)| b - m * s).collect();
        let shape = self.graph.fact(x).shape.clone();
        let channels = shape[1];
        let name = self.graph.node(node).name.clone();
        let input = self.slot_of(x)?;
        let s = self.add_weight(&format!("{name}/scale"), scale);
        let t = self.add_weight(&format!("{name}/shift"), shift);
        let out = self.result_slot(self.graph.node(node).outputs[0]);
        let kernel = Kernel::ChannelAffine { outer: shape[0], channels, inner: shape[2..].iter().product() };
        self.push(node, kernel, vec![out, input, s, t]);
        Ok(())
    }

    // The arguments are the fields of Kernel::Copy plus its two operands.
    #[allow(clippy::too_many_arguments)]
    fn copy_step(&mut self, node: NodeId, out: usize, input: usize, shape: Vec<usize>, out_offset: usize, out_strides: Vec<usize>, in_offset: usize, in_strides: Vec<isize>) {
        let kernel = Kernel::Copy { shape, out_offset, out_strides, in_offset, in_strides };
        self.push(node, kernel, vec![out, input]);
    }

    fn transpose(&mut self, node: NodeId, perm: &[usize]) -> SelectResult {
        let x = self.operand(node, 0)?;
        let in_strides = contiguous_strides(&self.graph.fact(x).shape);
        let out_shape = self.graph.fact(self.graph.node(node).outputs[0]).shape.clone();
        let strides: Vec<isize> = perm.iter().map(|&p| in_strides[p] as isize).collect();
        let input = self.slot_of(x)?;
        let out = self.result_slot(self.graph.node(node).outputs[0]);
        self.copy_step(node, out, input, out_shape.clone(), 0, contiguous_strides(&out_shape), 0, strides);
        Ok(())
    }

    fn slice(&mut self, node: NodeId) -> SelectResult {
        let graph = self.graph;
        let x = self.operand(node, 0)?;
        let in_shape = graph.fact(x).shape.clone();
        let rank = in_shape.len();
        let out_shape = graph.fact(graph.node(node).outputs[0]).shape.clone();
        let read = |i: usize| -> std::result::Result<Option<Vec<i64>>, String> {
            match graph.node(node).inputs.get(i).copied().flatten() {
                None => Ok(None),
                Some(v) => Ok(Some(graph.konst(v).ok_or("slice bounds must be constants")?.to_i64_vec())),
            }
        };
        let starts = read(1)?.ok_or("starts missing")?;
        let axes = read(3)?.unwrap_or_else(|| (0..starts.len() as i64).collect());
        let steps = read(4)?.unwrap_or_else(|| vec![1; starts.len()]);
        let base = contiguous_strides(&in_shape);
        let mut in_offset = 0usize;
        let mut strides: Vec<isize> = base.iter().map(|&s| s as isize).collect();
        for ((&start, &axis), &step) in starts.iter().zip(&axes).zip(&steps) {
            let a = if axis < 0 { axis + rank as i64 } else { axis } as usize;
            let dim = in_shape[a] as i64;
            // ONNX clamping of the start index.
            let mut s = if start < 0 { start + dim } else { start };
            s = if step > 0 { s.clamp(0, dim) } else { s.clamp(0, dim - 1) };
            if out_shape[a] > 0 {
                in_offset += s as usize * base[a];
            }
            strides[a] = base[a] as isize * step as isize;
        }
        let input = self.slot_of(x)?;
        let out = self.result_slot(graph.node(node).outputs[0]);
        self.copy_step(node, out, input, out_shape.clone(), 0, contiguous_strides(&out_shape), in_offset, strides);
        Ok(())
    }

    fn concat(&mut self, node: NodeId, axis: i64) -> SelectResult {
        let graph = self.graph;
        let out_shape = graph.fact(graph.node(node).outputs[0]).shape.clone();
        let a = if axis < 0 { axis + out_shape.len() as i64 } else { axis } as usize;
        let out_strides = contiguous_strides(&out_shape);
        let operands: Vec<ValueId> = graph.node(node).inputs.iter().flatten().copied().collect();
        let slots = operands.iter().map(|&v| self.slot_of(v)).collect::<std::result::Result<Vec<_>, _>>()?;
        let out = self.result_slot(graph.node(node).outputs[0]);
        let mut offset = 0;
        for (v, slot) in operands.into_iter().zip(slots) {
            let shape = graph.fact(v).shape.clone();
            let strides = contiguous_strides(&shape).into_iter().map(|s| s as isize).collect();
            let along = shape[a];
            self.copy_step(node, out, slot, shape, offset * out_strides[a], out_strides.clone(), 0, strides);
            offset += along;
        }
        Ok(())
    }

    fn split(&mut self, node: NodeId, axis: i64, sizes: &[usize]) -> SelectResult {
        let graph = self.graph;
        let x = self.operand(node, 0)?;
        let in_shape = graph.fact(x).shape.clone();
        let a = if axis < 0 { axis + in_shape.len() as i64 } else { axis } as usize;
        let in_strides: Vec<isize> = contiguous_strides(&in_shape).into_iter().map(|s| s as isize).collect();
        let input = self.slot_of(x)?;
        let mut offset = 0;
        for (i, &size) in sizes.iter().enumerate() {
            let v = graph.node(node).outputs[i];
            let shape = graph.fact(v).shape.clone();
            let out = self.result_slot(v);
            self.copy_step(node, out, input, shape.clone(), 0, contiguous_strides(&shape), offset * in_strides[a] as usize, in_strides.clone());
            offset += size;
        }
        Ok(())
    }

    fn gather(&mut self, node: NodeId, axis: i64) -> SelectResult {
        let graph = self.graph;
        let x = self.operand(node, 0)?;
        let indices = graph.konst(self.operand(node, 1)?).ok_or("Gather indices must be constants")?.clone();
        if indices.shape().len() > 1 {
            return Err("Gather with indices of rank > 1 has no kernel".into());
        }
        let idx = indices.to_i64_vec();
        if idx.len() > 64 {
            return Err("Gather of more than 64 indices has no kernel".into());
        }
        let in_shape = graph.fact(x).shape.clone();
        let a = if axis < 0 { axis + in_shape.len() as i64 } else { axis } as usize;
        let base = contiguous_strides(&in_shape);

        // Each index copies one slab (the input without axis `a`) into the
        // output laid out as [outer dims, index, inner dims].
        let (outer_shape, inner_shape) = (&in_shape[..a], &in_shape[a + 1..]);
        let inner: usize = inner_shape.iter().product();
        let slab_shape: Vec<usize> = outer_shape.iter().chain(inner_shape).copied().collect();
        let slab_strides: Vec<isize> =
            base.iter().enumerate().filter(|(i, _)| *i != a).map(|(_, &s)| s as isize).collect();
        let out_strides: Vec<usize> = contiguous_strides(outer_shape)
            .iter()
            .map(|s| s * idx.len() * inner)
            .chain(contiguous_strides(inner_shape))
            .collect();
        let input = self.slot_of(x)?;
        let out = self.result_slot(graph.node(node).outputs[0]);
        for (j, &i) in idx.iter().enumerate() {
            let i = if i < 0 { i + in_shape[a] as i64 } else { i };
            if i < 0 || i >= in_shape[a] as i64 {
                return Err(format!("index {i} is out of range for dimension {}", in_shape[a]));
            }
            self.copy_step(node, out, input, slab_shape.clone(), j * inner, out_strides.clone(), i as usize * base[a], slab_strides.clone());
        }
        Ok(())
    }

    fn expand(&mut self, node: NodeId) -> SelectResult {
        let x = self.operand(node, 0)?;
        let out_shape = self.graph.fact(self.graph.node(node).outputs[0]).shape.clone();
        let strides = broadcast_strides(&self.graph.fact(x).shape, &out_shape).into_iter().map(|s| s as isize).collect();
        let input = self.slot_of(x)?;
        let out = self.result_slot(self.graph.node(node).outputs[0]);
        self.copy_step(node, out, input, out_shape.clone(), 0, contiguous_strides(&out_shape), 0, strides);
        Ok(())
    }
}

mod conv;
mod quant;
pub mod sparse;
