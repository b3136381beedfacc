"""Criteria, channel ordering, 4x1 block masks and materialize: equivalence with the zeroed full model."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from jcw.prune import criteria
from jcw.prune.criteria import get_criterion, list_criteria, register_criterion, score_channels
from jcw.layers import describe, norm_layers
from jcw.prune.materialize import block_mask, input_index, materialize, order_channels, slice_model
from jcw.models import create_model, default_resolution, list_models
from jcw.core.space import SearchSpace


def _setup(randomize, name, seed=0, user_model=None):
    """A randomized zoo model (or, with ``user_model``, tests/user_models/<name>.py), its spec and input size."""
    res = 32 if user_model or default_resolution(name) == 224 else default_resolution(name)
    model = user_model(name, 10) if user_model else create_model(name, num_classes=10)
    model = randomize(model, seed).double().eval()
    return model, describe(model, res, name), res


def test_registry_and_l1_sums_coupled_layers(randomize):
    assert {"l1", "l2", "random"} <= set(list_criteria())
    with pytest.raises(ValueError, match="known: .*l1"):
        get_criterion("nope")
    model, spec, _ = _setup(randomize, "resnet20")
    scores = score_channels(model, spec, "l1")
    assert set(scores) == {g.id for g in spec.groups}
    g0 = spec.groups[0]
    assert len(g0.members) == 4  # stem + three residual convs of stage 1
    expected = sum(model.get_submodule(n).weight.abs().sum((1, 2, 3)) for n in g0.members)
    assert torch.allclose(scores[0], expected)
    l2 = score_channels(model, spec, "l2")
    assert torch.allclose(l2[0], sum(model.get_submodule(n).weight.flatten(1).norm(dim=1) for n in g0.members))
    r1 = score_channels(model, spec, "random", generator=torch.Generator().manual_seed(5))
    r2 = score_channels(model, spec, "random", generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(r1[g], r2[g]) for g in r1)


def test_data_criterion_requires_batches(randomize):
    register_criterion("_needs_data_test", lambda m, s, b, g: {}, needs_data=True)
    try:
        model, spec, _ = _setup(randomize, "resnet20")
        with pytest.raises(ValueError, match="needs calibration batches"):
            score_channels(model, spec, "_needs_data_test")
        with pytest.raises(ValueError, match="no .* scores"):
            score_channels(model, spec, "_needs_data_test", batches=[])
        with pytest.raises(ValueError, match="already registered"):
            register_criterion("_needs_data_test", lambda m, s, b, g: {})
    finally:
        criteria._CRITERIA.pop("_needs_data_test")


def test_block_mask():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 3, 3, 3, generator=g)
    mask = block_mask(w, 0.25)
    blocks = mask.reshape(2, 4, 3, 3, 3)
    assert torch.equal(blocks.all(1), blocks.any(1))  # whole 4x1 blocks only
    assert blocks.all(1).sum() == round(0.25 * 54)
    norms = w.reshape(2, 4, 27).pow(2).sum(1).flatten()
    kept = blocks.all(1).flatten()
    assert norms[kept].min() >= norms[~kept].max()
    assert block_mask(w, 1.0).all() and not block_mask(w, 0.0).any()
    odd = block_mask(torch.randn(6, 5, generator=g), 0.5)  # padded last block
    assert odd.shape == (6, 5) and odd.sum() > 0


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v2", "blocks"])
def test_order_channels_preserves_function(name, randomize, user_model):
    model, spec, res = _setup(randomize, name, seed=1, user_model=user_model if name == "blocks" else None)
    x = torch.randn(2, 3, res, res, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    before = model(x)
    perms = order_channels(model, spec, "l1")
    assert any(not torch.equal(p, torch.arange(len(p))) for p in perms.values())
    assert torch.allclose(model(x), before, atol=1e-10, rtol=0)
    scores = score_channels(model, spec, "l1")
    assert all(torch.all(s[:-1] >= s[1:]) for s in scores.values())


def _zeroed_reference(model, spec, arch, masks, criterion, seed):
    """The full model, ordered like materialize does, with pruned channels' activations zeroed and masks applied."""
    ref = copy.deepcopy(model)
    order_channels(ref, spec, criterion, generator=torch.Generator().manual_seed(seed))
    norms = norm_layers(ref)
    kept = {x.group: c.out_ch for x, c in zip(spec.layers, arch.layers) if x.group >= 0}
    with torch.no_grad():
        for x, c in zip(spec.layers, arch.layers):
            if x.kind == "fc":  # a hidden linear's pruned outputs are zero; the classifier keeps its classes
                fc = ref.get_submodule(x.name)
                fc.weight[c.out_ch:] = 0
                if fc.bias is not None:
                    fc.bias[c.out_ch:] = 0
                continue
            conv = ref.get_submodule(x.name)
            for t in (conv.weight, conv.bias):
                if t is not None:
                    t[c.out_ch:] = 0
            if x.name in norms:
                bn = ref.get_submodule(norms[x.name])
                bn.weight[c.out_ch:] = 0
                bn.bias[c.out_ch:] = 0
            if x.kind == "depthwise":
                conv.weight[: c.out_ch] *= masks[x.name]
            else:
                cols = input_index(x, {}, kept)
                w = conv.weight[: c.out_ch]
                w[:, cols] *= masks[x.name]
                conv.weight[: c.out_ch] = w
    return ref


