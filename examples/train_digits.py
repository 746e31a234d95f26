"""Train a hybrid attention and global attention on scikit-learn's 8x8 digits, on the CPU.

Both models are the same tiny backbone with pixels as tokens (an 8x8 map), the same LePE,
the same initial weights and the same batches; only the attention pattern of the first stage
differs. The digits ship inside scikit-learn: nothing is downloaded.

Run: python examples/train_digits.py [--fast]   (needs: pip install "attnblocks[examples]")
"""

import os
import sys

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tiny_backbone import TinyBackbone
from tqdm import tqdm

from attnblocks import Attention, Global, Grid, LePE, Split, Window

FAST = "--fast" in sys.argv or os.environ.get("ATTNBLOCKS_FAST") == "1"
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


def train(name: str, spec: Attention, data) -> float:
    x_train, y_train, x_test, y_test = data
    model = make_model(spec)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    steps = EPOCHS * -(-len(x_train) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    order = torch.Generator().manual_seed(0)  # the same batches for every spec
    bar = tqdm(range(EPOCHS), desc=f"{name:6s}", unit="epoch")
    for _ in bar:
        model.train()
        for idx in torch.randperm(len(x_train), generator=order).split(BATCH):
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        bar.set_postfix(
            loss=f"{loss.item():.3f}", test_acc=f"{accuracy(model, x_test, y_test):.3f}"
        )
    return accuracy(model, x_test, y_test)


def main() -> None:
    data = load_data()
    print(f"digits: {len(data[0])} train, {len(data[2])} test images of 8x8 pixels")
    results = {name: train(name, spec, data) for name, spec in MODELS.items()}
    for name, acc in results.items():
        print(f"test accuracy {name:6s} {acc:.4f}   {MODELS[name]!r}")


if __name__ == "__main__":
    main()
