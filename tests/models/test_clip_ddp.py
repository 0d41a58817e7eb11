"""The contrastive loss under DDP (2 CPU processes, gloo): features gathered with gradients give
the loss and the gradients of one process holding the whole batch. A module of its own, light
to import: each spawned process imports it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from mmtrans.models.clip import contrastive_loss


def _worker(rank: int, world: int, port: int, img: torch.Tensor, txt: torch.Tensor, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    results = []
    for k in (1, 2):  # one caption per image (CLIP), and two (image-major rows)
        n = len(img) // world
        mine_img = img[rank * n:(rank + 1) * n].clone().requires_grad_(True)
        mine_txt = txt[rank * n * k:(rank + 1) * n * k].clone().requires_grad_(True)
        loss = contrastive_loss(mine_img, mine_txt, torch.tensor(10.0), texts_per_image=k)
        loss.backward()
        results.append((loss.detach(), mine_img.grad, mine_txt.grad))
    torch.save(results, Path(out) / f"{rank}.pt")
    # Both ranks arrive before either tears gloo down: a peer that closes its connections while the
    # other may still be reading can abort that process (one SIGABRT in 4 CI runs, session 6).
    dist.barrier()
    dist.destroy_process_group()


def test_ddp_gather_gives_the_whole_batch_loss_and_gradients(tmp_path):
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(16, 16, generator=g), dim=-1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_worker, args=(2, port, img, txt, str(tmp_path)), nprocs=2, start_method="spawn")
    parts = [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in range(2)]
    for i, k in enumerate((1, 2)):
        whole_img, whole_txt = img.clone().requires_grad_(True), txt[:8 * k].clone().requires_grad_(True)
        whole = contrastive_loss(whole_img, whole_txt, torch.tensor(10.0), gather=False, texts_per_image=k)
        whole.backward()
        ranks = [p[i] for p in parts]
        # Each process's loss covers its own rows; DDP averages gradients over the 2 processes.
        assert (ranks[0][0] + ranks[1][0]).item() / 2 == pytest.approx(whole.item(), abs=1e-6)
        assert torch.allclose(torch.cat([r[1] for r in ranks]) / 2, whole_img.grad, atol=1e-6)
        assert torch.allclose(torch.cat([r[2] for r in ranks]) / 2, whole_txt.grad, atol=1e-6)
