"""Two gloo processes under torchrun train exactly like one process with the same global batch."""

import os
import subprocess
import sys
import textwrap

import torch

# The worker: a tiny conv net (no BatchNorm: on CPU its batch statistics are per process) trained
# through all three stages by jcw.train.StagedTrainer; rank 0 saves what it ends with.
SCRIPT = textwrap.dedent('''
    import sys
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset
    from jcw.distributed import DistContext, init_distributed, shutdown
    from jcw.train import StagedTrainer, TrainConfig

    def fit(ctx):
        g = torch.Generator().manual_seed(7)
        model = nn.Sequential()
        model.add_module("conv1", nn.Conv2d(3, 8, 3, padding=1))
        model.add_module("relu1", nn.ReLU())
        model.add_module("conv2", nn.Conv2d(8, 16, 3, stride=2, padding=1))
        model.add_module("relu2", nn.ReLU())
        model.add_module("pool", nn.AdaptiveAvgPool2d(1))
        model.add_module("flat", nn.Flatten())
        model.add_module("fc", nn.Linear(16, 4))
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        images = torch.randn(96, 3, 8, 8, generator=g)
        labels = (images[:, 0].mean((1, 2)) > 0).long() + 2 * (images[:, 1].mean((1, 2)) > 0).long()
        train, val = TensorDataset(images[:64], labels[:64]), TensorDataset(images[64:], labels[64:])
        config = TrainConfig(epochs_dense=2, epochs_admm=2, epochs_finetune=1, batch_size=16, lr=0.05,
                             rho=0.05, seed=3, quiet=True)
        trainer = StagedTrainer(model, {"conv1": 0.5, "conv2": 0.25}, train, val, config, ctx=ctx)
        result = trainer.run()
        return {"state": model.state_dict(), "masks": trainer.masks, "accuracy": result.accuracy,
                "history": result.history}

    if __name__ == "__main__":
        ctx = init_distributed("cpu")
        out = fit(ctx)
        if ctx.is_main:
            torch.save(out, sys.argv[1])
        shutdown(ctx)
''')


def test_two_gloo_processes_equal_one_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(tmp_path / "ddp.pt")], env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)

    namespace: dict = {}
    exec(compile(SCRIPT, str(script), "exec"), namespace)
    single = namespace["fit"](namespace["DistContext"]())

    assert set(ddp["masks"]) == {"conv1", "conv2"}
    for name in ddp["masks"]:
        assert torch.equal(ddp["masks"][name], single["masks"][name])
    initial = torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(7)) * 0.3
    assert not torch.allclose(single["state"]["conv1.weight"], initial, atol=1e-3)  # it did train
    for key, value in single["state"].items():
        torch.testing.assert_close(ddp["state"][key], value, rtol=1e-4, atol=1e-5)
    for a, b in zip(ddp["history"], single["history"]):
        assert a["val_acc"] == b["val_acc"]
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-4
