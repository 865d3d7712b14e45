#!/usr/bin/env python3
"""Write a DeiT-Tiny-shaped ViT as ONNX, with random weights from a fixed seed.

The graph has the node pattern that torch.onnx.export writes for a ViT at
opsets 14 to 16. It starts with a Conv patch embedding, Reshape and
Transpose to tokens, a class-token Concat and an Add of learned position
embeddings. LayerNorm is written out as
ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add (eps 1e-6). Attention has
separate q, k and v projections (MatMul + Add), heads split by Reshape and
Transpose, and Softmax(-1) with a Mul by the scale. GELU is written out with
Erf. A final LayerNorm, a Gather of the class token and a Gemm head end it.

Shapes follow DeiT-Tiny (patch 16, input 1x3x224x224, embedding 192,
12 blocks, 3 heads, MLP 768, 1000 classes). The batch is fixed to 1. The
weights are random, so the outputs mean nothing; the model serves for timing.

Usage: make_vit.py [-o OUT.onnx] [--seed N]
"""

import argparse
import math
import os
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 14

BATCH = 1
CHANNELS = 3
IMAGE_SIZE = 224
PATCH = 16
EMBED = 192
DEPTH = 12
HEADS = 3
MLP_HIDDEN = 768
CLASSES = 1000
LAYERNORM_EPS = 1e-6

