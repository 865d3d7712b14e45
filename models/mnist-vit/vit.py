"""A small Vision Transformer for MNIST in JAX, with parameters named and laid out as in PyTorch.

Architecture (pre-norm, as in timm's VisionTransformer):
    input [B, 1, 28, 28] float32, normalized with mean 0.1307 and std 0.3081
    patch_embed.proj   Conv2d(1, 64, kernel 4, stride 4) -> 7 x 7 = 49 patch tokens
    cls_token          [1, 1, 64], prepended to the patch tokens -> 50 tokens
    pos_embed          [1, 50, 64], added to all tokens
    blocks.0 to blocks.3:
        x = x + attn.proj(attention(norm1(x)))   4 heads of 16 dims, separate q, k, v
        x = x + mlp.fc2(gelu(mlp.fc1(norm2(x))))  64 -> 128 -> 64, exact (erf) GELU
    norm               final LayerNorm
    head               Linear(64, 10) on the class token

Every LayerNorm uses eps 1e-6. Parameter names and shapes follow PyTorch's
state_dict: Conv2d weights are [out, in, kH, kW] and Linear weights are [out, in],
so export_onnx.py can write them the way torch.onnx.export does.
"""

import jax
import jax.numpy as jnp
import numpy as np

IMAGE_SIZE = 28
PATCH_SIZE = 4
IN_CHANNELS = 1
EMBED_DIM = 64
DEPTH = 4
NUM_HEADS = 4
HEAD_DIM = EMBED_DIM // NUM_HEADS
MLP_DIM = 128
NUM_CLASSES = 10
LAYER_NORM_EPS = 1e-6
GRID_SIZE = IMAGE_SIZE // PATCH_SIZE
NUM_PATCHES = GRID_SIZE * GRID_SIZE
NUM_TOKENS = NUM_PATCHES + 1

# Mean and standard deviation of the MNIST training pixels scaled to [0, 1].
PIXEL_MEAN = 0.1307
PIXEL_STD = 0.3081


def normalize_images(images_uint8: np.ndarray) -> np.ndarray:
    """Turn uint8 images [N, 28, 28] into the float32 model input [N, 1, 28, 28]."""
    scaled = images_uint8.astype(np.float32) / 255.0
    return ((scaled - PIXEL_MEAN) / PIXEL_STD)[:, None, :, :]


def block_prefixes(index: int) -> dict[str, str]:
    """Return the parameter prefixes of encoder block `index`, keyed by role."""
    block = f"blocks.{index}"
    return {
        "norm1": f"{block}.norm1",
        "q": f"{block}.attn.q",
        "k": f"{block}.attn.k",
        "v": f"{block}.attn.v",
        "proj": f"{block}.attn.proj",
        "norm2": f"{block}.norm2",
        "fc1": f"{block}.mlp.fc1",
        "fc2": f"{block}.mlp.fc2",
    }


def parameter_shapes() -> dict[str, tuple[int, ...]]:
    """Return every parameter name with its PyTorch shape.

    init_params draws one random key per entry in this order, so reordering the
    entries changes the initial weights of a seeded run.
    """
    shapes = {
        "cls_token": (1, 1, EMBED_DIM),
        "pos_embed": (1, NUM_TOKENS, EMBED_DIM),
        "patch_embed.proj.weight": (EMBED_DIM, IN_CHANNELS, PATCH_SIZE, PATCH_SIZE),
        "patch_embed.proj.bias": (EMBED_DIM,),
    }
    for index in range(DEPTH):
        names = block_prefixes(index)
        for role in ("norm1", "norm2"):
            shapes[f"{names[role]}.weight"] = (EMBED_DIM,)
            shapes[f"{names[role]}.bias"] = (EMBED_DIM,)
        for role in ("q", "k", "v", "proj"):
            shapes[f"{names[role]}.weight"] = (EMBED_DIM, EMBED_DIM)
            shapes[f"{names[role]}.bias"] = (EMBED_DIM,)
        shapes[f"{names['fc1']}.weight"] = (MLP_DIM, EMBED_DIM)
        shapes[f"{names['fc1']}.bias"] = (MLP_DIM,)
        shapes[f"{names['fc2']}.weight"] = (EMBED_DIM, MLP_DIM)
        shapes[f"{names['fc2']}.bias"] = (EMBED_DIM,)
    shapes["norm.weight"] = (EMBED_DIM,)
    shapes["norm.bias"] = (EMBED_DIM,)
    shapes["head.weight"] = (NUM_CLASSES, EMBED_DIM)
    shapes["head.bias"] = (NUM_CLASSES,)
    return shapes


