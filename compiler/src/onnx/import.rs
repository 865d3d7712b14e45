//! Building the graph IR from an ONNX model.
//!
//! Phase 1 of 4: check every node's operator against the importer's table
//! and report all unsupported ones together.
//! Phase 2 of 4: bind the graph inputs' dynamic dimensions (from
//! `--input-shape`, or batch 1 for a leading symbolic dimension) and add
//! initializers as constants.
//! Phase 3 of 4: import nodes in dependency order. Each node's results get
//! their facts from the shape rules, and constant operands are evaluated at
//! compile time, which resolves the shape subgraphs of dynamic-batch exports.
//! Phase 4 of 4: check the declared outputs against the inferred facts.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;

use onnx_protobuf::{GraphProto, NodeProto, ValueInfoProto};

use super::attrs::Attrs;
use super::load::{OnnxModel, normalize_domain};
use super::ops;
use super::tensor::{DEFAULT_MAX_TENSOR_BYTES, decode_tensor};
use crate::error::{Error, Result, UnsupportedOp};
use crate::ir::derive::derive_facts_with;

/// Total bytes of intermediate results that import computes at compile
/// time; past it, results keep their shapes but are computed at run time.
/// Shape subgraphs need a few kilobytes; weight transformations more.
const FOLD_BUDGET_BYTES: u64 = 1 << 30;
use crate::ir::{Fact, Graph, Op, ValueId};
use crate::tensor::{DType, ShapeDisplay, Tensor};

/// Settings of the import.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// Concrete shapes for graph inputs, by input name.
    pub input_shapes: HashMap<String, Vec<usize>>,
    /// Value for a symbolic leading (batch) dimension without a given shape.
    pub default_batch: usize,
    /// Largest tensor, in bytes, that the importer will allocate.
    pub max_tensor_bytes: u64,
    /// Largest number of nodes accepted.
    pub max_nodes: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            input_shapes: HashMap::new(),
            default_batch: 1,
            max_tensor_bytes: DEFAULT_MAX_TENSOR_BYTES,
            max_nodes: 1_000_000,
        }
    }
}

/// Loads and imports the model at `path`.
pub fn import_file(path: &Path, options: &ImportOptions) -> Result<Graph> {
    let model = OnnxModel::load(path)?;
    import_model(&model, options)
}

/// Imports a parsed model.
pub fn import_model(model: &OnnxModel, options: &ImportOptions) -> Result<Graph> {
    let opset = model.default_opset()?;
    let graph_proto = model.proto.graph.as_ref().expect("OnnxModel::load checks that the graph exists");
    if graph_proto.node.len() > options.max_nodes {
        return Err(Error::Limit(format!(
            "the graph has {} nodes, more than the limit of {}",
            graph_proto.node.len(),
            options.max_nodes
        )));
    }

    if !(ops::MIN_OPSET..=ops::MAX_OPSET).contains(&opset) {
        return Err(Error::Model(format!(
            "{} imports default-domain opset {opset}; vitc supports opsets {} to {}. Re-export the model at a supported opset",
            model.path.display(),
            ops::MIN_OPSET,
            ops::MAX_OPSET
        )));
    }

    // Phase 1 of 4: report every unsupported operator at once.
    let unsupported: Vec<UnsupportedOp> = graph_proto
        .node
        .iter()
        .filter_map(|node| {
            let domain = normalize_domain(&node.domain);
            let node_opset = model.opset_of(domain).unwrap_or(0);
            let reason = if domain.is_empty() { ops::check_supported(node, opset) } else { Some(Unsupported::Domain) };
            reason.map(|r| UnsupportedOp {
                node: node_label(node),
                op_type: node.op_type.clone(),
                domain: node.domain.clone(),
                opset: node_opset,
                reason: r.message(),
            })
        })
        .collect();
    if !unsupported.is_empty() {
        return Err(Error::Unsupported(unsupported));
    }

    let mut builder = Builder { graph: Graph::new(), folded_bytes: 0, names: HashMap::new(), model_dir: &model.dir, options, opset };

    // Phase 2 of 4: constants and inputs.
    for init in &graph_proto.initializer {
        let tensor = decode_tensor(init, &model.dir, options.max_tensor_bytes)?;
        warn_non_finite(&init.name, &tensor);
        let v = builder.graph.add_constant(init.name.clone(), Arc::new(tensor));
        builder.names.insert(init.name.clone(), v);
    }
    if !graph_proto.sparse_initializer.is_empty() {
        return Err(Error::Model("the model has sparse initializers, which vitc does not support".into()));
    }
    builder.bind_inputs(graph_proto)?;

    // Phase 3 of 4: nodes.
    for index in dependency_order(graph_proto, &builder.names)? {
        builder.import_node(&graph_proto.node[index])?;
    }

    // Phase 4 of 4: outputs.
    let mut outputs = Vec::new();
    for output in &graph_proto.output {
        let v = builder.lookup(&output.name).ok_or_else(|| {
            Error::Model(format!("graph output '{}' is not produced by any node, input or initializer", output.name))
        })?;
        check_declared(output, builder.graph.fact(v), "output")?;
        outputs.push(v);
    }
    builder.graph.set_outputs(outputs);
    builder.graph.remove_dead_nodes();
    Ok(builder.graph)
}

