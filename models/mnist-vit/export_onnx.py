"""Write the trained MNIST ViT as an ONNX graph shaped like a torch.onnx.export output.

The graph follows what torch.onnx.export (TorchScript exporter, dynamo=False) emits
for a timm-style ViT at opset 17 with
dynamic_axes={'input': {0: 'batch'}, 'logits': {0: 'batch'}}:

- Node names carry the module path (`/blocks.0/attn/q/MatMul`), node outputs are
  `<node name>_output_0`, and scalars and shape pieces are `Constant` nodes.
- Linear layers on 3-D input are MatMul with the transposed weight, stored as an
  initializer named `onnx::MatMul_<n>`, then Add(bias, product). The head's
  Linear has 2-D input and becomes Gemm with transB=1.
- Every reshape target is built from the dynamic batch size with
  Shape -> Gather -> Unsqueeze -> Concat.
- cls_token.expand(B, -1, -1) turns into the ConstantOfShape / Mul / Equal / Where
  pattern that torch's expand symbolic emits for -1 sizes.
- LayerNorm and GELU are decomposed into primitive ops as torch's
  native_layer_norm and gelu symbolics do.

NOTE: torch at opset 17 would export LayerNorm as one LayerNormalization op. The
decomposed form here is what torch emits at opset 16 and below, and it is kept on
purpose so that the compiler is tested on that pattern. The numbers in `onnx::MatMul_<n>`
are sequential here, while torch uses its internal value ids.

Run `python export_onnx.py` after train.py. It reads
$VITC_CACHE/data/mnist/vit_weights.npz (default ~/.cache/vitc) and writes
mnist_vit.onnx beside this file.
"""

import argparse
import collections
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import data
import vit

OPSET = 17
# torch maps opset 17 to IR version 8 (kOpsetVersionToIRVersion in
# torch/csrc/jit/serialization/export.cpp).
IR_VERSION = 8
PRODUCER_NAME = "vitc-mnist-export"
PRODUCER_VERSION = "1.0"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"


class TorchStyleGraph:
    """Collects nodes and initializers and names them the way the torch exporter does."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.op_counts: collections.Counter = collections.Counter()
        self.matmul_weight_count = 0

    def add_node(self, scope: str, op_type: str, inputs: list[str], output: str | None = None,
                 **attributes) -> str:
        """Append a node named `<scope>/<op_type>[_k]` and return its output name.

        The k-th node of one type in one scope (counting from 0) gets the suffix `_k`
        for k >= 1, as torch numbers them.
        """
        index = self.op_counts[(scope, op_type)]
        self.op_counts[(scope, op_type)] += 1
        name = f"{scope}/{op_type}" + (f"_{index}" if index else "")
        output = output or f"{name}_output_0"
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=name, **attributes))
        return output

    def add_constant(self, scope: str, value: np.ndarray) -> str:
        return self.add_node(scope, "Constant", [], value=numpy_helper.from_array(value))

    def add_initializer(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def add_matmul_weight(self, weight_out_in: np.ndarray) -> str:
        """Store a Linear weight [out, in] transposed to [in, out], as torch folds t(weight)."""
        self.matmul_weight_count += 1
        return self.add_initializer(f"onnx::MatMul_{self.matmul_weight_count}", weight_out_in.T)


def int64_scalar(value: int) -> np.ndarray:
    return np.array(value, dtype=np.int64)


def int64_vector(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def float_scalar(value: float) -> np.ndarray:
    return np.array(value, dtype=np.float32)


def dim_of(g: TorchStyleGraph, scope: str, tensor: str, axis: int) -> str:
    """Emit `tensor.shape[axis]` as Shape -> Gather and return the 0-d int64 result."""
    shape = g.add_node(scope, "Shape", [tensor])
    index = g.add_constant(scope, int64_scalar(axis))
    return g.add_node(scope, "Gather", [shape, index], axis=0)


def shape_vector(g: TorchStyleGraph, scope: str, dims: list) -> str:
    """Emit the 1-D int64 shape `dims` for Reshape or Expand.

    A str item is a 0-d dynamic size, which gets Unsqueeze(axes=[0]). An int item
    becomes a Constant [value]. All pieces are concatenated along axis 0.
    """
    pieces = []
    for dim in dims:
        if isinstance(dim, str):
            axes = g.add_constant(scope, int64_vector(0))
            pieces.append(g.add_node(scope, "Unsqueeze", [dim, axes]))
        else:
            pieces.append(g.add_constant(scope, int64_vector(dim)))
    return g.add_node(scope, "Concat", pieces, axis=0)


def layer_norm(g: TorchStyleGraph, params: dict, scope: str, prefix: str, x: str) -> str:
    """Emit LayerNorm over the last axis as torch's native_layer_norm symbolic does.

    ReduceMean keeps its default keepdims=1, as in the torch export.
    """
    mean = g.add_node(scope, "ReduceMean", [x], axes=[-1])
    centered = g.add_node(scope, "Sub", [x, mean])
    two = g.add_constant(scope, float_scalar(2.0))
    squared = g.add_node(scope, "Pow", [centered, two])
    variance = g.add_node(scope, "ReduceMean", [squared], axes=[-1])
    eps = g.add_constant(scope, float_scalar(vit.LAYER_NORM_EPS))
    variance_eps = g.add_node(scope, "Add", [variance, eps])
    std = g.add_node(scope, "Sqrt", [variance_eps])
    normalized = g.add_node(scope, "Div", [centered, std])
    weight = g.add_initializer(f"{prefix}.weight", params[f"{prefix}.weight"])
    bias = g.add_initializer(f"{prefix}.bias", params[f"{prefix}.bias"])
    scaled = g.add_node(scope, "Mul", [normalized, weight])
    return g.add_node(scope, "Add", [scaled, bias])


def linear(g: TorchStyleGraph, params: dict, scope: str, prefix: str, x: str) -> str:
    """Emit a Linear layer on 3-D input: MatMul(x, weight^T), then Add(bias, product)."""
    weight = g.add_matmul_weight(params[f"{prefix}.weight"])
    product = g.add_node(scope, "MatMul", [x, weight])
    bias = g.add_initializer(f"{prefix}.bias", params[f"{prefix}.bias"])
    return g.add_node(scope, "Add", [bias, product])


def gelu(g: TorchStyleGraph, scope: str, x: str) -> str:
    """Emit exact GELU, x * (1 + erf(x / sqrt(2))) * 0.5, as torch's gelu symbolic does."""
    sqrt2 = g.add_constant(scope, float_scalar(np.sqrt(2.0)))
    scaled = g.add_node(scope, "Div", [x, sqrt2])
    erf = g.add_node(scope, "Erf", [scaled])
    one = g.add_constant(scope, float_scalar(1.0))
    erf_plus_one = g.add_node(scope, "Add", [erf, one])
    product = g.add_node(scope, "Mul", [x, erf_plus_one])
    half = g.add_constant(scope, float_scalar(0.5))
    return g.add_node(scope, "Mul", [product, half])


