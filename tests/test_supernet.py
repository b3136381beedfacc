import numpy as np
import pytest
import torch

from jcw.layers import describe
from jcw.materialize import materialize, order_channels
from jcw.models import create_model
from jcw.space import SearchSpace
from jcw.supernet import Supernet


def _randomized(name: str, classes: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    model = create_model(name, num_classes=classes)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
    return model.eval()


@pytest.mark.parametrize("name,res", [("resnet20", 16), pytest.param("mobilenet_v2", 32, marks=pytest.mark.slow)])
def test_supernet_candidate_equals_materialized_model(name, res):
    model = _randomized(name, 10, seed=1)
    spec = describe(model, res, name=name)
    order_channels(model, spec, "l1")
    space = SearchSpace(spec, mode="joint")
    rng = np.random.default_rng(0)
    genes = space.snap(rng.uniform(space.lower, space.upper, size=(2, space.n_genes)))
    out_ch, _, density = space.decode_arrays(genes)
    assert (density < 1).any() and (out_ch < np.array([x.out_ch for x in spec.layers])).any()
    supernet = Supernet(model, spec).eval()
    supernet.set_candidates(out_ch, density)
    x = torch.randn(4, 3, res, res, generator=torch.Generator().manual_seed(2))
    for i in range(len(genes)):
        small, masks = materialize(model, space.decode(genes[i]), spec=spec)
        supernet.select(i)
        with torch.no_grad():
            got = supernet(x)
            want = small.eval()(x)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    supernet.select(None)
    with torch.no_grad():
        torch.testing.assert_close(supernet(x), model(x), rtol=1e-5, atol=1e-6)


def test_supernet_state_dict_keys_are_the_models():
    model = create_model("resnet20", num_classes=10)
    spec = describe(model, 16, name="resnet20")
    supernet = Supernet(model, spec)
    assert set(supernet.net.state_dict()) == set(model.state_dict())


def test_calibration_gives_each_candidate_its_own_statistics():
    model = _randomized("resnet20", 10, seed=3)
    spec = describe(model, 16, name="resnet20")
    space = SearchSpace(spec)
    genes = np.stack([space.full(), space.minimal()])
    supernet = Supernet(model, spec)
    out_ch, _, density = space.decode_arrays(genes)
    supernet.set_candidates(out_ch, density)
    gen = torch.Generator().manual_seed(4)
    batches = [(torch.randn(8, 3, 16, 16, generator=gen) * 2 + 1, torch.zeros(8, dtype=torch.long)) for _ in range(2)]
    supernet.calibrate(0, batches)
    supernet.calibrate(1, batches)
    bn = supernet.net.bn1
    c = int(out_ch[1, 0])
    assert not torch.allclose(bn.cand_mean[0, :c], bn.cand_mean[1, :c])
    # the stem BN of the full candidate equals the mean over the two batches of per-batch means
    with torch.no_grad():
        stem = torch.nn.functional.conv2d
        means = [stem(b[0], model.conv1.weight, None, 1, 1).mean((0, 2, 3)) for b in batches]
    torch.testing.assert_close(bn.cand_mean[0], torch.stack(means).mean(0), rtol=1e-4, atol=1e-5)
