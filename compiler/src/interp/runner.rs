//! Execution of a whole graph with the reference kernels.
//!
//! The runner visits nodes in [`Graph::topo_order`]. Graph inputs come
//! from the caller and are checked against their facts, and constants come
//! from the value facts, shared rather than copied. Every other node runs
//! [`eval_op`], and its results are checked against their facts too, so a
//! wrong inferred shape shows up at the node that produced it.
//!
//! Memory: the runner counts each value's uses up front and drops an
//! intermediate tensor as soon as its last consumer has run. Graph outputs
//! and tapped values are held until the end.

use std::collections::HashMap;
use std::sync::Arc;

use super::eval_op;
use crate::error::{Error, Result};
use crate::ir::op::Op;
use crate::ir::{Graph, Node, ValueId};
use crate::map_tensor_same;
use crate::tensor::{ShapeDisplay, Tensor};

/// Runs `graph` on `inputs` (one tensor per graph input, in any order) and
/// returns the graph outputs in order.
pub fn run(graph: &Graph, inputs: &[(ValueId, Tensor)]) -> Result<Vec<Tensor>> {
    Ok(run_with_taps(graph, inputs, &[])?.0)
}

/// Like [`run`], and also returns the values listed in `taps`, in the same
/// order, for example to calibrate quantization on intermediate activations.
pub fn run_with_taps(
    graph: &Graph,
    inputs: &[(ValueId, Tensor)],
    taps: &[ValueId],
) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
    for &tap in taps {
        if !graph.contains_value(tap) {
            return Err(Error::Internal(format!("cannot tap {tap}: the graph has no such value")));
        }
    }
    let mut provided = bind_inputs(graph, inputs)?;
    let mut remaining_uses = count_uses(graph, taps);
    let order = graph.topo_order();
    if order.len() != graph.node_count() {
        return Err(Error::Model("the graph has a cycle, so it cannot be executed".into()));
    }

    let mut live: HashMap<ValueId, Arc<Tensor>> = HashMap::new();
    for node_id in order {
        let node = graph.node(node_id);
        let results = execute_node(graph, node, &live, &mut provided)?;

        // Release operands whose last use this was.
        for value in node.inputs.iter().flatten() {
            if let Some(count) = remaining_uses.get_mut(value) {
                *count -= 1;
                if *count == 0 {
                    live.remove(value);
                }
            }
        }

        // Keep only the results that something still reads.
        for (&value, tensor) in node.outputs.iter().zip(results) {
            if remaining_uses.get(&value).copied().unwrap_or(0) > 0 {
                live.insert(value, tensor);
            }
        }
    }

    let collect = |values: &[ValueId]| -> Result<Vec<Tensor>> {
        values
            .iter()
            .map(|v| {
                let tensor = live.get(v).ok_or_else(|| Error::Internal(format!("value {v} was never computed")))?;
                Ok(standard_layout(tensor))
            })
            .collect()
    };
    Ok((collect(graph.outputs())?, collect(taps)?))
}

/// Runs one node and returns its results.
fn execute_node(
    graph: &Graph,
    node: &Node,
    live: &HashMap<ValueId, Arc<Tensor>>,
    provided: &mut HashMap<ValueId, Tensor>,
) -> Result<Vec<Arc<Tensor>>> {
    match node.op {
        Op::Input => {
            let value = node.outputs[0];
            let tensor =
                provided.remove(&value).ok_or_else(|| Error::Internal(format!("input {value} was bound twice")))?;
            Ok(vec![Arc::new(tensor)])
        }
        Op::Constant => {
            let value = node.outputs[0];
            let tensor = graph.konst(value).ok_or_else(|| {
                Error::Internal(format!("constant node '{}' has no data in the fact of its value {value}", node.name))
            })?;
            Ok(vec![Arc::clone(tensor)])
        }
        _ => {
            let mut operands: Vec<Option<&Tensor>> = Vec::with_capacity(node.inputs.len());
            for slot in &node.inputs {
                let operand = match slot {
                    Some(v) => Some(live.get(v).map(|t| t.as_ref()).ok_or_else(|| {
                        Error::Internal(format!(
                            "node '{}' reads {v} before it is computed or after it was freed",
                            node.name
                        ))
                    })?),
                    None => None,
                };
                operands.push(operand);
            }
            let results = eval_op(&node.op, &operands).map_err(|e| e.at(&node.name, node.op.name()))?;
            check_results(graph, node, &results)?;
            Ok(results.into_iter().map(Arc::new).collect())
        }
    }
}