def attention(g: TorchStyleGraph, params: dict, index: int, x: str) -> str:
    """Emit multi-head self-attention on x [B, N, 64] and return the output projection."""
    names = vit.block_prefixes(index)
    scope = f"/blocks.{index}/attn"
    batch = dim_of(g, scope, x, 0)
    tokens = dim_of(g, scope, x, 1)

    def project_heads(role: str, perm: list[int]) -> str:
        projected = linear(g, params, f"{scope}/{role}", names[role], x)
        heads_shape = shape_vector(g, scope, [batch, tokens, vit.NUM_HEADS, vit.HEAD_DIM])
        split = g.add_node(scope, "Reshape", [projected, heads_shape])
        return g.add_node(scope, "Transpose", [split], perm=perm)

    q = project_heads("q", [0, 2, 1, 3])  # [B, heads, N, 16]
    # torch fuses permute(0, 2, 1, 3) and transpose(-2, -1) of k into one Transpose.
    k_transposed = project_heads("k", [0, 2, 3, 1])  # [B, heads, 16, N]
    v = project_heads("v", [0, 2, 1, 3])  # [B, heads, N, 16]

    scores = g.add_node(scope, "MatMul", [q, k_transposed])
    scale = g.add_constant(scope, float_scalar(1.0 / np.sqrt(vit.HEAD_DIM)))
    scores = g.add_node(scope, "Mul", [scores, scale])
    weights = g.add_node(scope, "Softmax", [scores], axis=-1)
    context = g.add_node(scope, "MatMul", [weights, v])  # [B, heads, N, 16]
    context = g.add_node(scope, "Transpose", [context], perm=[0, 2, 1, 3])
    merged_shape = shape_vector(g, scope, [batch, tokens, vit.EMBED_DIM])
    context = g.add_node(scope, "Reshape", [context, merged_shape])
    return linear(g, params, f"{scope}/proj", names["proj"], context)


def encoder_block(g: TorchStyleGraph, params: dict, index: int, x: str) -> str:
    names = vit.block_prefixes(index)
    scope = f"/blocks.{index}"
    normed = layer_norm(g, params, f"{scope}/norm1", names["norm1"], x)
    x = g.add_node(scope, "Add", [x, attention(g, params, index, normed)])
    normed = layer_norm(g, params, f"{scope}/norm2", names["norm2"], x)
    hidden = linear(g, params, f"{scope}/mlp/fc1", names["fc1"], normed)
    hidden = gelu(g, f"{scope}/mlp/act", hidden)
    hidden = linear(g, params, f"{scope}/mlp/fc2", names["fc2"], hidden)
    return g.add_node(scope, "Add", [x, hidden])