PATCHES = (IMAGE_SIZE // PATCH) ** 2
TOKENS = PATCHES + 1
HEAD_DIM = EMBED // HEADS


class GraphBuilder:
    """Collects nodes and initializers, naming results after their node."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.counter = 0

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def random_weight(self, name: str, shape: tuple[int, ...], std: float = 0.02) -> str:
        """Add a weight drawn like timm's trunc_normal_(std=0.02), clipped at 2 std."""
        value = np.clip(self.rng.normal(0.0, std, size=shape), -2 * std, 2 * std)
        return self.constant(name, value.astype(np.float32))

    def node(self, op_type: str, inputs: list[str], **attributes) -> str:
        self.counter += 1
        output = f"/{op_type}_{self.counter}_output_0"
        self.nodes.append(
            helper.make_node(op_type, inputs, [output], name=f"/{op_type}_{self.counter}", **attributes)
        )
        return output


def add_linear(g: GraphBuilder, x: str, prefix: str, in_features: int, out_features: int) -> str:
    """MatMul by a [in, out] weight and Add of the bias, as torch exports nn.Linear on 3-D input."""
    weight = g.random_weight(f"{prefix}.weight_t", (in_features, out_features))
    bias = g.random_weight(f"{prefix}.bias", (out_features,))
    return g.node("Add", [g.node("MatMul", [x, weight]), bias])


def add_layernorm(g: GraphBuilder, x: str, prefix: str) -> str:
    """LayerNorm over the last axis, decomposed as torch writes it below opset 17."""
    mean = g.node("ReduceMean", [x], axes=[-1], keepdims=1)
    centered = g.node("Sub", [x, mean])
    squared = g.node("Pow", [centered, g.constant(f"{prefix}.pow_exponent", np.array(2.0, np.float32))])
    variance = g.node("ReduceMean", [squared], axes=[-1], keepdims=1)
    shifted = g.node("Add", [variance, g.constant(f"{prefix}.eps", np.array(LAYERNORM_EPS, np.float32))])
    normalized = g.node("Div", [centered, g.node("Sqrt", [shifted])])

    # Scale near 1 and shift near 0, so that activations keep their size through 25 LayerNorms.
    scale = (1.0 + g.rng.normal(0.0, 0.1, size=EMBED)).astype(np.float32)
    shift = g.rng.normal(0.0, 0.1, size=EMBED).astype(np.float32)
    scaled = g.node("Mul", [normalized, g.constant(f"{prefix}.weight", scale)])
    return g.node("Add", [scaled, g.constant(f"{prefix}.bias", shift)])


def add_attention(g: GraphBuilder, x: str, prefix: str) -> str:
    """Multi-head self-attention with separate q, k and v projections."""
    heads_shape = g.constant(f"{prefix}.heads_shape", np.array([BATCH, TOKENS, HEADS, HEAD_DIM], np.int64))
    tokens_shape = g.constant(f"{prefix}.tokens_shape", np.array([BATCH, TOKENS, EMBED], np.int64))

    q = add_linear(g, x, f"{prefix}.q", EMBED, EMBED)
    k = add_linear(g, x, f"{prefix}.k", EMBED, EMBED)
    v = add_linear(g, x, f"{prefix}.v", EMBED, EMBED)

    # [B, N, H, D] -> q and v as [B, H, N, D], k as [B, H, D, N].
    q_heads = g.node("Transpose", [g.node("Reshape", [q, heads_shape])], perm=[0, 2, 1, 3])
    k_heads = g.node("Transpose", [g.node("Reshape", [k, heads_shape])], perm=[0, 2, 3, 1])
    v_heads = g.node("Transpose", [g.node("Reshape", [v, heads_shape])], perm=[0, 2, 1, 3])

    scale = g.constant(f"{prefix}.scale", np.array(1.0 / math.sqrt(HEAD_DIM), np.float32))
    scores = g.node("Mul", [g.node("MatMul", [q_heads, k_heads]), scale])
    probabilities = g.node("Softmax", [scores], axis=-1)
    context = g.node("MatMul", [probabilities, v_heads])

    merged = g.node("Reshape", [g.node("Transpose", [context], perm=[0, 2, 1, 3]), tokens_shape])
    return add_linear(g, merged, f"{prefix}.proj", EMBED, EMBED)


def add_gelu(g: GraphBuilder, x: str, prefix: str) -> str:
    """Exact GELU as torch exports it: x * 0.5 * (1 + erf(x / sqrt(2)))."""
    divided = g.node("Div", [x, g.constant(f"{prefix}.sqrt2", np.array(math.sqrt(2.0), np.float32))])
    shifted = g.node("Add", [g.node("Erf", [divided]), g.constant(f"{prefix}.one", np.array(1.0, np.float32))])
    product = g.node("Mul", [x, shifted])
    return g.node("Mul", [product, g.constant(f"{prefix}.half", np.array(0.5, np.float32))])


def add_block(g: GraphBuilder, x: str, index: int) -> str:
    prefix = f"blocks.{index}"
    attention = add_attention(g, add_layernorm(g, x, f"{prefix}.norm1"), f"{prefix}.attn")
    x = g.node("Add", [x, attention])

    hidden = add_linear(g, add_layernorm(g, x, f"{prefix}.norm2"), f"{prefix}.mlp.fc1", EMBED, MLP_HIDDEN)
    mlp = add_linear(g, add_gelu(g, hidden, f"{prefix}.mlp.act"), f"{prefix}.mlp.fc2", MLP_HIDDEN, EMBED)
    return g.node("Add", [x, mlp])


def build_model(seed: int) -> onnx.ModelProto:
    g = GraphBuilder(np.random.default_rng(seed))

    # Patch embedding: Conv with stride = kernel = patch, then [B, C, h, w] -> [B, h*w, C].
    conv_weight = g.random_weight("patch_embed.proj.weight", (EMBED, CHANNELS, PATCH, PATCH))
    conv_bias = g.random_weight("patch_embed.proj.bias", (EMBED,))
    patches = g.node("Conv", ["input", conv_weight, conv_bias], kernel_shape=[PATCH, PATCH], strides=[PATCH, PATCH])
    flat = g.node("Reshape", [patches, g.constant("patch_embed.flat_shape", np.array([BATCH, EMBED, PATCHES], np.int64))])
    tokens = g.node("Transpose", [flat], perm=[0, 2, 1])

    # torch folds cls_token.expand(1, -1, -1) to a constant when the batch is fixed.
    cls_token = g.random_weight("cls_token", (BATCH, 1, EMBED))
    x = g.node("Concat", [cls_token, tokens], axis=1)
    x = g.node("Add", [x, g.random_weight("pos_embed", (1, TOKENS, EMBED))])

    for index in range(DEPTH):
        x = add_block(g, x, index)

    x = add_layernorm(g, x, "norm")
    class_token = g.node("Gather", [x, g.constant("cls_index", np.array(0, np.int64))], axis=1)
    head_weight = g.random_weight("head.weight", (CLASSES, EMBED))
    head_bias = g.random_weight("head.bias", (CLASSES,))
    g.nodes.append(helper.make_node("Gemm", [class_token, head_weight, head_bias], ["logits"], name="/head/Gemm", transB=1))

    graph = helper.make_graph(
        g.nodes,
        "deit_tiny_random",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [BATCH, CHANNELS, IMAGE_SIZE, IMAGE_SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [BATCH, CLASSES])],
        g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="vitc benches/make_vit.py")
    model.ir_version = 8
    return model


def check_with_onnxruntime(path: Path) -> None:
    """Run the model once on a random image; raise if the output is not finite logits of the expected shape."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    image = np.random.default_rng(1).standard_normal((BATCH, CHANNELS, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    (logits,) = session.run(None, {"input": image})
    if logits.shape != (BATCH, CLASSES) or not np.all(np.isfinite(logits)):
        raise RuntimeError(f"onnxruntime output of {path}: shape {logits.shape}, finite: {np.all(np.isfinite(logits))}")
    print(f"onnxruntime {ort.__version__}: logits {logits.shape}, std {logits.std():.4f}, argmax {int(logits.argmax())}")


def main() -> int:
    cache = Path(os.environ.get("VITC_CACHE") or Path.home() / ".cache" / "vitc")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=cache / "models" / "deit_tiny_random.onnx",
                        help="output file (default: $VITC_CACHE/models/deit_tiny_random.onnx)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
    args = parser.parse_args()

    model = build_model(args.seed)
    onnx.checker.check_model(model, full_check=True)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, args.output)
    parameters = sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type == TensorProto.FLOAT)
    print(f"wrote {args.output}: {len(model.graph.node)} nodes, {parameters / 1e6:.2f} M parameters, opset {OPSET}")

    check_with_onnxruntime(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