/// Checks the kernel's results against the node's output facts.
fn check_results(graph: &Graph, node: &Node, results: &[Tensor]) -> Result<()> {
    if results.len() != node.outputs.len() {
        return Err(Error::node(
            &node.name,
            node.op.name(),
            format!("the kernel returned {} results, but the node has {} outputs", results.len(), node.outputs.len()),
        ));
    }
    for (&value, tensor) in node.outputs.iter().zip(results) {
        let fact = graph.fact(value);
        if tensor.dtype() != fact.dtype || tensor.shape() != fact.shape.as_slice() {
            return Err(Error::node(
                &node.name,
                node.op.name(),
                format!(
                    "result '{}' is {}{}, but its fact says {fact}; shape inference and the kernel disagree",
                    graph.value(value).name,
                    tensor.dtype(),
                    ShapeDisplay(tensor.shape())
                ),
            ));
        }
    }
    Ok(())
}

/// Checks the caller's inputs against the graph inputs and their facts.
fn bind_inputs(graph: &Graph, inputs: &[(ValueId, Tensor)]) -> Result<HashMap<ValueId, Tensor>> {
    let mut bound = HashMap::new();
    for (value, tensor) in inputs {
        if !graph.inputs().contains(value) {
            let name = if graph.contains_value(*value) { graph.value(*value).name.clone() } else { value.to_string() };
            return Err(Error::Input { input: name, message: "is not an input of the model".into() });
        }
        let name = &graph.value(*value).name;
        let fact = graph.fact(*value);
        if tensor.dtype() != fact.dtype || tensor.shape() != fact.shape.as_slice() {
            return Err(Error::Input {
                input: name.clone(),
                message: format!("expected a {fact} tensor, got {}{}", tensor.dtype(), ShapeDisplay(tensor.shape())),
            });
        }
        if bound.insert(*value, tensor.clone()).is_some() {
            return Err(Error::Input { input: name.clone(), message: "is given more than once".into() });
        }
    }
    for value in graph.inputs() {
        if !bound.contains_key(value) {
            let fact = graph.fact(*value);
            return Err(Error::Input {
                input: graph.value(*value).name.clone(),
                message: format!("is missing. Pass a {fact} tensor for it"),
            });
        }
    }
    Ok(bound)
}

/// Counts the reads of every value: one per operand slot, plus one that is
/// never released for each graph output and tap.
fn count_uses(graph: &Graph, taps: &[ValueId]) -> HashMap<ValueId, usize> {
    let mut uses: HashMap<ValueId, usize> = HashMap::new();
    for node_id in graph.node_ids() {
        for value in graph.node(node_id).inputs.iter().flatten() {
            *uses.entry(*value).or_default() += 1;
        }
    }
    for value in graph.outputs().iter().chain(taps) {
        *uses.entry(*value).or_default() += 1;
    }
    uses
}

