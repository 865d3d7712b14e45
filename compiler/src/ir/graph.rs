//! The dataflow graph: nodes on a `petgraph::StableGraph`, values in an arena.
//!
//! Every value is produced by exactly one node: graph inputs by an `Input`
//! node, weights by a `Constant` node. An edge `producer -> consumer` carries
//! the value and the consumer's operand slot, and mirrors
//! [`Node::inputs`]; the mutation methods here keep the two in step, and the
//! verifier checks that they agree.
//!
//! `StableGraph` keeps node indices valid across removals, so a [`NodeId`]
//! held by a pass stays meaningful while the pass edits the graph.

use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::sync::Arc;

use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableGraph};
use petgraph::visit::EdgeRef;

use super::op::Op;
use super::quant::QuantParams;
use crate::error::{Error, Result};
use crate::tensor::{DType, ShapeDisplay, Tensor};

/// Identifies a node; printed as `n12`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub(crate) NodeIndex<u32>);

/// Identifies a value; printed as `v12`, the spelling in the text IR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub(crate) u32);

impl NodeId {
    pub fn index(self) -> usize {
        self.0.index()
    }
}

impl ValueId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0.index())
    }
}

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// Knowledge about a value: element type, concrete shape, its data when the
/// value is computable at compile time, and how a quantized value maps back
/// to real numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct Fact {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub konst: Option<Arc<Tensor>>,
    pub quant: Option<QuantParams>,
}

impl Fact {
    pub fn new(dtype: DType, shape: Vec<usize>) -> Fact {
        Fact { dtype, shape, konst: None, quant: None }
    }

    /// The fact of a known tensor.
    pub fn of_tensor(tensor: Arc<Tensor>) -> Fact {
        Fact { dtype: tensor.dtype(), shape: tensor.shape().to_vec(), konst: Some(tensor), quant: None }
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements; saturates at `usize::MAX` instead of overflowing
    /// (the shape rules reject shapes that large).
    pub fn numel(&self) -> usize {
        self.shape.iter().fold(1usize, |acc, &d| acc.saturating_mul(d))
    }

    /// Upper bound on the bytes of a tensor with these facts (see
    /// [`crate::tensor::bytes_bound`]).
    pub fn bytes_bound(&self) -> u64 {
        crate::tensor::bytes_bound(self.dtype, &self.shape)
    }

    /// Whether dtype and shape agree (constant data is not compared).
    pub fn same_type(&self, other: &Fact) -> bool {
        self.dtype == other.dtype && self.shape == other.shape
    }
}

impl fmt::Display for Fact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, ShapeDisplay(&self.shape))?;
        if let Some(quant) = &self.quant {
            write!(f, " {quant}")?;
        }
        Ok(())
    }
}

/// An operation with its operands and results.
#[derive(Clone, Debug)]
pub struct Node {
    pub op: Op,
    /// The ONNX node name (or a name given by the pass that created it).
    pub name: String,
    /// Operands in ONNX order; `None` is an absent optional operand.
    pub inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<ValueId>,
}

/// A value: one result of one node.
#[derive(Clone, Debug)]
pub struct Value {
    /// The ONNX value name, kept for messages and for matching external weights.
    pub name: String,
    pub fact: Fact,
    pub producer: NodeId,
}

/// Weight of an edge: which value flows and into which operand slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Use {
    pub value: ValueId,
    pub slot: u32,
}