@pytest.mark.parametrize("name", [*list_models(), "blocks"])
def test_materialize_equals_zeroed_full_model(name, randomize, user_model):
    model, spec, res = _setup(randomize, name, seed=2, user_model=user_model if name == "blocks" else None)
    space = SearchSpace(spec)
    rng = np.random.default_rng(3)
    genes = space.snap(np.vstack([space.minimal(), rng.random((2, space.n_genes))]))
    x = torch.randn(2, 3, res, res, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for i, (g, criterion) in enumerate(zip(genes, ["l1", "l2", "random"])):
        arch = space.decode(g)
        small, masks = materialize(model, arch, criterion, spec=spec, generator=torch.Generator().manual_seed(i))
        convs = {n: m for n, m in small.named_modules() if isinstance(m, nn.Conv2d)}
        for layer, c in zip(spec.layers, arch.layers):
            if layer.kind != "fc":
                w = convs[layer.name].weight
                assert w.shape[0] == c.out_ch and (w.shape[1] == c.in_ch or layer.kind == "depthwise")
                assert torch.equal(w != 0, masks[layer.name] & (w != 0))
                if layer.kind != "depthwise":
                    blocks = w.shape[0] // 4 * w[0].numel() if w.shape[0] % 4 == 0 else None
                    if blocks:
                        assert masks[layer.name].sum() == 4 * round(c.density * blocks)
        kept = sum(m.sum().item() for m in masks.values())
        full_params = sum(p.numel() for p in model.parameters())
        assert sum(p.numel() for p in small.parameters()) < full_params
        assert kept > 0
        ref = _zeroed_reference(model, spec, arch, masks, criterion, i)
        with torch.no_grad():
            out, expected = small(x), ref(x)
        assert out.shape == (2, 10)
        assert (out - expected).abs().max().item() <= 1e-5
        assert expected.abs().max() > 1e-3


def test_materialize_leaves_model_and_checks_arch(randomize):
    model, spec, res = _setup(randomize, "resnet20")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    space = SearchSpace(spec)
    arch = space.decode(space.minimal())
    materialize(model, arch, spec=spec)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    arch.layers[0] = type(arch.layers[0])(arch.layers[0].name, 999, 3, 1.0)
    with pytest.raises(ValueError, match="exceed"):
        slice_model(model, spec, arch)
    arch = space.decode(space.full())
    arch.layers[1] = type(arch.layers[1])(arch.layers[1].name, 8, 16, 1.0)
    with pytest.raises(ValueError, match=r"layer1.0.conv2' reads 16 channels but its input groups \[1\] keep 8"):
        slice_model(model, spec, arch)
    arch.layers[2] = type(arch.layers[2])(arch.layers[2].name, 8, 8, 1.0)
    with pytest.raises(ValueError, match="coupling group 0 keeps 16"):
        slice_model(model, spec, arch)