/// Reason a node cannot be imported.
pub enum Unsupported {
    /// A non-default operator domain (e.g. `com.microsoft`).
    Domain,
    /// An op type the importer has no mapping for.
    OpType,
    /// Known op type, but not at this opset or with these attributes.
    Variant(String),
}

impl Unsupported {
    fn message(self) -> Option<String> {
        match self {
            Unsupported::Domain => Some("only operators of the default ai.onnx domain are supported".into()),
            Unsupported::OpType => None,
            Unsupported::Variant(text) => Some(text),
        }
    }
}

/// Orders node indices so that every node comes after its operands'
/// producers. ONNX requires files to be sorted already; this also accepts
/// unsorted ones and rejects cycles and undefined operands.
fn dependency_order(graph: &GraphProto, known: &HashMap<String, ValueId>) -> Result<Vec<usize>> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, node) in graph.node.iter().enumerate() {
        for output in node.output.iter().filter(|o| !o.is_empty()) {
            if producer.insert(output.as_str(), i).is_some() || known.contains_key(output.as_str()) {
                return Err(Error::node(
                    node.name.as_str(),
                    node.op_type.as_str(),
                    format!("output '{output}' is defined more than once in the graph; ONNX requires unique value names"),
                ));
            }
        }
    }
    let inputs: HashSet<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
    let mut waiting_on = vec![0usize; graph.node.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); graph.node.len()];
    for (i, node) in graph.node.iter().enumerate() {
        for input in node.input.iter().filter(|n| !n.is_empty()) {
            if let Some(&p) = producer.get(input.as_str()) {
                waiting_on[i] += 1;
                dependents[p].push(i);
            } else if !known.contains_key(input.as_str()) && !inputs.contains(input.as_str()) {
                return Err(Error::node(
                    node.name.as_str(),
                    node.op_type.as_str(),
                    format!("operand '{input}' is not produced by any node, input or initializer"),
                ));
            }
        }
    }
    let mut ready: VecDeque<usize> = (0..graph.node.len()).filter(|&i| waiting_on[i] == 0).collect();
    let mut order = Vec::with_capacity(graph.node.len());
    while let Some(i) = ready.pop_front() {
        order.push(i);
        for &d in &dependents[i] {
            waiting_on[d] -= 1;
            if waiting_on[d] == 0 {
                ready.push_back(d);
            }
        }
    }
    if order.len() != graph.node.len() {
        let stuck = (0..graph.node.len()).find(|&i| waiting_on[i] > 0).expect("some node is waiting");
        let node = &graph.node[stuck];
        return Err(Error::node(node.name.as_str(), node.op_type.as_str(), "the node is part of a cycle; ONNX graphs must be acyclic"));
    }
    Ok(order)
}

