import copy

import numpy as np
import pytest
import torch

from jcw.layers import describe
from jcw.prune.materialize import materialize, order_channels
from jcw.models import create_model
from jcw.core.space import SearchSpace
from jcw.search.supernet import Supernet


def _randomized(name: str, classes: int, seed: int, model=None):
    gen = torch.Generator().manual_seed(seed)
    model = create_model(name, num_classes=classes) if model is None else model
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
    return model.eval()


@pytest.mark.parametrize("name,res", [("resnet20", 16), ("blocks", 32),
                                      pytest.param("mobilenet_v2", 32, marks=pytest.mark.slow)])
def test_supernet_candidate_equals_materialized_model(name, res, user_model):
    model = _randomized(name, 10, seed=1, model=user_model(name) if name == "blocks" else None)
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


def _resnet20_supernet(seed: int):
    model = _randomized("resnet20", 10, seed=seed).train()
    spec = describe(model, 16, name="resnet20")
    space = SearchSpace(spec)
    return Supernet(model, spec), space


def _batches(seed: int, n: int = 8, res: int = 16):
    gen = torch.Generator().manual_seed(seed)

    def next_batch():
        return torch.randn(n, 3, res, res, generator=gen), torch.randint(0, 10, (n,), generator=gen)
    return next_batch


def test_sandwich_trains_the_largest_the_smallest_and_k_sampled():
    from jcw.search.supernet import SandwichRule, SupernetEstimator
    from jcw.train.loops import ordered_batches

    supernet, space = _resnet20_supernet(5)
    rng = np.random.default_rng(6)
    genes = space.snap(rng.uniform(space.lower, space.upper, size=(5, space.n_genes)))
    refs = np.stack([space.full(), space.uniform(0.5)])
    val = [_batches(7)()]
    estimator = SupernetEstimator(supernet, space, _batches(8), val, val, steps=6, lr=0.01,
                                  generator=torch.Generator().manual_seed(9), references=refs,
                                  rule="sandwich", sampled=2)
    estimator(genes)
    scored = np.concatenate([genes, refs])
    macs = space.macs(scored)
    largest, smallest = int(np.argmax(macs)), int(np.argmin(macs))
    assert largest == len(genes)  # the unpruned reference is the largest member of every scored set
    assert len(estimator.trained) == 6
    drawn = set()
    for step in estimator.trained:
        assert step[:2] == [largest, smallest]
        assert len(step) == 4 and len(set(step)) == 4
        drawn.update(step[2:])
    assert len(drawn) >= 3  # the sampled members change from step to step
    # with no sampled members a step is just the two ends of the sandwich
    rule = SandwichRule(macs, torch.Generator().manual_seed(0), sampled=0)
    assert rule.pick() == [largest, smallest]


def test_one_candidate_rule_trains_one_member_per_step():
    from jcw.search.supernet import OneCandidateRule

    supernet, space = _resnet20_supernet(10)
    genes = np.stack([space.full(), space.minimal(), space.uniform(0.7)])
    out_ch, _, density = space.decode_arrays(genes)
    supernet.set_candidates(out_ch, density)
    rule = OneCandidateRule(space.macs(genes), torch.Generator().manual_seed(1))
    trained = supernet.train_steps(_batches(2), 12, rule, torch.optim.SGD(supernet.parameters(), lr=0.01))
    assert all(len(step) == 1 for step in trained)
    assert {s[0] for s in trained} == {0, 1, 2}


def test_distillation_targets_are_the_largest_outputs_detached():
    from jcw.search.supernet import distillation_loss

    supernet, space = _resnet20_supernet(11)
    genes = np.stack([space.full(), space.minimal()])
    out_ch, _, density = space.decode_arrays(genes)
    supernet.set_candidates(out_ch, density)
    batch = _batches(12)()
    supernet.select(0)
    with torch.no_grad():
        want_teacher = supernet(batch[0])
    teacher = supernet.train_step(batch, [0, 1], True, torch.optim.SGD(supernet.parameters(), lr=0.0))
    torch.testing.assert_close(teacher, want_teacher)
    assert not teacher.requires_grad

    # the loss is the cross-entropy against the teacher's softmax, and no gradient reaches the teacher
    gen = torch.Generator().manual_seed(13)
    student = torch.randn(6, 10, generator=gen, requires_grad=True)
    teacher_logits = torch.randn(6, 10, generator=gen, requires_grad=True)
    loss = distillation_loss(student, teacher_logits)
    p = torch.softmax(teacher_logits.detach(), 1)
    want = -(p * torch.log_softmax(student.detach(), 1)).sum(1).mean()
    torch.testing.assert_close(loss.detach(), want)
    loss.backward()
    assert teacher_logits.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0
    # the hard-label loss differs: distillation really uses the soft targets
    assert not torch.isclose(loss, torch.nn.functional.cross_entropy(student, teacher_logits.argmax(1)))