/// Copies `tensor` into standard (row-major) layout.
fn standard_layout(tensor: &Tensor) -> Tensor {
    map_tensor_same!(tensor, a => a.as_standard_layout().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Fact;
    use crate::ir::op::{BinaryOp, UnaryOp};
    use crate::tensor::DType;
    use ndarray::{ArrayD, IxDyn};

    fn f32s(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor::F32(ArrayD::from_shape_vec(IxDyn(shape), data.to_vec()).unwrap())
    }

    /// `y = relu(x + c) * x`, with `x: f32[2]` and the constant `c = [1, -5]`.
    fn small_graph() -> (Graph, ValueId, ValueId, ValueId) {
        let mut graph = Graph::new();
        let fact = Fact::new(DType::F32, vec![2]);
        let x = graph.add_input("x", fact.clone());
        let c = graph.add_constant("c", Arc::new(f32s(&[2], &[1.0, -5.0])));
        let sum = graph.add_simple(Op::Binary(BinaryOp::Add), "add", vec![Some(x), Some(c)], fact.clone());
        let relu = graph.add_simple(Op::Unary(UnaryOp::Relu), "relu", vec![Some(sum)], fact.clone());
        let y = graph.add_simple(Op::Binary(BinaryOp::Mul), "mul", vec![Some(relu), Some(x)], fact);
        graph.set_outputs(vec![y]);
        (graph, x, sum, relu)
    }

    #[test]
    fn run_small_graph() {
        let (graph, x, _, _) = small_graph();
        let outputs = run(&graph, &[(x, f32s(&[2], &[2.0, 3.0]))]).unwrap();
        assert_eq!(outputs.len(), 1);
        // relu([3, -2]) * [2, 3] = [6, 0]
        assert_eq!(outputs[0].to_f64_vec(), vec![6.0, 0.0]);
    }

    #[test]
    fn run_with_taps_returns_intermediates() {
        let (graph, x, sum, relu) = small_graph();
        let (outputs, taps) = run_with_taps(&graph, &[(x, f32s(&[2], &[2.0, 3.0]))], &[relu, sum, x]).unwrap();
        assert_eq!(outputs[0].to_f64_vec(), vec![6.0, 0.0]);
        assert_eq!(taps[0].to_f64_vec(), vec![3.0, 0.0]);
        assert_eq!(taps[1].to_f64_vec(), vec![3.0, -2.0]);
        assert_eq!(taps[2].to_f64_vec(), vec![2.0, 3.0]);
    }

    #[test]
    fn count_uses_counts_slots_outputs_and_taps() {
        let (graph, x, sum, relu) = small_graph();
        let uses = count_uses(&graph, &[sum]);
        assert_eq!(uses[&x], 2);
        assert_eq!(uses[&sum], 2);
        assert_eq!(uses[&relu], 1);
        assert_eq!(uses[&graph.outputs()[0]], 1);
    }

    #[test]
    fn input_checks() {
        let (graph, x, sum, _) = small_graph();
        let wrong_shape = run(&graph, &[(x, f32s(&[3], &[1.0, 2.0, 3.0]))]).unwrap_err();
        assert!(matches!(&wrong_shape, Error::Input { input, .. } if input == "x"), "{wrong_shape}");
        assert!(matches!(&wrong_shape, Error::Input { message, .. } if message.contains("f32[2]")), "{wrong_shape}");
        let wrong_dtype = run(&graph, &[(x, Tensor::from_i64s(&[1, 2]))]).unwrap_err();
        assert!(matches!(wrong_dtype, Error::Input { .. }), "{wrong_dtype}");
        let missing = run(&graph, &[]).unwrap_err();
        assert!(matches!(&missing, Error::Input { message, .. } if message.contains("missing")), "{missing}");
        let not_input = run(&graph, &[(x, f32s(&[2], &[0.0; 2])), (sum, f32s(&[2], &[0.0; 2]))]).unwrap_err();
        assert!(matches!(&not_input, Error::Input { message, .. } if message.contains("not an input")), "{not_input}");
        let twice = run(&graph, &[(x, f32s(&[2], &[0.0; 2])), (x, f32s(&[2], &[0.0; 2]))]).unwrap_err();
        assert!(matches!(&twice, Error::Input { message, .. } if message.contains("more than once")), "{twice}");
    }

    #[test]
    fn kernel_error_names_the_node() {
        let mut graph = Graph::new();
        let x = graph.add_input("x", Fact::new(DType::I64, vec![2]));
        let zero = graph.add_constant("zero", Arc::new(Tensor::from_i64s(&[0, 1])));
        let y = graph.add_simple(
            Op::Binary(BinaryOp::Div),
            "divide",
            vec![Some(x), Some(zero)],
            Fact::new(DType::I64, vec![2]),
        );
        graph.set_outputs(vec![y]);
        let err = run(&graph, &[(x, Tensor::from_i64s(&[4, 5]))]).unwrap_err();
        assert!(matches!(&err, Error::Node { node, .. } if node == "divide"), "{err}");
        assert!(matches!(&err, Error::Node { op, .. } if op == "Div"), "{err}");
    }

    #[test]
    fn fact_mismatch_is_reported() {
        let mut graph = Graph::new();
        let x = graph.add_input("x", Fact::new(DType::F32, vec![2]));
        let y = graph.add_simple(Op::Unary(UnaryOp::Neg), "neg", vec![Some(x)], Fact::new(DType::F32, vec![3]));
        graph.set_outputs(vec![y]);
        let err = run(&graph, &[(x, f32s(&[2], &[1.0, 2.0]))]).unwrap_err();
        assert!(err.to_string().contains("shape inference and the kernel disagree"), "{err}");
    }

    #[test]
    fn output_may_be_an_input_or_constant() {
        let mut graph = Graph::new();
        let x = graph.add_input("x", Fact::new(DType::F32, vec![1]));
        let c = graph.add_constant("c", Arc::new(f32s(&[1], &[7.0])));
        graph.set_outputs(vec![x, c, x]);
        let outputs = run(&graph, &[(x, f32s(&[1], &[3.0]))]).unwrap();
        assert_eq!(outputs.iter().map(|t| t.to_f64_vec()[0]).collect::<Vec<_>>(), vec![3.0, 7.0, 3.0]);
    }
}