/// Checks a declared input or output type against the fact vitc derived.
fn check_declared(info: &ValueInfoProto, fact: &Fact, what: &str) -> Result<()> {
    let Some(declared) = declared_tensor_type(info) else { return Ok(()) };
    let (elem_type, dims) = declared;
    if elem_type != 0 && DType::from_onnx(elem_type) != Some(fact.dtype) {
        return Err(Error::Model(format!(
            "graph {what} '{}' is declared as {} but computes {}",
            info.name,
            DType::onnx_name(elem_type),
            fact.dtype
        )));
    }
    if let Some(dims) = dims {
        let mismatch = dims.len() != fact.rank()
            || dims.iter().zip(&fact.shape).any(|(d, &s)| matches!(d, Some(d) if *d != s as i64));
        if mismatch {
            return Err(Error::Model(format!(
                "graph {what} '{}' is declared with shape {} but computes {}",
                info.name,
                format_dims(&dims),
                ShapeDisplay(&fact.shape)
            )));
        }
    }
    Ok(())
}

type DeclaredDims = Option<Vec<Option<i64>>>;

/// The element type and dims (`None` for a symbolic dim) of a tensor type.
fn declared_tensor_type(info: &ValueInfoProto) -> Option<(i32, DeclaredDims)> {
    use onnx_protobuf::tensor_shape_proto::dimension::Value as Dim;
    use onnx_protobuf::type_proto::Value as Type;
    let tensor = match info.type_.as_ref()?.value.as_ref()? {
        Type::TensorType(t) => t,
        _ => return None,
    };
    let dims = tensor.shape.as_ref().map(|shape| {
        shape
            .dim
            .iter()
            .map(|d| match &d.value {
                Some(Dim::DimValue(v)) => Some(*v),
                _ => None,
            })
            .collect()
    });
    Some((tensor.elem_type, dims))
}

fn format_dims(dims: &[Option<i64>]) -> String {
    let parts: Vec<String> = dims.iter().map(|d| d.map_or("?".to_string(), |v| v.to_string())).collect();
    format!("[{}]", parts.join(","))
}

/// The verb for a size limit message: an empty tensor needs no bytes, but
/// its nonzero axes are still checked.
fn needs(fact: &Fact) -> &'static str {
    if fact.numel() == 0 { "is empty, but its nonzero axes alone need" } else { "needs" }
}

/// Logs a warning when weight `name` holds NaN or infinite values, which
/// usually come from a broken export or training run and make every output
/// that depends on them NaN or infinite.
pub(crate) fn warn_non_finite(name: &str, tensor: &Tensor) {
    let count = tensor.count_non_finite();
    if count > 0 {
        tracing::warn!(
            "weight '{name}' contains {count} NaN or infinite value(s) out of {}; outputs that depend on it may be NaN. \
             Check the export, unless the model uses infinities on purpose (for example -inf in an attention mask)",
            tensor.len()
        );
    }
}

/// Returns the node's name, or its first output's name when the exporter left it empty.
pub(crate) fn node_label(node: &NodeProto) -> String {
    if !node.name.is_empty() {
        return node.name.clone();
    }
    match node.output.first() {
        Some(output) if !output.is_empty() => format!("<unnamed, output '{output}'>"),
        _ => "<unnamed>".to_string(),
    }
}

/// State of an import in progress.
pub(crate) struct Builder<'a> {
    pub graph: Graph,
    /// Bytes of data computed at compile time so far.
    folded_bytes: u64,
    names: HashMap<String, ValueId>,
    pub model_dir: &'a Path,
    pub options: &'a ImportOptions,
    pub opset: i64,
}

