"""ADMM toward 4x1-block sparsity: projection, updates, penalty gradient, convergence to the pattern."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from jcw.train.admm import BlockADMM, apply_masks, energy_outside, project_blocks, weight_layers
from jcw.train.stages import StagedTrainer, TrainConfig


def _block_norms(weight):
    """(out/4, in*kh*kw) L2 norms of the 4x1 blocks, computed independently of jcw."""
    o = weight.shape[0]
    return weight.reshape(o // 4, 4, -1).pow(2).sum(1).sqrt()


@pytest.mark.parametrize("shape,density", [((16, 8, 3, 3), 0.3), ((8, 12, 1, 1), 0.5), ((32, 4, 3, 3), 0.1)])
def test_projection_keeps_exactly_the_top_blocks(shape, density):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    z = project_blocks(w, density)
    norms = _block_norms(w).flatten()
    k = round(density * norms.numel())
    top = set(torch.topk(norms, k).indices.tolist())
    kept = _block_norms(z).flatten() > 0
    assert set(torch.nonzero(kept).flatten().tolist()) == top
    blocks_w = w.reshape(shape[0] // 4, 4, -1).permute(0, 2, 1).reshape(-1, 4)
    blocks_z = z.reshape(shape[0] // 4, 4, -1).permute(0, 2, 1).reshape(-1, 4)
    assert torch.equal(blocks_z[kept], blocks_w[kept])
    assert torch.count_nonzero(blocks_z[~kept]) == 0


def test_penalty_gradient_and_dual_update():
    g = torch.Generator().manual_seed(2)
    conv = nn.Conv2d(4, 8, 3)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
    params = {"conv": conv.weight}
    admm = BlockADMM(params, {"conv": 0.5}, rho=0.1)
    assert torch.equal(admm.z["conv"], project_blocks(conv.weight.detach(), 0.5))
    with torch.no_grad():
        conv.weight.add_(torch.randn(conv.weight.shape, generator=g) * 0.1)
    w = conv.weight.detach().clone()
    admm.update()
    z = project_blocks(w, 0.5)
    torch.testing.assert_close(admm.z["conv"], z)
    torch.testing.assert_close(admm.u["conv"], w - z)
    grad = torch.randn(conv.weight.shape, generator=g)
    conv.weight.grad = grad.clone()
    admm.add_penalty_grad()
    torch.testing.assert_close(conv.weight.grad, grad + 0.1 * (w - z + (w - z)))


def test_energy_and_masks():
    w = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(3))
    params = {"a": w.clone()}
    admm = BlockADMM({"a": nn.Parameter(w.clone())}, {"a": 0.25})
    masks = admm.masks()
    assert masks["a"].dtype == torch.bool and masks["a"].float().mean() == pytest.approx(0.25)
    outside = float(w[~masks["a"]].pow(2).sum() / w.pow(2).sum())
    assert energy_outside(params, masks) == pytest.approx(outside)
    apply_masks(params, masks)
    assert energy_outside(params, masks) == 0.0
    with pytest.raises(ValueError, match="densities"):
        BlockADMM({"a": nn.Parameter(w)}, {"a": 1.5})
    with pytest.raises(ValueError, match="no layers named"):
        weight_layers(nn.Sequential(nn.Conv2d(4, 8, 3)), {"conv9": 0.5})


def _tiny_problem(tiny_net):
    g = torch.Generator().manual_seed(11)
    model = tiny_net(width=16, classes=3, seed=11)
    images = torch.randn(192, 3, 6, 6, generator=g)
    labels = images.mean((2, 3)).argmax(1)
    return model, TensorDataset(images[:128], labels[:128]), TensorDataset(images[128:], labels[128:])


def test_admm_drives_weights_into_the_pattern_and_masks_hold_after_finetuning(tiny_net):
    model, train, val = _tiny_problem(tiny_net)
    config = TrainConfig(epochs_dense=3, epochs_admm=4, epochs_finetune=2, batch_size=16, lr=0.1, rho=0.1,
                         seed=1, quiet=True)
    trainer = StagedTrainer(model, {"conv1": 0.5, "conv2": 0.3}, train, val, config)
    result = trainer.run()
    energy = [h["energy_outside"] for h in result.history if h["stage"] == "admm"]
    dense_end = [h["energy_outside"] for h in result.history if h["stage"] == "dense"][-1]
    assert energy[-1] < energy[0] < dense_end
    assert energy[-1] < 0.25 * dense_end
    assert result.energy_outside == pytest.approx(energy[-1])
    for name, density in {"conv1": 0.5, "conv2": 0.3}.items():
        weight = dict(model.named_modules())[name].weight.detach()
        mask = trainer.masks[name]
        assert mask.float().mean() == pytest.approx(round(density * mask.numel() / 4) * 4 / mask.numel())
        assert torch.count_nonzero(weight[~mask]) == 0
        assert torch.count_nonzero(weight[mask]) == mask.sum()
    assert set(result.accuracy) == {"dense", "pruned", "finetuned"}
    assert result.accuracy["finetuned"] >= result.accuracy["pruned"]