def patch_embed(g: TorchStyleGraph, params: dict) -> str:
    """Emit Conv, then reshape [B, 64, 7, 7] to [B, 64, 49] and transpose to [B, 49, 64]."""
    weight = g.add_initializer("patch_embed.proj.weight", params["patch_embed.proj.weight"])
    bias = g.add_initializer("patch_embed.proj.bias", params["patch_embed.proj.bias"])
    patch = [vit.PATCH_SIZE, vit.PATCH_SIZE]
    features = g.add_node("/patch_embed/proj", "Conv", [INPUT_NAME, weight, bias],
                          dilations=[1, 1], group=1, kernel_shape=patch, pads=[0, 0, 0, 0], strides=patch)
    scope = "/patch_embed"
    batch = dim_of(g, scope, features, 0)
    flat_shape = shape_vector(g, scope, [batch, vit.EMBED_DIM, vit.NUM_PATCHES])
    flat = g.add_node(scope, "Reshape", [features, flat_shape])
    return g.add_node(scope, "Transpose", [flat], perm=[0, 2, 1])


def prepend_cls_token(g: TorchStyleGraph, params: dict, tokens: str) -> str:
    """Emit cat([cls_token.expand(B, -1, -1), tokens], dim=1) + pos_embed.

    torch's expand symbolic replaces each -1 in the requested size by 1 with
    Where(Equal(size, ones * -1), ones, size). Expand then broadcasts the 1 to the
    existing size.
    """
    cls_token = g.add_initializer("cls_token", params["cls_token"])
    batch = dim_of(g, "", tokens, 0)
    size = shape_vector(g, "", [batch, -1, -1])
    size_length = g.add_constant("", int64_vector(3))
    ones = g.add_node("", "ConstantOfShape", [size_length],
                      value=numpy_helper.from_array(int64_vector(1)))
    minus_one = g.add_constant("", int64_scalar(-1))
    minus_ones = g.add_node("", "Mul", [ones, minus_one])
    is_minus_one = g.add_node("", "Equal", [size, minus_ones])
    size = g.add_node("", "Where", [is_minus_one, ones, size])
    cls_tokens = g.add_node("", "Expand", [cls_token, size])
    sequence = g.add_node("", "Concat", [cls_tokens, tokens], axis=1)
    pos_embed = g.add_initializer("pos_embed", params["pos_embed"])
    return g.add_node("", "Add", [sequence, pos_embed])


def classifier_head(g: TorchStyleGraph, params: dict, x: str) -> str:
    """Emit x[:, 0] as Gather(axis=1) and the head Linear as Gemm with transB=1."""
    index = g.add_constant("", int64_scalar(0))
    cls_features = g.add_node("", "Gather", [x, index], axis=1)
    weight = g.add_initializer("head.weight", params["head.weight"])
    bias = g.add_initializer("head.bias", params["head.bias"])
    return g.add_node("/head", "Gemm", [cls_features, weight, bias], output=OUTPUT_NAME,
                      alpha=1.0, beta=1.0, transB=1)


def build_model(params: dict[str, np.ndarray]) -> onnx.ModelProto:
    g = TorchStyleGraph()
    x = patch_embed(g, params)
    x = prepend_cls_token(g, params, x)
    for index in range(vit.DEPTH):
        x = encoder_block(g, params, index, x)
    x = layer_norm(g, params, "/norm", "norm", x)
    classifier_head(g, params, x)

    graph = helper.make_graph(
        g.nodes,
        "main_graph",
        inputs=[helper.make_tensor_value_info(
            INPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, vit.IN_CHANNELS, vit.IMAGE_SIZE, vit.IMAGE_SIZE])],
        outputs=[helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, vit.NUM_CLASSES])],
        initializer=g.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER_NAME,
        producer_version=PRODUCER_VERSION,
    )
    model.ir_version = IR_VERSION
    return model


def validate_model(model: onnx.ModelProto) -> None:
    """Run the full ONNX checker and strict shape inference, and check the output shape."""
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    output_type = inferred.graph.output[0].type.tensor_type
    dims = [dim.dim_param or dim.dim_value for dim in output_type.shape.dim]
    if dims != [BATCH_DIM, vit.NUM_CLASSES]:
        raise ValueError(f"shape inference gives {OUTPUT_NAME} shape {dims}; expected [{BATCH_DIM}, 10]")
    unused = {init.name for init in model.graph.initializer} - {name for node in model.graph.node
                                                               for name in node.input}
    if unused:
        raise ValueError(f"initializers not used by any node: {sorted(unused)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=data.mnist_dir() / "vit_weights.npz",
                        help="weights written by train.py")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("mnist_vit.onnx"),
                        help="path of the ONNX file to write")
    args = parser.parse_args()

    model = build_model(vit.load_params(args.weights))
    validate_model(model)
    onnx.save(model, args.output)

    op_counts = collections.Counter(node.op_type for node in model.graph.node)
    print(f"wrote {args.output}: {args.output.stat().st_size} bytes, {len(model.graph.node)} nodes, "
          f"{len(model.graph.initializer)} initializers")
    print("ops: " + ", ".join(f"{op} {count}" for op, count in sorted(op_counts.items())))


if __name__ == "__main__":
    main()