impl Builder<'_> {
    fn lookup(&self, name: &str) -> Option<ValueId> {
        self.names.get(name).copied()
    }

    /// Adds the graph inputs with their bound shapes. Inputs that are also
    /// initializers (allowed before IR version 4) stay constants.
    fn bind_inputs(&mut self, graph: &GraphProto) -> Result<()> {
        let declared: HashSet<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
        for name in self.options.input_shapes.keys() {
            if !declared.contains(name.as_str()) {
                return Err(Error::Input {
                    input: name.clone(),
                    message: format!(
                        "--input-shape names an input the model does not have; its inputs are: {}",
                        graph.input.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                });
            }
        }
        for input in &graph.input {
            if self.names.contains_key(&input.name) {
                continue;
            }
            let fact = self.bind_input(input)?;
            let bytes = fact.bytes_bound();
            if bytes > self.options.max_tensor_bytes {
                return Err(Error::Input {
                    input: input.name.clone(),
                    message: format!(
                        "shape {fact} {} {bytes} bytes, more than the limit of {} bytes; raise the limit (--max-tensor-mib) or bind a smaller shape",
                        needs(&fact),
                        self.options.max_tensor_bytes
                    ),
                });
            }
            let v = self.graph.add_input(input.name.clone(), fact);
            self.names.insert(input.name.clone(), v);
        }
        Ok(())
    }

    fn bind_input(&self, input: &ValueInfoProto) -> Result<Fact> {
        let err = |message: String| Error::Input { input: input.name.clone(), message };
        let (elem_type, dims) =
            declared_tensor_type(input).ok_or_else(|| err("the input is not a tensor; vitc supports tensor inputs only".into()))?;
        let dtype = DType::from_onnx(elem_type)
            .ok_or_else(|| err(format!("element type {} is not supported", DType::onnx_name(elem_type))))?;

        if let Some(given) = self.options.input_shapes.get(&input.name) {
            if let Some(dims) = &dims {
                let compatible = dims.len() == given.len()
                    && dims.iter().zip(given).all(|(d, &g)| d.is_none_or(|d| d == g as i64));
                if !compatible {
                    return Err(err(format!(
                        "--input-shape gives {} but the model declares {}",
                        ShapeDisplay(given),
                        format_dims(dims)
                    )));
                }
            }
            return Ok(Fact::new(dtype, given.clone()));
        }

        let dims = dims.ok_or_else(|| err("the model declares no shape for this input; give one with --input-shape NAME=D0,D1,..".into()))?;
        let mut shape = Vec::with_capacity(dims.len());
        for (axis, dim) in dims.iter().enumerate() {
            match dim {
                Some(d) if *d >= 0 => shape.push(*d as usize),
                Some(d) => return Err(err(format!("dimension {axis} is declared as {d}, which is negative"))),
                None if axis == 0 => shape.push(self.options.default_batch),
                None => {
                    return Err(err(format!(
                        "dimension {axis} is symbolic ({}); bind it with --input-shape {}=..",
                        format_dims(&dims),
                        input.name
                    )));
                }
            }
        }
        Ok(Fact::new(dtype, shape))
    }

    fn import_node(&mut self, node: &NodeProto) -> Result<()> {
        let inputs = node
            .input
            .iter()
            .map(|name| {
                if name.is_empty() {
                    return Ok(None);
                }
                self.lookup(name).map(Some).ok_or_else(|| {
                    Error::node(
                        node.name.as_str(),
                        node.op_type.as_str(),
                        format!("operand '{name}' is an optional output that vitc does not compute (a training output)"),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut cx = NodeCx { node, attrs: Attrs::new(node), inputs, builder: self };
        ops::import(&mut cx)
    }
}

/// The node being imported, its resolved operands and the builder.
pub(crate) struct NodeCx<'a, 'b> {
    pub node: &'a NodeProto,
    pub attrs: Attrs<'a>,
    pub inputs: Vec<Option<ValueId>>,
    pub builder: &'a mut Builder<'b>,
}

impl NodeCx<'_, '_> {
    pub fn opset(&self) -> i64 {
        self.builder.opset
    }

    pub fn err(&self, message: impl Into<String>) -> Error {
        Error::node(node_label(self.node), self.node.op_type.as_str(), message)
    }

    /// Required operand `i`.
    pub fn input(&self, i: usize) -> Result<ValueId> {
        self.inputs.get(i).copied().flatten().ok_or_else(|| self.err(format!("required operand {i} is missing")))
    }

    /// Optional operand `i`.
    pub fn opt_input(&self, i: usize) -> Option<ValueId> {
        self.inputs.get(i).copied().flatten()
    }

    pub fn fact(&self, v: ValueId) -> &Fact {
        self.builder.graph.fact(v)
    }

    /// The compile-time data of optional operand `i`; an error if the operand
    /// is present but not constant.
    pub fn const_input(&self, i: usize, what: &str) -> Result<Option<Arc<Tensor>>> {
        match self.opt_input(i) {
            None => Ok(None),
            Some(v) => match &self.fact(v).konst {
                Some(t) => Ok(Some(t.clone())),
                None => Err(self.err(format!(
                    "operand {i} ({what}) is not a compile-time constant; vitc needs it to be known. Bind dynamic input dimensions with --input-shape"
                ))),
            },
        }
    }

    /// Adds a constant created by the importer (e.g. an attribute moved to an operand).
    pub fn constant(&mut self, suffix: &str, tensor: Tensor) -> ValueId {
        let name = format!("{}/{suffix}", self.node.name);
        self.builder.graph.add_constant(name, Arc::new(tensor))
    }

    /// Adds `op` on `inputs` as an intermediate node; returns its results.
    pub fn emit_hidden(&mut self, op: Op, inputs: Vec<Option<ValueId>>, suffix: &str) -> Result<Vec<ValueId>> {
        let facts = {
            let input_facts: Vec<Option<&Fact>> = inputs.iter().map(|v| v.map(|v| self.builder.graph.fact(v))).collect();
            let fold = self.builder.folded_bytes < FOLD_BUDGET_BYTES;
            derive_facts_with(&op, &input_facts, fold).map_err(|e| e.at(&node_label(self.node), &self.node.op_type))?
        };
        self.check_sizes(&facts)?;
        self.builder.folded_bytes += facts.iter().filter(|f| f.konst.is_some()).map(|f| (f.numel() * f.dtype.size_bytes()) as u64).sum::<u64>();
        let name = if suffix.is_empty() { self.node.name.clone() } else { format!("{}/{suffix}", self.node.name) };
        let outputs: Vec<(String, Fact)> =
            facts.into_iter().enumerate().map(|(i, f)| (format!("{name}:{i}"), f)).collect();
        let node = self.builder.graph.add_node(op, name, inputs, outputs);
        Ok(self.builder.graph.node(node).outputs.clone())
    }

    /// Rejects results larger than the configured tensor limit before
    /// anything of that size is allocated (at compile time or at run time).
    fn check_sizes(&self, facts: &[Fact]) -> Result<()> {
        for fact in facts {
            let bytes = fact.bytes_bound();
            if bytes > self.builder.options.max_tensor_bytes {
                return Err(Error::Limit(format!(
                    "node '{}' ({}) produces a {fact} tensor that {} {bytes} bytes, more than the limit of {} bytes",
                    node_label(self.node),
                    self.node.op_type,
                    needs(fact),
                    self.builder.options.max_tensor_bytes
                )));
            }
        }
        Ok(())
    }

    /// Adds `op` on `inputs` as the node itself: its results take the ONNX
    /// output names. ONNX outputs beyond those `op` produces must be unused
    /// (e.g. Dropout's mask), which is checked when another node reads them.
    pub fn emit(&mut self, op: Op, inputs: Vec<Option<ValueId>>) -> Result<()> {
        let results = self.emit_hidden(op, inputs, "")?;
        self.bind_outputs(&results)
    }

    /// Gives the node's ONNX output names to `results`.
    pub fn bind_outputs(&mut self, results: &[ValueId]) -> Result<()> {
        for (i, name) in self.node.output.iter().enumerate() {
            if name.is_empty() {
                continue;
            }
            let Some(&v) = results.get(i) else {
                // An optional output vitc does not compute; a node that reads
                // it fails in import_node with a message saying so.
                continue;
            };
            self.builder.graph.value_mut(v).name = name.clone();
            self.builder.names.insert(name.clone(), v);
        }
        Ok(())
    }

    /// Makes the node an alias of an existing value (e.g. Identity, Dropout).
    pub fn alias(&mut self, v: ValueId) -> Result<()> {
        self.emit(Op::Identity, vec![Some(v)])
    }
}