/// A model's dataflow graph.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub(crate) nodes: StableGraph<Node, Use, petgraph::Directed, u32>,
    values: Vec<Option<Value>>,
    inputs: Vec<ValueId>,
    outputs: Vec<ValueId>,
}

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    // Lookup.

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id.0]
    }

    pub fn contains_node(&self, id: NodeId) -> bool {
        self.nodes.contains_node(id.0)
    }

    pub fn value(&self, id: ValueId) -> &Value {
        self.values[id.index()].as_ref().unwrap_or_else(|| panic!("Graph::value: {id} was removed"))
    }

    pub fn value_mut(&mut self, id: ValueId) -> &mut Value {
        self.values[id.index()].as_mut().unwrap_or_else(|| panic!("Graph::value_mut: {id} was removed"))
    }

    pub fn contains_value(&self, id: ValueId) -> bool {
        self.values.get(id.index()).is_some_and(|v| v.is_some())
    }

    pub fn fact(&self, id: ValueId) -> &Fact {
        &self.value(id).fact
    }

    /// Constant data of a value, if it is known at compile time.
    pub fn konst(&self, id: ValueId) -> Option<&Arc<Tensor>> {
        self.value(id).fact.konst.as_ref()
    }

    pub fn producer(&self, id: ValueId) -> &Node {
        self.node(self.value(id).producer)
    }

    pub fn inputs(&self) -> &[ValueId] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[ValueId] {
        &self.outputs
    }

    pub fn node_count(&self) -> usize {
        self.nodes.node_count()
    }

    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes.node_indices().map(NodeId)
    }

    pub fn value_ids(&self) -> impl Iterator<Item = ValueId> + '_ {
        self.values.iter().enumerate().filter(|(_, v)| v.is_some()).map(|(i, _)| ValueId(i as u32))
    }

    /// The consumers of `value` as `(node, operand slot)`, in node order.
    pub fn users(&self, value: ValueId) -> Vec<(NodeId, usize)> {
        let producer = self.value(value).producer;
        let mut users: Vec<(NodeId, usize)> = self
            .nodes
            .edges_directed(producer.0, Direction::Outgoing)
            .filter(|e| e.weight().value == value)
            .map(|e| (NodeId(e.target()), e.weight().slot as usize))
            .collect();
        users.sort();
        users
    }

    /// Number of uses, counting each operand slot and each graph output.
    pub fn use_count(&self, value: ValueId) -> usize {
        self.users(value).len() + self.outputs.iter().filter(|&&o| o == value).count()
    }

    pub fn is_graph_output(&self, value: ValueId) -> bool {
        self.outputs.contains(&value)
    }

    /// The node that produces operand `slot` of `node`, if that operand is present.
    pub fn operand_producer(&self, node: NodeId, slot: usize) -> Option<NodeId> {
        let v = (*self.node(node).inputs.get(slot)?)?;
        Some(self.value(v).producer)
    }

    // Construction.

    fn new_value(&mut self, name: String, fact: Fact, producer: NodeId) -> ValueId {
        let id = ValueId(self.values.len() as u32);
        self.values.push(Some(Value { name, fact, producer }));
        id
    }

    /// Adds a node whose results have the given names and facts; returns the node.
    pub fn add_node(
        &mut self,
        op: Op,
        name: impl Into<String>,
        inputs: Vec<Option<ValueId>>,
        outputs: Vec<(String, Fact)>,
    ) -> NodeId {
        let node = NodeId(self.nodes.add_node(Node { op, name: name.into(), inputs: inputs.clone(), outputs: vec![] }));
        let output_ids: Vec<ValueId> =
            outputs.into_iter().map(|(value_name, fact)| self.new_value(value_name, fact, node)).collect();
        self.nodes[node.0].outputs = output_ids;
        for (slot, input) in inputs.iter().enumerate() {
            if let Some(v) = input {
                let producer = self.value(*v).producer;
                self.nodes.add_edge(producer.0, node.0, Use { value: *v, slot: slot as u32 });
            }
        }
        node
    }

    /// Adds a single-result node; returns its result.
    pub fn add_simple(&mut self, op: Op, name: impl Into<String>, inputs: Vec<Option<ValueId>>, fact: Fact) -> ValueId {
        let name = name.into();
        let node = self.add_node(op, name.clone(), inputs, vec![(name, fact)]);
        self.node(node).outputs[0]
    }

    /// Adds a graph input.
    pub fn add_input(&mut self, name: impl Into<String>, fact: Fact) -> ValueId {
        let name = name.into();
        let v = self.add_simple(Op::Input, name.clone(), vec![], fact);
        self.inputs.push(v);
        v
    }

    /// Adds a constant node holding `tensor`.
    pub fn add_constant(&mut self, name: impl Into<String>, tensor: Arc<Tensor>) -> ValueId {
        self.add_simple(Op::Constant, name, vec![], Fact::of_tensor(tensor))
    }

    pub fn set_outputs(&mut self, outputs: Vec<ValueId>) {
        self.outputs = outputs;
    }

    // Mutation.

    /// Replaces operand `slot` of `node` by `value`.
    pub fn set_input(&mut self, node: NodeId, slot: usize, value: Option<ValueId>) {
        let old_edges: Vec<_> = self
            .nodes
            .edges_directed(node.0, Direction::Incoming)
            .filter(|e| e.weight().slot as usize == slot)
            .map(|e| e.id())
            .collect();
        for e in old_edges {
            self.nodes.remove_edge(e);
        }
        self.nodes[node.0].inputs[slot] = value;
        if let Some(v) = value {
            let producer = self.value(v).producer;
            self.nodes.add_edge(producer.0, node.0, Use { value: v, slot: slot as u32 });
        }
    }

    /// Makes every user of `old` (and the graph outputs) use `new` instead.
    pub fn replace_all_uses(&mut self, old: ValueId, new: ValueId) {
        if old == new {
            return;
        }
        for (node, slot) in self.users(old) {
            self.set_input(node, slot, Some(new));
        }
        if self.outputs.contains(&old) && !self.inputs.contains(&new) {
            // The graph output keeps its ONNX name, which headers and reports show.
            let name = self.value(old).name.clone();
            self.value_mut(new).name = name;
        }
        for output in &mut self.outputs {
            if *output == old {
                *output = new;
            }
        }
    }

    /// Removes `node` and its results. The results must have no users left.
    pub fn remove_node(&mut self, node: NodeId) {
        let outputs = self.node(node).outputs.clone();
        for v in &outputs {
            debug_assert!(self.use_count(*v) == 0, "Graph::remove_node: {v} still has users");
        }
        self.nodes.remove_node(node.0);
        for v in outputs {
            self.values[v.index()] = None;
        }
    }

    /// Replaces a single-result node by a constant holding `tensor`, keeping
    /// the value's name; returns the new value.
    pub fn replace_with_constant(&mut self, value: ValueId, tensor: Arc<Tensor>) -> ValueId {
        let name = self.value(value).name.clone();
        let constant = self.add_constant(name, tensor);
        self.replace_all_uses(value, constant);
        constant
    }

    /// Removes every node whose results are unused and that is not a graph
    /// input; returns how many were removed.
    pub fn remove_dead_nodes(&mut self) -> usize {
        let mut removed = 0;
        let order = self.topo_order();
        for node in order.into_iter().rev() {
            let n = self.node(node);
            if matches!(n.op, Op::Input) {
                continue;
            }
            if n.outputs.iter().all(|v| self.use_count(*v) == 0) {
                self.remove_node(node);
                removed += 1;
            }
        }
        removed
    }

    /// Nodes in a deterministic topological order: among ready nodes, the
    /// one created first goes first, so the order follows the ONNX file.
    pub fn topo_order(&self) -> Vec<NodeId> {
        let mut indegree: HashMap<NodeIndex<u32>, usize> = HashMap::new();
        for n in self.nodes.node_indices() {
            indegree.insert(n, self.nodes.edges_directed(n, Direction::Incoming).count());
        }
        let mut ready: BinaryHeap<std::cmp::Reverse<NodeIndex<u32>>> =
            indegree.iter().filter(|(_, d)| **d == 0).map(|(n, _)| std::cmp::Reverse(*n)).collect();
        let mut order = Vec::with_capacity(indegree.len());
        while let Some(std::cmp::Reverse(n)) = ready.pop() {
            order.push(NodeId(n));
            for e in self.nodes.edges_directed(n, Direction::Outgoing) {
                let d = indegree.get_mut(&e.target()).expect("edge target is a node");
                *d -= 1;
                if *d == 0 {
                    ready.push(std::cmp::Reverse(e.target()));
                }
            }
        }
        order
    }

    /// Whether the graph has a cycle (the verifier rejects such graphs).
    pub fn has_cycle(&self) -> bool {
        self.topo_order().len() != self.nodes.node_count()
    }

    /// Looks a graph input up by name.
    pub fn input_named(&self, name: &str) -> Result<ValueId> {
        self.inputs.iter().copied().find(|v| self.value(*v).name == name).ok_or_else(|| Error::Input {
            input: name.to_string(),
            message: format!(
                "the model has no such input; its inputs are: {}",
                self.inputs.iter().map(|v| self.value(*v).name.as_str()).collect::<Vec<_>>().join(", ")
            ),
        })
    }
}
