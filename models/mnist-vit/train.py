"""Train the small MNIST ViT of vit.py with AdamW and a cosine schedule.

Reads the arrays cached by data.py and writes the weights to
$VITC_CACHE/data/mnist/vit_weights.npz (default ~/.cache/vitc) and a summary of the
run (settings, per-epoch accuracy, time) to training.json beside this file.
The run is seeded: the JAX key drives initialization, and a NumPy generator drives
shuffling and the random shifts.
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import data
import vit

MAX_SHIFT = 2


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="number of passes over the 60,000 training images")
    parser.add_argument("--batch-size", type=int, default=128, help="training images per step")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate after warmup")
    parser.add_argument("--warmup-epochs", type=float, default=1.0, help="epochs of linear warmup from 0 to --lr")
    parser.add_argument("--weight-decay", type=float, default=0.05,
                        help="AdamW weight decay, applied to matrices and the conv kernel only")
    parser.add_argument("--seed", type=int, default=0, help="seed of the JAX key and the NumPy generator")
    parser.add_argument("--max-steps", type=int, default=0,
                        help="stop after this many steps and save nothing, for timing runs; 0 trains all epochs")
    parser.add_argument("--summary", type=Path, default=Path(__file__).with_name("training.json"),
                        help="where to write the JSON summary of the run")
    return parser.parse_args()


def decay_mask(params: dict) -> dict:
    """Select the parameters that get weight decay: Linear and conv weights, not biases,
    LayerNorm weights, cls_token or pos_embed, following timm's no_weight_decay rule."""
    return {name: value.ndim >= 2 and name not in ("cls_token", "pos_embed") for name, value in params.items()}


def shift_images(images: jax.Array, offsets: jax.Array) -> jax.Array:
    """Shift each image [1, 28, 28] by (dy, dx) pixels in [-2, 2], filling with the background.

    The background of a normalized image is (0 - mean) / std.
    """
    background = (0.0 - vit.PIXEL_MEAN) / vit.PIXEL_STD
    padded = jnp.pad(images, ((0, 0), (0, 0), (MAX_SHIFT, MAX_SHIFT), (MAX_SHIFT, MAX_SHIFT)),
                     constant_values=background)

    def crop(image, offset):
        return jax.lax.dynamic_slice(image, (0, offset[0], offset[1]), (1, vit.IMAGE_SIZE, vit.IMAGE_SIZE))

    return jax.vmap(crop)(padded, offsets)


def make_train_step(optimizer: optax.GradientTransformation):
    def loss_fn(params, images, labels):
        logits = vit.forward(params, images)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, logits

    @jax.jit
    def train_step(params, opt_state, images, labels, offsets):
        images = shift_images(images, offsets)
        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, images, labels)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        correct = jnp.sum(jnp.argmax(logits, axis=-1) == labels)
        return params, opt_state, loss, correct

    return train_step


@jax.jit
def predict(params, images):
    return jnp.argmax(vit.forward(params, images), axis=-1)


def evaluate(params, images: np.ndarray, labels: np.ndarray, batch_size: int = 500) -> int:
    """Return the number of correctly classified images."""
    correct = 0
    for start in range(0, len(images), batch_size):
        predictions = predict(params, images[start:start + batch_size])
        correct += int(np.sum(np.asarray(predictions) == labels[start:start + batch_size]))
    return correct


def main() -> None:
    args = parse_args()
    train_images_uint8, train_labels = data.load_split("train")
    test_images_uint8, test_labels = data.load_split("test")
    train_images = vit.normalize_images(train_images_uint8)
    test_images = vit.normalize_images(test_images_uint8)
    train_labels = train_labels.astype(np.int32)
    test_labels = test_labels.astype(np.int32)

    steps_per_epoch = len(train_images) // args.batch_size  # the last partial batch is dropped
    total_steps = args.epochs * steps_per_epoch
    warmup_steps = int(args.warmup_epochs * steps_per_epoch)
    if not 0 <= warmup_steps < total_steps:
        raise SystemExit(f"--warmup-epochs {args.warmup_epochs} must be at least 0 and less than "
                         f"--epochs {args.epochs}")
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=args.lr,
        warmup_steps=warmup_steps,
        decay_steps=total_steps,  # optax counts the warmup steps in decay_steps
        end_value=0.0,
    )
    params = vit.init_params(jax.random.PRNGKey(args.seed))
    optimizer = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(schedule, b1=0.9, b2=0.999, weight_decay=args.weight_decay, mask=decay_mask(params)),
    )
    opt_state = optimizer.init(params)
    train_step = make_train_step(optimizer)
    rng = np.random.default_rng(args.seed)
    parameter_count = sum(int(np.prod(value.shape)) for value in params.values())
    print(f"parameters: {parameter_count}, steps per epoch: {steps_per_epoch}, epochs: {args.epochs}", flush=True)

    history = []
    step = 0
    start_time = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        epoch_start = time.perf_counter()
        order = rng.permutation(len(train_images))
        loss_sum = 0.0
        train_correct = 0
        for batch_index in range(steps_per_epoch):
            batch = order[batch_index * args.batch_size:(batch_index + 1) * args.batch_size]
            offsets = rng.integers(0, 2 * MAX_SHIFT + 1, size=(len(batch), 2), dtype=np.int32)
            params, opt_state, loss, correct = train_step(
                params, opt_state, train_images[batch], train_labels[batch], offsets)
            loss_sum += float(loss)
            train_correct += int(correct)
            step += 1
            if args.max_steps and step >= args.max_steps:
                break
        seen = (batch_index + 1) * args.batch_size
        test_correct = evaluate(params, test_images, test_labels)
        record = {
            "epoch": epoch,
            "train_loss": round(loss_sum / (batch_index + 1), 5),
            "train_accuracy": round(train_correct / seen, 5),
            "test_accuracy": test_correct / len(test_images),
            "epoch_seconds": round(time.perf_counter() - epoch_start, 1),
        }
        history.append(record)
        print(json.dumps(record), flush=True)
        if args.max_steps and step >= args.max_steps:
            break
    training_seconds = time.perf_counter() - start_time
    if args.max_steps:
        print(f"stopped after {step} steps in {training_seconds:.0f} s; --max-steps runs save no weights")
        return

    weights_path = data.mnist_dir() / "vit_weights.npz"
    vit.save_params(weights_path, params)
    summary = {
        "weights": str(weights_path),
        "final_test_accuracy": history[-1]["test_accuracy"],
        "training_seconds": round(training_seconds, 1),
        "parameter_count": parameter_count,
        "settings": {name: (str(value) if isinstance(value, Path) else value) for name, value in vars(args).items()},
        "augmentation": f"random shifts of up to {MAX_SHIFT} pixels along each axis",
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
            "jax": jax.__version__,
            "optax": optax.__version__,
        },
        "history": history,
    }
    args.summary.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"test accuracy {summary['final_test_accuracy']:.4f} after {training_seconds:.0f} s; "
          f"wrote {weights_path} and {args.summary}")


if __name__ == "__main__":
    main()