def init_params(key: jax.Array) -> dict[str, jax.Array]:
    """Initialize the parameters in the style of timm's ViT.

    Linear weights, cls_token and pos_embed draw from a normal distribution with
    std 0.02 truncated at 2 std. The patch embedding kernel draws from a normal
    distribution with std 1/sqrt(fan_in) = 0.25. LayerNorm weights are 1 and every
    bias is 0.
    """
    params = {}
    shapes = parameter_shapes()
    keys = jax.random.split(key, len(shapes))
    for subkey, (name, shape) in zip(keys, shapes.items()):
        if name.endswith(".bias"):
            params[name] = jnp.zeros(shape, jnp.float32)
        elif len(shape) == 1:
            # The only 1-D parameters besides biases are LayerNorm weights.
            params[name] = jnp.ones(shape, jnp.float32)
        elif name == "patch_embed.proj.weight":
            fan_in = IN_CHANNELS * PATCH_SIZE * PATCH_SIZE
            params[name] = jax.random.normal(subkey, shape, jnp.float32) / np.sqrt(fan_in)
        else:
            params[name] = 0.02 * jax.random.truncated_normal(subkey, -2.0, 2.0, shape, jnp.float32)
    return params


def layer_norm(x: jax.Array, weight: jax.Array, bias: jax.Array) -> jax.Array:
    mean = jnp.mean(x, axis=-1, keepdims=True)
    variance = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) / jnp.sqrt(variance + LAYER_NORM_EPS) * weight + bias


def linear(params: dict, prefix: str, x: jax.Array) -> jax.Array:
    """Apply a PyTorch-layout Linear layer, whose weight is [out, in]."""
    return x @ params[f"{prefix}.weight"].T + params[f"{prefix}.bias"]


def attention(params: dict, names: dict[str, str], x: jax.Array) -> jax.Array:
    batch, tokens, _ = x.shape

    def split_heads(t: jax.Array) -> jax.Array:
        # [B, N, 64] -> [B, heads, N, 16]
        return t.reshape(batch, tokens, NUM_HEADS, HEAD_DIM).transpose(0, 2, 1, 3)

    q = split_heads(linear(params, names["q"], x))
    k = split_heads(linear(params, names["k"], x))
    v = split_heads(linear(params, names["v"], x))
    scores = (q @ k.transpose(0, 1, 3, 2)) * (1.0 / np.sqrt(HEAD_DIM))
    weights = jax.nn.softmax(scores, axis=-1)
    context = (weights @ v).transpose(0, 2, 1, 3).reshape(batch, tokens, EMBED_DIM)
    return linear(params, names["proj"], context)


def encoder_block(params: dict, index: int, x: jax.Array) -> jax.Array:
    names = block_prefixes(index)
    normed = layer_norm(x, params[f"{names['norm1']}.weight"], params[f"{names['norm1']}.bias"])
    x = x + attention(params, names, normed)
    normed = layer_norm(x, params[f"{names['norm2']}.weight"], params[f"{names['norm2']}.bias"])
    hidden = jax.nn.gelu(linear(params, names["fc1"], normed), approximate=False)
    return x + linear(params, names["fc2"], hidden)


def forward(params: dict, images: jax.Array) -> jax.Array:
    """Return the logits [B, 10] of normalized images [B, 1, 28, 28]."""
    patches = jax.lax.conv_general_dilated(
        images,
        params["patch_embed.proj.weight"],
        window_strides=(PATCH_SIZE, PATCH_SIZE),
        padding="VALID",
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
    )
    patches = patches + params["patch_embed.proj.bias"][None, :, None, None]
    batch = images.shape[0]
    # [B, 64, 7, 7] -> [B, 64, 49] -> [B, 49, 64], as timm's flatten(2).transpose(1, 2).
    tokens = patches.reshape(batch, EMBED_DIM, NUM_PATCHES).transpose(0, 2, 1)
    cls = jnp.broadcast_to(params["cls_token"], (batch, 1, EMBED_DIM))
    x = jnp.concatenate([cls, tokens], axis=1) + params["pos_embed"]
    for index in range(DEPTH):
        x = encoder_block(params, index, x)
    x = layer_norm(x, params["norm.weight"], params["norm.bias"])
    return linear(params, "head", x[:, 0])


def save_params(path, params: dict) -> None:
    np.savez(path, **{name: np.asarray(value, dtype=np.float32) for name, value in params.items()})


def load_params(path) -> dict[str, np.ndarray]:
    """Load parameters saved by save_params and check every name and shape."""
    with np.load(path) as archive:
        params = {name: archive[name] for name in archive.files}
    expected = parameter_shapes()
    if set(params) != set(expected):
        missing = sorted(set(expected) - set(params))
        unexpected = sorted(set(params) - set(expected))
        raise ValueError(f"{path}: missing parameters {missing}, unexpected parameters {unexpected}")
    for name, shape in expected.items():
        if params[name].shape != shape:
            raise ValueError(f"{path}: {name} has shape {params[name].shape}; expected {shape}")
    return params
