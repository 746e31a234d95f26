"""Train a hybrid attention and global attention on scikit-learn's 8x8 digits, on the CPU.

Both models are the same tiny backbone with pixels as tokens (an 8x8 map), the same LePE,
the same initial weights and the same batches; only the attention pattern of the first stage
differs. The digits ship inside scikit-learn: nothing is downloaded.

Writes the loss and test-accuracy curves of both runs as a PNG (``--out``, by default a
folder in the system's temporary directory).

Run: python examples/train_digits.py [--fast] [--out DIR]
(needs: pip install "attnblocks[examples]")
"""

# ruff: noqa: E402 (arguments first: --help and a wrong flag answer before torch loads)
import argparse
import os
import tempfile
from pathlib import Path

parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
)
parser.add_argument(
    "--fast",
    action="store_true",
    help="1 epoch on 128 training images: checks that the loop runs (accuracy near chance)",
)
parser.add_argument(
    "--out",
    type=Path,
    default=Path(tempfile.gettempdir()) / "attnblocks-train-digits",
    help="folder for curves.png (default: %(default)s)",
)
ARGS = parser.parse_args()
FAST = ARGS.fast or os.environ.get("ATTNBLOCKS_FAST") == "1"

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tiny_backbone import TinyBackbone
from tqdm import tqdm

from attnblocks import Attention, Global, Grid, LePE, Split, Window

EPOCHS, BATCH = (1, 64) if FAST else (30, 64)
if "OMP_NUM_THREADS" not in os.environ:
    # tiny tensors: a second thread costs more in synchronisation than it saves (far more
    # on a busy machine); set OMP_NUM_THREADS to choose yourself
    torch.set_num_threads(1)

# --8<-- [start:models]
MODELS = {
    # half the heads see their 4x4 window, half a 4x4 grid spread over the whole map
    "hybrid": Attention(heads=Split(Window(4), Grid(4)), pe=LePE()),
    "global": Attention(partition=Global(), pe=LePE()),
}
# --8<-- [end:models]


def load_data():
    """Images ``(n, 1, 8, 8)`` in [0, 1] and labels, split 80/20, stratified."""
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(digits.target)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=0, stratify=y
    )
    if FAST:
        x_train, y_train, x_test, y_test = x_train[:128], y_train[:128], x_test[:64], y_test[:64]
    return x_train, y_train, x_test, y_test


def make_model(spec: Attention) -> TinyBackbone:
    torch.manual_seed(0)  # the same initial weights for every spec (their parameters agree)
    # stage 1: 8x8 tokens, the spec under test; stage 2: 4x4 tokens, where both are global
    return TinyBackbone(
        [spec, Attention(partition=Global(), pe=LePE())],
        dims=(32, 64),
        heads=(4, 4),
        depths=(2, 1),
        patch=1,
        in_chans=1,
    )


@torch.no_grad()
def accuracy(model: TinyBackbone, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return (model(x).argmax(-1) == y).float().mean().item()


def train(name: str, spec: Attention, data) -> dict[str, list[float]]:
    """Train one model; the mean training loss and the test accuracy after each epoch."""
    x_train, y_train, x_test, y_test = data
    model = make_model(spec)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    steps = EPOCHS * -(-len(x_train) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    order = torch.Generator().manual_seed(0)  # the same batches for every spec
    curves: dict[str, list[float]] = {"loss": [], "accuracy": []}
    bar = tqdm(range(EPOCHS), desc=f"{name:6s}", unit="epoch")
    for _ in bar:
        model.train()
        losses = []
        for idx in torch.randperm(len(x_train), generator=order).split(BATCH):
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        curves["loss"].append(sum(losses) / len(losses))
        curves["accuracy"].append(accuracy(model, x_test, y_test))
        bar.set_postfix(loss=f"{curves['loss'][-1]:.3f}", test_acc=f"{curves['accuracy'][-1]:.3f}")
    return curves


def plot(curves: dict[str, dict[str, list[float]]], path: Path) -> None:
    """Loss and test accuracy per epoch, one line per model, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, c in curves.items():
        epochs = range(1, len(c["loss"]) + 1)
        ax_loss.plot(epochs, c["loss"], marker=".", label=f"{name}: {MODELS[name]!r}")
        ax_acc.plot(epochs, c["accuracy"], marker=".", label=name)
    ax_loss.set(xlabel="epoch", ylabel="training loss (label smoothing 0.1)", yscale="log")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(lw=0.3)
    ax_acc.legend(loc="lower right", fontsize=8)
    fig.suptitle("8x8 digits, tiny backbone: first-stage attention", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def main() -> None:
    data = load_data()
    print(f"digits: {len(data[0])} train, {len(data[2])} test images of 8x8 pixels")
    if FAST:
        print(
            "fast mode: 1 epoch on 128 training images checks that the loop runs; "
            "test accuracy near chance (0.1) is expected"
        )
    curves = {name: train(name, spec, data) for name, spec in MODELS.items()}
    for name, c in curves.items():
        print(f"test accuracy {name:6s} {c['accuracy'][-1]:.4f}   {MODELS[name]!r}")
    ARGS.out.mkdir(parents=True, exist_ok=True)
    plot(curves, ARGS.out / "curves.png")
    print(f"curves: {ARGS.out / 'curves.png'}")


if __name__ == "__main__":
    main()
