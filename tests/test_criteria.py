"""Channel importance criteria: known answers per criterion, coupled layers, and the whole zoo."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from jcw.prune.criteria import _sensitivity, list_criteria, score_channels
from jcw.layers import describe, trace
from jcw.models import create_model, default_resolution, list_models

RES = 8  # CIFAR ResNets downsample 4x


def _resnet20(seed: int = 0):
    """resnet20 with non-trivial BatchNorm statistics and a confident classifier."""
    g = torch.Generator().manual_seed(seed)
    model = create_model("resnet20", 10).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):  # re-drawn from g: independent of the global RNG
                m.weight.normal_(0.0, (2.0 / (m.out_channels * m.kernel_size[0] ** 2)) ** 0.5, generator=g)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.2, 0.2, generator=g)
                m.running_mean.uniform_(-0.2, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
        model.fc.weight.normal_(0.0, 1.0, generator=g)
    return model, describe(model, RES), g


def _batches(g, n=4, count=2):
    return [(torch.randn(n, 3, RES, RES, generator=g), torch.randint(10, (n,), generator=g)) for _ in range(count)]


def _single_member_group(spec, conv):
    return next(grp.id for grp in spec.groups if grp.members == (conv,))


def _loss_with_gate(model, spec, batch, group, channel, z):
    """Loss with the channel of ``group`` scaled by z after every member's BatchNorm (one shared gate)."""
    norms = trace(model, spec.resolution).norms
    members = next(grp.members for grp in spec.groups if grp.id == group)

    def scale(_m, _i, out):
        out = out.clone()
        out[:, channel] *= z
        return out

    handles = [model.get_submodule(norms[m]).register_forward_hook(scale) for m in members]
    try:
        with torch.no_grad():
            return float(F.cross_entropy(model(batch[0].double()), batch[1]))
    finally:
        for h in handles:
            h.remove()


def test_registry_has_the_six_criteria_and_random():
    assert {"l1", "l2", "gm", "taylor", "es", "kl", "random"} <= set(list_criteria())


@pytest.mark.parametrize("criterion", ["taylor", "es", "kl"])
def test_data_criteria_refuse_to_run_without_batches(criterion):
    model, spec, _ = _resnet20()
    with pytest.raises(ValueError, match="needs calibration batches"):
        score_channels(model, spec, criterion)


@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_zero_filter_scores_lowest_under_norms(criterion):
    model, spec, _ = _resnet20()
    group = _single_member_group(spec, "layer1.1.conv1")
    with torch.no_grad():
        model.layer1[1].conv1.weight[5] = 0
    scores = score_channels(model, spec, criterion)[group]
    assert int(scores.argmin()) == 5 and float(scores[5]) == 0.0
    assert bool((scores[torch.arange(len(scores)) != 5] > 0).all())


def test_norms_of_coupled_layers_are_summed():
    model, spec, _ = _resnet20()
    residual = next(grp for grp in spec.groups if "conv1" in grp.members)
    expected = sum(model.get_submodule(m).weight.detach().abs().flatten(1).sum(1).double() for m in residual.members)
    assert torch.allclose(score_channels(model, spec, "l1")[residual.id], expected)


def test_gm_ranks_a_duplicate_heavy_filter_last_where_norms_rank_it_first():
    model, spec, g = _resnet20()
    group = _single_member_group(spec, "layer2.0.conv1")
    conv = model.layer2[0].conv1  # 32 filters
    with torch.no_grad():
        conv.weight.normal_(0, 0.1, generator=g)
        conv.weight[:20] = torch.randn(conv.weight.shape[1:], generator=g)  # 20 copies of one large filter
    gm = score_channels(model, spec, "gm")[group]
    assert set(torch.argsort(gm)[:20].tolist()) == set(range(20))
    l1 = score_channels(model, spec, "l1")[group]
    assert set(torch.argsort(l1, descending=True)[:20].tolist()) == set(range(20))


def test_taylor_equals_squared_gate_derivative_for_single_and_shared_gates():
    model, spec, g = _resnet20()
    model.double()
    batch = _batches(g, n=8, count=1)[0]
    batches = [(batch[0].double(), batch[1])]
    scores = score_channels(model, spec, "taylor", batches)
    inner = _single_member_group(spec, "layer1.0.conv1")
    residual = spec.layer("conv1").group  # the stem's group: stem + every layer1 conv2 (one shared gate)
    eps = 1e-5
    for group, channel in [(inner, 3), (residual, 7)]:
        up = _loss_with_gate(model, spec, batch, group, channel, 1 + eps)
        down = _loss_with_gate(model, spec, batch, group, channel, 1 - eps)
        derivative = (up - down) / (2 * eps)
        assert float(scores[group][channel]) == pytest.approx(derivative ** 2, rel=1e-4, abs=1e-14)


