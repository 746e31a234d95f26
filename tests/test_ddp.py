"""DistributedDataParallel: a tiny attnblocks model trains one step on 2 CPU processes (gloo)
and its gradients equal the single-process gradients on the same global batch.
"""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from attnblocks import zoo

GLOBAL_BATCH, HW, DIM, CLASSES = 4, (5, 6), 8, 3


class Tiny(nn.Module):
    """Swin layer, CSWin layer, mean pool, linear head: ``x: (B, H, W, C) -> (B, classes)``."""

    def __init__(self) -> None:
        super().__init__()
        self.a = zoo.swin(3, shift=1).build(DIM, 2)
        self.b = zoo.cswin(2).build(DIM, 2)
        self.head = nn.Linear(DIM, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.a(x)
        x = x + self.b(x)
        return self.head(x.mean(dim=(1, 2)))


def _data():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(GLOBAL_BATCH, *HW, DIM, generator=gen, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (GLOBAL_BATCH,), generator=gen)
    return x, y


def _model() -> Tiny:
    torch.manual_seed(0)
    return Tiny().double()


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = nn.parallel.DistributedDataParallel(_model())
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        x, y = _data()
        shard = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
        nn.functional.cross_entropy(model(x[shard]), y[shard]).backward()
        grads = {n: p.grad.clone() for n, p in model.module.named_parameters()}
        opt.step()
        if rank == 0:
            torch.save({"grads": grads, "params": model.module.state_dict()}, out)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_gradients_equal_single_process(tmp_path):
    out = str(tmp_path / "rank0.pt")
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    got = torch.load(out)

    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _data()
    nn.functional.cross_entropy(model(x), y).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    opt.step()
    assert set(got["grads"]) == set(grads)
    for n, g in grads.items():  # float64: the mean of two half-batch means is the global mean
        assert g.abs().sum() > 0, n
        torch.testing.assert_close(got["grads"][n], g, atol=1e-12, rtol=1e-10, msg=n)
    for n, p in model.state_dict().items():
        torch.testing.assert_close(got["params"][n], p, atol=1e-12, rtol=1e-10, msg=n)