def test_references_are_scored_with_every_set():
    from jcw.search.supernet import SupernetEstimator

    supernet, space = _resnet20_supernet(14)
    refs = np.stack([space.full(), space.uniform(0.75), space.uniform(0.5)])
    val = [_batches(15)()]
    estimator = SupernetEstimator(supernet, space, _batches(16), val, val, steps=2, lr=0.01,
                                  generator=torch.Generator().manual_seed(17), references=refs)
    rng = np.random.default_rng(18)
    for n in (3, 5):
        genes = space.snap(rng.uniform(space.lower, space.upper, size=(n, space.n_genes)))
        loss, acc = estimator(genes)
        assert loss.shape == acc.shape == (n,)
        ref_loss, ref_acc = estimator.reference_scores
        assert ref_loss.shape == (3,) and np.isfinite(ref_loss).all()
        # measured on the same terms: re-scoring the references alone with the same weights agrees
        again_loss, _ = estimator.measure(refs)
        np.testing.assert_allclose(again_loss, ref_loss, rtol=1e-5)
        assert supernet.n_candidates == 3


def test_warm_up_trains_sandwiches_over_the_whole_space():
    from jcw.search.supernet import SupernetEstimator

    start, _ = _resnet20_supernet(19)
    start = copy.deepcopy(start.net.state_dict())

    def warmed(seed):
        supernet, space = _resnet20_supernet(19)
        supernet.net.load_state_dict(start)
        val = [_batches(20)()]
        estimator = SupernetEstimator(supernet, space, _batches(21), val, val, steps=0, lr=0.05,
                                      generator=torch.Generator().manual_seed(seed), sampled=2)
        before = {k: v.clone() for k, v in supernet.net.state_dict().items()}
        estimator.warm_up(3)
        return supernet, space, before

    supernet, space, before = warmed(22)
    out_ch, _, _ = space.decode_arrays(np.stack([space.full(), space.minimal()]))
    # the last step's set: the unpruned model, the space's smallest arch, then 2 random archs
    assert supernet.n_candidates == 4
    np.testing.assert_array_equal(supernet.active.out_ch[:2], out_ch)
    random_rows = supernet.active.out_ch[2:]
    assert ((random_rows >= out_ch[1]) & (random_rows <= out_ch[0])).all() and (random_rows != out_ch[1]).any()
    after = supernet.net.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if after[k].is_floating_point())
    again, _, _ = warmed(22)
    for k, v in again.net.state_dict().items():
        torch.testing.assert_close(v, after[k])


def test_a_step_with_exploding_gradients_is_bounded_and_a_non_finite_one_skipped():
    """A candidate whose block masks leave channels nearly constant can blow one step's gradient up
    (BatchNorm backward factors of 1/sqrt(eps) per layer: the default search once got 1e20, then NaN
    everywhere).  A supernet step scales the gradient down to MAX_GRAD_NORM and skips a non-finite one."""
    from jcw.search.supernet import MAX_GRAD_NORM

    supernet, space = _resnet20_supernet(11)
    genes = np.stack([space.full()])
    out_ch, _, density = space.decode_arrays(genes)
    supernet.set_candidates(out_ch, density)
    params = [p for p in supernet.parameters() if p.requires_grad]
    batch = _batches(3)()

    def step_with(scale: float):
        hooks = [p.register_hook(lambda g: g * scale) for p in params]
        before = [p.detach().clone() for p in params]
        optimizer = torch.optim.SGD(params, lr=1.0)  # no momentum: the update is the (clipped) gradient
        try:
            supernet.train_step(batch, [0], False, optimizer)
        finally:
            for h in hooks:
                h.remove()
        return torch.cat([(p.detach() - b).flatten() for p, b in zip(params, before)])

    update = step_with(1e8)
    assert torch.isfinite(update).all()
    assert float(update.norm()) == pytest.approx(MAX_GRAD_NORM, rel=1e-3)
    for scale in (1e20, float("inf")):  # a norm past float range, an infinite gradient: no step
        skipped = step_with(scale)
        assert float(skipped.abs().max()) == 0.0
    assert all(torch.isfinite(p).all() for p in params)
    small = step_with(1e-6)  # a healthy-sized gradient is left as it is
    assert 0 < float(small.norm()) < MAX_GRAD_NORM
