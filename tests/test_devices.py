"""Every backend on every device: ``cpu`` always, ``cuda`` when one is present (skipped
otherwise). Each layer runs on the device and is compared with the same weights in float64 on
the CPU, forward and (where the backend has one on that device) backward; bf16 on CUDA within
a stated tolerance. ``benchmarks/gpu_check.sh`` runs this file on a GPU machine.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from attnblocks import Attention, Neighborhood, Split, Stripe, Window, zoo
from attnblocks.flex import block_mask
from attnblocks.functional import attention
from helpers import randomize_

CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="no CUDA"))]
pytestmark = pytest.mark.filterwarnings("ignore:.*flex_attention.*")

SPECS = {
    "swin": zoo.swin(3, shift=1),
    "cswin": zoo.cswin(2),
    "maxvit_grid": zoo.maxvit_grid(3),
    "nat": zoo.nat(3),
    "dinat": zoo.dinat(3, 2),
    "nat_per_axis": Attention(partition=Neighborhood((3, 5), dilation=((2, 1),))),
    "dilateformer": zoo.dilateformer(3, (1, 2)),
    "pvtv2": zoo.pvtv2(2),
    "shunted": zoo.shunted(2),
    "hybrid": Attention(heads=Split(Window(3, shift=1), Stripe(2, axis="h"))),
}
# which backends each spec runs on (flex: sliding windows without per-window encoders such as
# NAT's rpb; dense: token-reading groups)
FLEX = {"swin", "cswin", "maxvit_grid", "nat_per_axis", "pvtv2", "hybrid"}
DENSE = {"swin", "cswin", "maxvit_grid", "nat", "dinat", "nat_per_axis", "hybrid"}
# fp32 on CUDA (TF32 off): reductions in another order; bf16: 8 mantissa bits
TOL = {torch.float32: 2e-4, torch.bfloat16: 6e-2}


def _allowed(name: str, backend: str) -> bool:
    if backend == "flex":
        return name in FLEX
    if backend == "dense":
        return name in DENSE
    return True


@pytest.fixture(autouse=True)
def _no_tf32():
    if CUDA:
        old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        yield
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
    else:
        yield


def _pair(name: str, backend: str, device: str, dtype: torch.dtype):
    spec = dataclasses.replace(SPECS[name], backend=backend)
    ref = randomize_(dataclasses.replace(spec, backend="eager").build(16, 2).double(), seed=1)
    dut = spec.build(16, 2)
    dut.load_state_dict(ref.state_dict())
    return ref, dut.to(device=device, dtype=dtype)


def _train_possible(backend: str, device: str) -> bool:
    return not (backend == "flex" and device == "cpu")  # FlexAttention: no CPU backward


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["eager", "flex", "dense", "auto"])
@pytest.mark.parametrize("name", list(SPECS))
def test_backend_on_device_matches_cpu_float64(name, backend, device):
    if not _allowed(name, backend):
        pytest.skip(f"{name} has no {backend} lowering")
    if device == "cpu" and backend == "flex" and name != "hybrid":
        pytest.skip("uncompiled CPU flex: tests/test_backends.py, test_flex_sliding.py")
    ref, dut = _pair(name, backend, device, torch.float32)
    x64 = torch.randn(2, 7, 8, 16, dtype=torch.float64, requires_grad=True)
    x = x64.detach().float().to(device).requires_grad_(True)
    y64 = ref(x64)
    train = _train_possible(backend, device)
    with torch.set_grad_enabled(train), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = dut(x)
    torch.testing.assert_close(y.double().cpu(), y64.detach(), atol=TOL[torch.float32], rtol=1e-3)
    if train:
        g = torch.randn_like(y64)
        (gx64,) = torch.autograd.grad(y64, x64, g)
        (gx,) = torch.autograd.grad(y, x, g.float().to(device))
        torch.testing.assert_close(gx.double().cpu(), gx64, atol=5e-4, rtol=1e-3)


@pytest.mark.skipif(not CUDA, reason="no CUDA")
@pytest.mark.parametrize("backend", ["eager", "flex", "auto"])
@pytest.mark.parametrize("name", list(SPECS))
def test_bf16_on_cuda_trains_close_to_float64(name, backend):
    if not _allowed(name, backend):
        pytest.skip(f"{name} has no {backend} lowering")
    ref, dut = _pair(name, backend, "cuda", torch.bfloat16)
    x64 = torch.randn(2, 7, 8, 16, dtype=torch.float64)
    x = x64.to("cuda", torch.bfloat16).requires_grad_(True)
    y = dut(x)
    assert y.dtype == torch.bfloat16 and y.isfinite().all()
    (gx,) = torch.autograd.grad(y.float().square().sum(), x)
    assert gx.isfinite().all()
    torch.testing.assert_close(y.double().cpu(), ref(x64), atol=TOL[torch.bfloat16], rtol=5e-2)


@pytest.mark.skipif(not CUDA, reason="no CUDA")
@pytest.mark.parametrize("name", sorted(FLEX))
def test_flex_compiled_training_on_cuda(name):
    """The fused FlexAttention kernel (inductor), forward and backward, against eager."""
    torch._dynamo.reset()
    _, dut = _pair(name, "flex", "cuda", torch.float32)
    eager = dataclasses.replace(SPECS[name], backend="eager").build(16, 2).cuda()
    eager.load_state_dict(dut.state_dict())
    compiled = torch.compile(dut)
    x = torch.randn(2, 14, 16, 16, device="cuda", requires_grad=True)
    y, y_ref = compiled(x), eager(x)
    torch.testing.assert_close(y, y_ref, atol=2e-4, rtol=1e-3)
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, g)
    (gx_ref,) = torch.autograd.grad(y_ref, x, g)
    torch.testing.assert_close(gx, gx_ref, atol=5e-4, rtol=1e-3)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["eager", "flex", "dense"])
def test_functional_attention_on_device(backend, device):
    part = Split(Window(3, shift=1), Neighborhood((3, 5), dilation=((1, 2),)))
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 9, 11, 4, 8, generator=gen, dtype=torch.float64) for _ in range(3))
    ref = attention(q, k, v, part, backend="dense")
    train = _train_possible(backend, device)
    qd, kd, vd = (t.float().to(device).requires_grad_(train) for t in (q, k, v))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = attention(qd, kd, vd, part, backend=backend)
    torch.testing.assert_close(out.double().cpu(), ref, atol=2e-4, rtol=1e-3)
    if train:
        out.square().sum().backward()
        assert all(t.grad.isfinite().all() for t in (qd, kd, vd))


@pytest.mark.parametrize("device", DEVICES)
def test_exported_block_mask_on_device(device):
    from torch.nn.attention.flex_attention import flex_attention

    H, W = 8, 10
    part = Neighborhood(3, dilation=2)
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, H, W, 2, 8, generator=gen) for _ in range(3))
    ref = attention(q, k, v, part)
    qt, kt, vt = (t.flatten(1, 2).transpose(1, 2).to(device) for t in (q, k, v))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        o = flex_attention(qt, kt, vt, block_mask=block_mask(part, (H, W), device=device))
    torch.testing.assert_close(
        o.transpose(1, 2).reshape(ref.shape).cpu(), ref, atol=1e-5, rtol=1e-4
    )


@pytest.mark.skipif(not CUDA, reason="no CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("kernel", "dilation"), [(7, 1), (7, 2), ((7, 5), (2, 3)), ((4, 6), (1, 1))]
)
def test_natten_fused_on_cuda_equals_functional(kernel, dilation, dtype):
    pytest.importorskip("natten")
    from natten.functional import na2d

    gen = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 20, 22, 2, 32, generator=gen).to("cuda", dtype) for _ in range(3))
    ref = na2d(q, k, v, kernel_size=kernel, dilation=dilation)
    dil = (dilation,) if isinstance(dilation, tuple) else dilation
    out = attention(q, k, v, Neighborhood(kernel, dilation=dil))
    tol = 2e-3 if dtype == torch.float32 else 6e-2
    torch.testing.assert_close(out.float(), ref.float(), atol=tol, rtol=tol)
