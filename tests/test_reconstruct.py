"""Least-squares reconstruction: exact on linear parts, lowers feature-map error and held-out loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jcw.data import load_dataset
from jcw.layers import describe
from jcw.prune.materialize import order_channels, slice_model
from jcw.models import create_model
from jcw.prune.reconstruct import feature_errors, reconstruct
from jcw.core.space import Bounds, SearchSpace
from jcw.train.loops import evaluate, ordered_batches, train

RES = 8  # the digits' native size


def _arch(spec, ratio):
    space = SearchSpace(spec, bounds=Bounds(*[0.0] * 9), mode="channel")
    return space.decode(space.snap(space.uniform(ratio))[0])


@pytest.fixture(scope="module")
def pretrained():
    data = load_dataset("digits", resolution=RES, seed=0)
    model = create_model("resnet20", data.num_classes)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # initial weights drawn from g, not the global RNG
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, (2.0 / p[0].numel()) ** 0.5, generator=g)
    train(model, data.train, epochs=2, batch_size=64, lr=0.05, generator=g, quiet=True)
    spec = describe(model, RES)
    order_channels(model, spec, "l1")
    return model.eval(), spec, data


def test_reconstruction_lowers_feature_error_and_held_out_loss(pretrained):
    model, spec, data = pretrained
    arch = _arch(spec, 0.5)
    pruned = slice_model(model, spec, arch)
    images = ordered_batches(data.train, 256, limit=256)[0][0]
    held_out = ordered_batches(data.val, 256)
    before_err = feature_errors(model, pruned, spec, images)
    before_loss, _ = evaluate(pruned, held_out)
    fits = reconstruct(model, pruned, spec, images, generator=torch.Generator().manual_seed(0))
    after_err = feature_errors(model, pruned, spec, images)
    after_loss, _ = evaluate(pruned, held_out)
    full_loss, _ = evaluate(model, held_out)
    assert [f.name for f in fits] == [x.name for x in spec.layers]
    assert all(f.after <= f.before * (1 + 1e-3) + 1e-4 for f in fits)
    last_conv = spec.layers[-2].name
    assert after_err[last_conv] < 0.8 * before_err[last_conv]
    assert after_err["fc"] < 0.8 * before_err["fc"]
    assert after_loss < before_loss
    assert full_loss < before_loss


def test_first_layer_needs_no_correction_and_full_width_is_unchanged(pretrained):
    model, spec, data = pretrained
    images = ordered_batches(data.train, 64, limit=64)[0][0]
    pruned = slice_model(model, spec, _arch(spec, 0.5))
    fits = reconstruct(model, pruned, spec, images)
    assert fits[0].before == pytest.approx(0.0, abs=1e-6) and fits[0].after == pytest.approx(0.0, abs=1e-4)
    full = slice_model(model, spec, _arch(spec, 1.0))
    x = images[:8]
    with torch.no_grad():
        reference = model(x)
    reconstruct(model, full, spec, images)
    with torch.no_grad():
        assert torch.allclose(full(x), reference, atol=1e-4, rtol=1e-4)


def test_merged_weights_reproduce_the_corrected_features(pretrained):
    model, spec, data = pretrained
    images = ordered_batches(data.train, 128, limit=128)[0][0]
    pruned = slice_model(model, spec, _arch(spec, 0.6))
    fits = reconstruct(model, pruned, spec, images, positions=10**9)
    errors = feature_errors(model, pruned, spec, images)  # a fresh pass with the merged weights
    for f in fits:
        assert errors[f.name] == pytest.approx(f.after, rel=1e-3, abs=1e-6)


def test_original_model_is_not_modified_and_bad_images_are_refused(pretrained):
    model, spec, data = pretrained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = slice_model(model, spec, _arch(spec, 0.5))
    reconstruct(model, pruned, spec, ordered_batches(data.train, 32, limit=32)[0][0])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="images"):
        reconstruct(model, pruned, spec, torch.zeros(3, RES, RES))


@pytest.mark.parametrize("name", ["mobilenet_v2", pytest.param("vgg16", marks=pytest.mark.slow)])
def test_reconstruction_runs_on_depthwise_and_biased_convs(name):
    model = create_model(name, 10).eval()
    spec = describe(model, 32)
    g = torch.Generator().manual_seed(3)
    images = torch.randn(4, 3, 32, 32, generator=g)
    pruned = slice_model(model, spec, _arch(spec, 0.7))
    fits = reconstruct(model, pruned, spec, images, generator=g)
    assert len(fits) == len(spec.layers)
    assert all(np.isfinite([f.before, f.after]).all() for f in fits)
    with torch.no_grad():
        assert torch.isfinite(pruned(images)).all()
