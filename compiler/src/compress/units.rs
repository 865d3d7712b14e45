//! The prunable structure of a canonical ViT graph.
//!
//! An attention unit is `Attention(q, k, v)` whose three operands come from
//! Linear layers used only there, followed by an output projection Linear
//! that is the attention's only user. An MLP unit is `fc1 -> activation ->
//! fc2` where each step is the previous one's only user. Removing a head
//! or neuron from such a unit changes no other value, which is what makes
//! the structured passes safe. Units are named after their nodes
//! (`/blocks.0/attn`, `/blocks.0/mlp`), the names recipes and reports use.

use crate::ir::{Graph, NodeId, Op};

/// `q, k, v -> Attention -> proj`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttentionUnit {
    pub name: String,
    pub attention: NodeId,
    pub q: NodeId,
    pub k: NodeId,
    pub v: NodeId,
    pub proj: NodeId,
}

/// `fc1 -> activation -> fc2`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MlpUnit {
    pub name: String,
    pub fc1: NodeId,
    pub activation: NodeId,
    pub fc2: NodeId,
}

/// The units of a graph, each list in topological order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Units {
    pub attention: Vec<AttentionUnit>,
    pub mlp: Vec<MlpUnit>,
}

impl Units {
    pub fn find(graph: &Graph) -> Units {
        let mut units = Units::default();
        for id in graph.topo_order() {
            if let Some(unit) = attention_unit(graph, id) {
                units.attention.push(unit);
            } else if let Some(unit) = mlp_unit(graph, id) {
                units.mlp.push(unit);
            }
        }
        units
    }

    /// Every Linear node that belongs to a unit, in topological order of units.
    pub fn encoder_linears(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self.attention.iter().flat_map(|u| [u.q, u.k, u.v, u.proj]).collect();
        nodes.extend(self.mlp.iter().flat_map(|u| [u.fc1, u.fc2]));
        nodes
    }

    pub fn mlp_linears(&self) -> Vec<NodeId> {
        self.mlp.iter().flat_map(|u| [u.fc1, u.fc2]).collect()
    }

    pub fn attention_linears(&self) -> Vec<NodeId> {
        self.attention.iter().flat_map(|u| [u.q, u.k, u.v, u.proj]).collect()
    }

    /// Names of all units.
    pub fn names(&self) -> Vec<&str> {
        self.attention.iter().map(|u| u.name.as_str()).chain(self.mlp.iter().map(|u| u.name.as_str())).collect()
    }
}

/// Whether `id` is a Linear with a constant weight (and constant bias, if any).
pub fn is_constant_linear(graph: &Graph, id: NodeId) -> bool {
    let node = graph.node(id);
    if node.op != Op::Linear {
        return false;
    }
    let weight_constant = node.inputs.get(1).copied().flatten().is_some_and(|w| graph.konst(w).is_some());
    let bias_constant = node.inputs.get(2).copied().flatten().is_none_or(|b| graph.konst(b).is_some());
    weight_constant && bias_constant
}

/// The single node that reads the output of `id`, if there is exactly one
/// user and the output is not a graph output.
fn only_user(graph: &Graph, id: NodeId) -> Option<NodeId> {
    let node = graph.node(id);
    let [output] = node.outputs[..] else { return None };
    if graph.is_graph_output(output) {
        return None;
    }
    match graph.users(output)[..] {
        [(user, _)] => Some(user),
        _ => None,
    }
}

fn attention_unit(graph: &Graph, id: NodeId) -> Option<AttentionUnit> {
    let node = graph.node(id);
    if !matches!(node.op, Op::Attention { .. }) {
        return None;
    }
    let operand = |slot: usize| -> Option<NodeId> {
        let producer = graph.operand_producer(id, slot)?;
        (is_constant_linear(graph, producer) && only_user(graph, producer) == Some(id)).then_some(producer)
    };
    let (q, k, v) = (operand(0)?, operand(1)?, operand(2)?);
    if q == k || k == v || q == v {
        return None;
    }
    let proj = only_user(graph, id).filter(|&p| is_constant_linear(graph, p) && graph.operand_producer(p, 0) == Some(id))?;
    Some(AttentionUnit { name: node.name.clone(), attention: id, q, k, v, proj })
}

fn mlp_unit(graph: &Graph, fc1: NodeId) -> Option<MlpUnit> {
    if !is_constant_linear(graph, fc1) {
        return None;
    }
    let activation = only_user(graph, fc1)?;
    let elementwise = matches!(
        graph.node(activation).op,
        Op::Gelu { .. } | Op::Unary(_) | Op::LeakyRelu { .. } | Op::HardSigmoid { .. }
    );
    if !elementwise {
        return None;
    }
    let fc2 = only_user(graph, activation)?;
    if !is_constant_linear(graph, fc2) || graph.operand_producer(fc2, 0) != Some(activation) {
        return None;
    }
    let name = unit_name(&graph.node(fc1).name, &graph.node(fc2).name);
    Some(MlpUnit { name, fc1, activation, fc2 })
}

/// The common `/`-separated prefix of two node names (`/blocks.0/mlp` for
/// `/blocks.0/mlp/fc1` and `/blocks.0/mlp/fc2`), or the first name when
/// they share none.
fn unit_name(first: &str, second: &str) -> String {
    let a: Vec<&str> = first.split('/').collect();
    let b: Vec<&str> = second.split('/').collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let prefix = a[..common].join("/");
    if prefix.is_empty() || prefix == "/" { first.to_string() } else { prefix }
}

#[cfg(test)]
mod tests {
    use super::unit_name;

    #[test]
    fn unit_name_common_prefix() {
        assert_eq!(unit_name("/blocks.0/mlp/fc1", "/blocks.0/mlp/fc2"), "/blocks.0/mlp");
        assert_eq!(unit_name("fc1", "fc2"), "fc1");
        assert_eq!(unit_name("/a", "/b"), "/a");
    }
}
