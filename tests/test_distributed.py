"""Two gloo processes (DDP) train exactly like one process with the same global batch."""

import torch
import torch.multiprocessing as mp
from torch.utils.data import TensorDataset

from jcw.train.distributed import DistContext, init_distributed, shutdown
from jcw.train.stages import StagedTrainer, TrainConfig

DENSITIES = {"conv1": 0.5, "conv2": 0.25}


def _fit(ctx: DistContext, tiny_net) -> dict:
    """A tiny conv net (no BatchNorm: on CPU its batch statistics are per process) through all three stages."""
    g = torch.Generator().manual_seed(7)
    model = tiny_net(width=8, classes=4, norm=False)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    images = torch.randn(96, 3, 8, 8, generator=g)
    labels = (images[:, 0].mean((1, 2)) > 0).long() + 2 * (images[:, 1].mean((1, 2)) > 0).long()
    train, val = TensorDataset(images[:64], labels[:64]), TensorDataset(images[64:], labels[64:])
    config = TrainConfig(epochs_dense=2, epochs_admm=2, epochs_finetune=1, batch_size=16, lr=0.05, rho=0.05,
                         seed=3, quiet=True)
    trainer = StagedTrainer(model, DENSITIES, train, val, config, ctx=ctx)
    result = trainer.run()
    return {"state": model.state_dict(), "masks": trainer.masks, "accuracy": result.accuracy,
            "history": result.history}


def _worker(rank: int, world_size: int, init_file: str, out: str, tiny_net) -> None:
    torch.set_num_threads(1)
    ctx = init_distributed("cpu", rank=rank, world_size=world_size, init_method=f"file://{init_file}")
    try:
        result = _fit(ctx, tiny_net)
        if ctx.is_main:
            torch.save(result, out)
    finally:
        shutdown(ctx)


def test_two_gloo_processes_equal_one_process(tmp_path, tiny_net):
    single = _fit(DistContext(), tiny_net)
    # fork: the children reuse this process's imports (spawn or torchrun would import torch twice more)
    mp.start_processes(_worker, args=(2, str(tmp_path / "rendezvous"), str(tmp_path / "ddp.pt"), tiny_net), nprocs=2,
                       start_method="fork")
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)

    assert set(ddp["masks"]) == set(DENSITIES)
    for name in DENSITIES:
        assert torch.equal(ddp["masks"][name], single["masks"][name])
    initial = torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(7)) * 0.3
    assert not torch.allclose(single["state"]["conv1.weight"], initial, atol=1e-3)  # it did train
    for key, value in single["state"].items():
        torch.testing.assert_close(ddp["state"][key], value, rtol=1e-4, atol=1e-5)
    assert len(ddp["history"]) == len(single["history"]) == 5
    for a, b in zip(ddp["history"], single["history"]):
        assert a["val_acc"] == b["val_acc"]
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-4
    assert ddp["accuracy"] == single["accuracy"]