def test_taylor_of_a_channel_without_affine_output_is_zero():
    model, spec, g = _resnet20()
    with torch.no_grad():
        model.layer1[0].bn1.weight[2] = 0
        model.layer1[0].bn1.bias[2] = 0
    scores = score_channels(model, spec, "taylor", _batches(g))
    s = scores[_single_member_group(spec, "layer1.0.conv1")]
    assert float(s[2]) == 0.0 and bool((s[torch.arange(len(s)) != 2] > 0).all())


def test_es_is_a_share_zero_for_dead_and_near_one_for_dominant_channels():
    model, spec, g = _resnet20()
    with torch.no_grad():
        model.layer1[0].bn1.bias[5] = -100.0  # always negative -> ReLU output 0
        model.layer1[0].bn1.bias[7] = 1e4  # dominates every output of conv2
    scores = score_channels(model, spec, "es", _batches(g))
    s = scores[_single_member_group(spec, "layer1.0.conv1")]
    assert float(s[5]) == 0.0
    assert float(s[7]) > 0.999
    for v in scores.values():
        assert bool(((v >= 0) & (v <= 1 + 1e-6)).all())


def test_es_of_a_skip_connected_group_is_the_max_over_its_readers():
    model, spec, g = _resnet20()
    batches = _batches(g)
    stage3 = spec.layer("fc").in_group
    readers = [x.name for x in spec.layers if x.in_group == stage3]
    assert len(readers) >= 3
    full = score_channels(model, spec, "es", batches)[stage3]
    per_reader = []
    for name in readers:
        sub = torch.zeros_like(full)

        def record(module, inputs, sub=sub):
            sub.copy_(torch.maximum(sub, _sensitivity(module, inputs[0]).double()))
        h = model.get_submodule(name).register_forward_pre_hook(record)
        with torch.no_grad():
            for x, _ in batches:
                model(x)
        h.remove()
        per_reader.append(sub)
    assert torch.allclose(full, torch.stack(per_reader).amax(0))


def test_kl_of_a_dead_channel_is_zero_and_matches_masked_forward():
    model, spec, g = _resnet20()
    with torch.no_grad():
        model.layer2[1].bn1.bias[3] = -100.0
    batches = _batches(g, n=3, count=2)
    scores = score_channels(model, spec, "kl", batches)
    group = _single_member_group(spec, "layer2.1.conv1")
    assert float(scores[group][3]) == 0.0
    # brute force for a residual (shared-mask) channel and an inner one
    residual = spec.layer("fc").in_group
    norms = trace(model, RES).norms
    for grp, channel in [(residual, 5), (group, 4)]:
        members = next(x.members for x in spec.groups if x.id == grp)

        def zero(_m, _i, out):
            out = out.clone()
            out[:, channel] = 0
            return out
        total = 0.0
        with torch.no_grad():
            for x, _ in batches:
                logp = F.log_softmax(model(x).double(), 1)
                hs = [model.get_submodule(norms[m]).register_forward_hook(zero) for m in members]
                logq = F.log_softmax(model(x).double(), 1)
                for h in hs:
                    h.remove()
                total += float((logp.exp() * (logp - logq)).sum())
        expected = total / sum(len(x) for x, _ in batches)
        assert expected > 0
        assert float(scores[grp][channel]) == pytest.approx(expected, rel=1e-4, abs=1e-12)


def test_criteria_leave_the_model_unchanged():
    model, spec, g = _resnet20()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    for criterion in ("taylor", "es", "kl", "gm"):
        score_channels(model, spec, criterion, _batches(g, n=2, count=1))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(getattr(m, "inplace", True) for m in model.modules() if isinstance(m, torch.nn.ReLU))


CHEAP = [c for c in list_criteria() if c != "kl"]
QUICK = ("resnet20", "mobilenet_v2")  # a residual CIFAR net and a depthwise ImageNet net


@pytest.mark.parametrize("name", QUICK)
def test_every_cheap_criterion_runs_on_quick_zoo_models(name):
    _every_criterion(name, CHEAP)


def test_kl_runs_on_a_cifar_resnet():
    _every_criterion("resnet20", ["kl"])


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_every_criterion_runs_on_every_zoo_model(name):
    _every_criterion(name, list_criteria())


def test_every_criterion_runs_on_a_users_model_with_concat_and_squeeze_excitation(user_model):
    _every_criterion("blocks", list_criteria(), user_model("blocks", 10))


def _every_criterion(name, criteria, model=None):
    res = 32 if model is not None else (8 if default_resolution(name) == 32 and name != "vgg16" else 32)
    model = create_model(name, 10) if model is None else model
    spec = describe(model, res)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(2, 3, res, res, generator=g), torch.randint(10, (2,), generator=g))]
    for criterion in criteria:
        scores = score_channels(model, spec, criterion, batches, torch.Generator().manual_seed(2))
        assert sorted(scores) == [grp.id for grp in spec.groups]
        for grp in spec.groups:
            assert scores[grp.id].shape == (grp.channels,)
            assert bool(torch.isfinite(scores[grp.id]).all())
            assert bool((scores[grp.id] >= 0).all())
