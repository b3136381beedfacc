"""jcw.engine: per-op parity with onnxruntime, fusion and planning, errors, timing, torch-free import."""

import subprocess
import sys
import textwrap

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from jcw.engine import ENGINE_VERSION, Engine, time_conv
from jcw.core.errors import UsageError

OPSET = 17


def block_sparse(rng, shape, density):
    """Random OIHW weights keeping round(density * blocks) random 4x1 blocks (4 output channels x 1 position)."""
    w = rng.standard_normal(shape).astype(np.float32) * np.float32((2.0 / np.prod(shape[1:])) ** 0.5)
    rows = -(-shape[0] // 4)
    positions = int(np.prod(shape[1:]))
    keep = np.zeros(rows * positions, bool)
    keep[rng.permutation(keep.size)[: round(density * keep.size)]] = True
    mask = np.repeat(keep.reshape(rows, 1, positions), 4, axis=1).reshape(rows * 4, *shape[1:])[: shape[0]]
    return w * mask


def make_model(nodes, inits, in_shape, opset=OPSET, out="y"):
    """An ONNX model with input 'x' (N, *in_shape) and output `out`."""
    graph = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def ort_run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def assert_close(got, want, rel=1e-4):
    assert got.shape == want.shape
    scale = max(float(np.abs(want).max()), 1e-6)
    assert float(np.abs(got - want).max()) <= rel * scale, float(np.abs(got - want).max()) / scale


def check_parity(model, x, **engine_kw):
    engine = Engine(model, **engine_kw)
    assert_close(engine.run(x), ort_run(model, x))
    return engine


def conv_node(name, x, y, w, b=None, stride=1, pad=0, group=1):
    return helper.make_node("Conv", [x, w] + ([b] if b else []), [y], name=name, strides=[stride, stride],
                            pads=[pad] * 4, group=group)


CONV_CASES = [
    # cin, cout, hw, k, stride, pad, groups, density
    (3, 8, 17, 7, 2, 3, 1, 1.0),       # stem-like, odd size
    (5, 7, 9, 3, 1, 1, 1, 0.5),        # channels not multiples of 4
    (16, 24, 8, 1, 1, 0, 1, 0.2),      # pointwise SpMM
    (12, 20, 11, 3, 2, 1, 1, 0.3),     # strided 3x3
    (8, 8, 10, 3, 1, 1, 1, 0.0),       # fully pruned layer
    (24, 24, 9, 3, 1, 1, 24, 1.0),     # depthwise stride 1
    (24, 24, 10, 3, 2, 1, 24, 1.0),    # depthwise stride 2
    (9, 13, 6, 1, 2, 0, 1, 0.1),       # strided pointwise
]


@pytest.mark.parametrize("mode", ["auto", "sparse", "dense"])
@pytest.mark.parametrize("cin,cout,hw,k,stride,pad,groups,density", CONV_CASES)
def test_conv_bias_relu_matches_onnxruntime(cin, cout, hw, k, stride, pad, groups, density, mode):
    rng = np.random.default_rng(cin * 1000 + cout * 10 + k)
    w = block_sparse(rng, (cout, cin // groups, k, k), density)
    b = rng.standard_normal(cout).astype(np.float32)
    model = make_model([conv_node("c", "x", "h", "w", "b", stride, pad, groups),
                        helper.make_node("Relu", ["h"], ["y"], name="r")], {"w": w, "b": b}, (cin, hw, hw))
    x = rng.standard_normal((2, cin, hw, hw)).astype(np.float32)
    engine = check_parity(model, x, mode=mode)
    (conv,) = engine.plan
    assert conv.act == "relu" and conv.op == ("depthwise" if groups > 1 else "conv")
    if mode == "dense":
        assert conv.kernel == "dense"
    if mode == "sparse" and groups == 1:
        blocks = -(-cout // 4) * cin * k * k
        assert conv.kernel == "sparse" and conv.density == pytest.approx(round(density * blocks) / blocks)


def bn_inits(rng, c, prefix):
    return {f"{prefix}_s": rng.uniform(0.5, 1.5, c).astype(np.float32),
            f"{prefix}_b": rng.normal(0, 0.1, c).astype(np.float32),
            f"{prefix}_m": rng.normal(0, 0.1, c).astype(np.float32),
            f"{prefix}_v": rng.uniform(0.5, 2.0, c).astype(np.float32)}


def bn_node(prefix, x, y):
    return helper.make_node("BatchNormalization", [x] + [f"{prefix}_{k}" for k in "sbmv"], [y], name=prefix,
                            epsilon=1e-5)


def residual_block(rng, c, hw, act_after_add="Relu"):
    """conv-bn-clip(relu6) -> conv-bn -> add(x) -> relu: the BN folds, the add and final relu fuse."""
    inits = {"w1": block_sparse(rng, (c, c, 3, 3), 0.4), "w2": block_sparse(rng, (c, c, 3, 3), 0.6),
             "lo": np.array(0, np.float32), "hi": np.array(6, np.float32)}
    inits.update(bn_inits(rng, c, "bn1"))
    inits.update(bn_inits(rng, c, "bn2"))
    nodes = [conv_node("c1", "x", "a", "w1", None, 1, 1), bn_node("bn1", "a", "a2"),
             helper.make_node("Clip", ["a2", "lo", "hi"], ["a3"], name="clip"),
             conv_node("c2", "a3", "b", "w2", None, 1, 1), bn_node("bn2", "b", "b2"),
             helper.make_node("Add", ["x", "b2"], ["s"], name="add")]
    if act_after_add:
        nodes.append(helper.make_node(act_after_add, ["s"], ["y"], name="final"))
    return make_model(nodes, inits, (c, hw, hw), out="y" if act_after_add else "s")


def test_batchnorm_folds_and_residual_add_fuses_into_conv_epilogue():
    rng = np.random.default_rng(1)
    model = residual_block(rng, 10, 7)
    engine = check_parity(model, rng.standard_normal((3, 10, 7, 7)).astype(np.float32))
    assert [(p.op, p.act, p.residual) for p in engine.plan] == [("conv", "relu6", False), ("conv", "relu", True)]


def test_residual_add_without_activation_fuses():
    rng = np.random.default_rng(2)
    model = residual_block(rng, 6, 5, act_after_add=None)
    engine = check_parity(model, rng.standard_normal((1, 6, 5, 5)).astype(np.float32))
    assert [(p.op, p.act, p.residual) for p in engine.plan] == [("conv", "relu6", False), ("conv", "none", True)]


def test_unfusable_add_and_relu_run_as_own_steps():
    rng = np.random.default_rng(3)
    w = block_sparse(rng, (6, 6, 1, 1), 0.5)
    # conv output feeds both the add and the graph output path via relu, so nothing can fuse
    model = make_model([conv_node("c", "x", "h", "w"), helper.make_node("Relu", ["h"], ["r"], name="r"),
                        helper.make_node("Add", ["h", "r"], ["s"], name="add"),
                        helper.make_node("Relu", ["x"], ["rx"], name="rx"),
                        helper.make_node("Add", ["s", "rx"], ["y"], name="add2")], {"w": w}, (6, 5, 4))
    engine = check_parity(model, rng.standard_normal((2, 6, 5, 4)).astype(np.float32))
    assert [p.op for p in engine.plan] == ["conv", "act", "add", "act", "add"]


def test_pools_flatten_gemm_classifier():
    rng = np.random.default_rng(4)
    w = block_sparse(rng, (12, 5, 3, 3), 0.5)
    fc = rng.standard_normal((7, 12)).astype(np.float32)
    model = make_model([conv_node("c", "x", "h", "w", None, 1, 1), helper.make_node("Relu", ["h"], ["r"], name="r"),
                        helper.make_node("MaxPool", ["r"], ["p"], name="mp", kernel_shape=[3, 3], strides=[2, 2],
                                         pads=[1, 1, 1, 1]),
                        helper.make_node("GlobalAveragePool", ["p"], ["g"], name="gap"),
                        helper.make_node("Flatten", ["g"], ["f"], name="flat", axis=1),
                        helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], name="fc", transB=1)],
                       {"w": w, "fc": fc, "fcb": rng.standard_normal(7).astype(np.float32)}, (5, 13, 11))
    engine = check_parity(model, rng.standard_normal((3, 5, 13, 11)).astype(np.float32))
    assert engine.output_shape == (7,)
    assert [p.op for p in engine.plan] == ["conv", "maxpool", "avgpool", "reshape", "linear"]


def test_reducemean_reshape_matmul_add_identity_dropout():
    rng = np.random.default_rng(5)
    mm = rng.standard_normal((9, 4)).astype(np.float32)
    model = make_model([helper.make_node("Identity", ["x"], ["i"], name="id"),
                        helper.make_node("Dropout", ["i"], ["d"], name="drop"),
                        helper.make_node("ReduceMean", ["d", "axes"], ["m"], name="mean", keepdims=1),
                        helper.make_node("Reshape", ["m", "shape"], ["f"], name="view"),
                        helper.make_node("MatMul", ["f", "mm"], ["z"], name="mm"),
                        helper.make_node("Add", ["z", "bias"], ["y"], name="bias")],
                       {"axes": np.array([2, 3], np.int64), "shape": np.array([-1, 9], np.int64), "mm": mm,
                        "bias": rng.standard_normal(4).astype(np.float32)}, (9, 3, 5), opset=18)
    engine = check_parity(model, rng.standard_normal((2, 9, 3, 5)).astype(np.float32))
    assert [p.op for p in engine.plan] == ["avgpool", "reshape", "linear"]


@pytest.mark.parametrize("density", [1.0, 0.25])
def test_gemm_without_transpose_and_two_threads(density):
    rng = np.random.default_rng(6)
    w = block_sparse(rng, (33, 20, 1, 1), density).reshape(33, 20)
    model = make_model([helper.make_node("Flatten", ["x"], ["f"], name="flat"),
                        helper.make_node("Gemm", ["f", "w"], ["y"], name="fc")], {"w": w.T.copy()}, (5, 2, 2))
    check_parity(model, rng.standard_normal((4, 5, 2, 2)).astype(np.float32), threads=2)


def test_two_threads_match_one_thread_on_a_residual_block():
    rng = np.random.default_rng(7)
    model = residual_block(rng, 20, 12)
    x = rng.standard_normal((2, 20, 12, 12)).astype(np.float32)
    one, two = Engine(model, threads=1).run(x), Engine(model, threads=2).run(x)
    assert_close(two, one, rel=1e-5)


@pytest.mark.parametrize("k,threads", [(1, 1), (1, 2), (3, 1), (3, 2)])
def test_conv_whose_residual_is_its_own_input(k, threads):
    """y = relu(conv(a) + a): the fused residual is the conv's input, so the output must not be
    written over it (a 1x1 conv reads every channel of a pixel after storing some of them; with
    threads, row bands read halo rows that the neighbouring band's output would overwrite)."""
    rng = np.random.default_rng(11)
    c, hw = 16, 24
    inits = {"w0": block_sparse(rng, (c, 3, 3, 3), 1.0), "w1": block_sparse(rng, (c, c, k, k), 0.5)}
    nodes = [conv_node("stem", "x", "a0", "w0", None, 1, 1), helper.make_node("Relu", ["a0"], ["a"], name="r0"),
             conv_node("c1", "a", "b", "w1", None, 1, k // 2), helper.make_node("Add", ["b", "a"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["y"], name="r1")]
    model = make_model(nodes, inits, (3, hw, hw))
    engine = check_parity(model, rng.standard_normal((2, 3, hw, hw)).astype(np.float32), threads=threads)
    assert [(p.op, p.residual) for p in engine.plan] == [("conv", False), ("conv", True)]


def test_output_can_be_an_intermediate_feature_map():
    rng = np.random.default_rng(8)
    w = block_sparse(rng, (6, 3, 3, 3), 1.0)
    model = make_model([conv_node("c", "x", "y", "w", None, 2, 1)], {"w": w}, (3, 9, 9))
    engine = check_parity(model, rng.standard_normal((2, 3, 9, 9)).astype(np.float32))
    assert engine.output_shape == (6, 5, 5)


def test_input_errors_are_clear():
    rng = np.random.default_rng(9)
    engine = Engine(residual_block(rng, 4, 5))
    with pytest.raises(UsageError, match=r"\(N, 4, 5, 5\)"):
        engine.run(np.zeros((1, 4, 5, 6), np.float32))
    with pytest.raises(UsageError, match="float32"):
        engine.run(np.zeros((1, 4, 5, 5), np.float64))
    with pytest.raises(UsageError, match="numpy array"):
        engine.run([[0.0]])
    with pytest.raises(UsageError, match=r"\(N, 4, 5, 5\)"):
        engine.run(np.zeros((4, 5, 5), np.float32))


def test_model_errors_name_the_op_and_node(tmp_path):
    model = make_model([helper.make_node("Tanh", ["x"], ["y"], name="gate")], {}, (3, 4, 4))
    with pytest.raises(UsageError, match="Tanh.*gate"):
        Engine(model)
    clip = make_model([helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="clip1")],
                      {"lo": np.array(-1, np.float32), "hi": np.array(1, np.float32)}, (3, 4, 4))
    with pytest.raises(UsageError, match="clip1.*ReLU6"):
        Engine(clip)
    with pytest.raises(UsageError, match="no such ONNX file"):
        Engine(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\xffnot a protobuf" * 10)
    with pytest.raises(UsageError, match="not a readable ONNX model"):
        Engine(junk)
    with pytest.raises(UsageError, match="threads"):
        Engine(clip, threads=0)


def test_engine_loads_from_a_path_and_keeps_metadata(tmp_path):
    rng = np.random.default_rng(10)
    model = residual_block(rng, 4, 6)
    helper.set_model_props(model, {"jcw.predicted_ms": '{"host": 1.5}'})
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    engine = Engine(str(path))
    assert engine.metadata["jcw.predicted_ms"] == '{"host": 1.5}'
    x = rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
    assert_close(engine.run(x), ort_run(model, x))


def test_benchmark_and_profile_report_positive_times():
    rng = np.random.default_rng(11)
    engine = Engine(residual_block(rng, 8, 10))
    x = rng.standard_normal((1, 8, 10, 10)).astype(np.float32)
    ms = engine.benchmark(x, repeats=7, warmup=1)
    assert ms.shape == (7,) and (ms > 0).all()
    prof = engine.profile(x, repeats=3, warmup=1)
    assert list(prof) == [p.name for p in engine.plan] and all(t > 0 for t in prof.values())
    assert "conv" in engine.summary()


@pytest.mark.parametrize("residual", [False, True])
def test_time_conv_times_one_layer(residual):
    rng = np.random.default_rng(12)
    w = block_sparse(rng, (16, 8, 3, 3), 0.3)
    ms = time_conv(w, np.zeros(16, np.float32), 1, 1, 1, 12, act="relu6", residual=residual, repeats=5, warmup=1)
    assert ms.shape == (5,) and (ms > 0).all()
    dw = time_conv(rng.standard_normal((8, 1, 3, 3)).astype(np.float32), None, 2, 1, 8, (9, 7), repeats=3)
    assert dw.shape == (3,)
    with pytest.raises(UsageError, match="act"):
        time_conv(w, None, 1, 1, 1, 12, act="tanh")
    with pytest.raises(UsageError, match="groups"):
        time_conv(w, None, 1, 1, 3, 12)


def test_engine_version_names_the_compiled_kernels():
    version, digest = ENGINE_VERSION.split("+")
    assert version and len(digest) == 12 and int(digest, 16) >= 0


def test_engine_and_run_work_without_torch(tmp_path):
    rng = np.random.default_rng(13)
    path = tmp_path / "m.onnx"
    onnx.save(residual_block(rng, 4, 6), str(path))
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None
        import numpy as np
        import jcw.engine
        import jcw.cli.run
        y = jcw.engine.Engine({str(path)!r}).run(np.ones((1, 4, 6, 6), np.float32))
        assert y.shape == (1, 4, 6, 6)
        assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
    """)
    subprocess.run([sys.executable, "-P", "-c", code], check=True)


def test_batchnorm_that_cannot_fold_runs_as_a_per_channel_conv():
    rng = np.random.default_rng(14)
    inits = {"w": block_sparse(rng, (6, 5, 3, 3), 1.0)}
    inits.update(bn_inits(rng, 5, "bnx"))
    inits.update(bn_inits(rng, 6, "bnc"))
    # bnx normalizes the network input (no conv before it); conv output feeds both bnc and the add
    model = make_model([bn_node("bnx", "x", "n"), conv_node("c", "n", "h", "w", None, 1, 1),
                        bn_node("bnc", "h", "hb"), helper.make_node("Add", ["h", "hb"], ["y"], name="add")],
                       inits, (5, 7, 6))
    engine = check_parity(model, rng.standard_normal((2, 5, 7, 6)).astype(np.float32))
    # the add fuses into the per-channel conv of bnc as its residual
    assert [(p.op, p.residual) for p in engine.plan] == [("depthwise", False), ("conv", False), ("depthwise", True)]


def test_identity_network_returns_its_input():
    model = make_model([helper.make_node("Identity", ["x"], ["y"], name="id")], {}, (2, 3, 3))
    x = np.random.default_rng(15).standard_normal((2, 2, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(Engine(model).run(x), x)


@pytest.mark.perf
def test_forward_pass_releases_the_gil():
    import threading
    import time

    rng = np.random.default_rng(16)
    engine = Engine(residual_block(rng, 16, 24))
    x = rng.standard_normal((1, 16, 24, 24)).astype(np.float32)
    per_run = float(np.median(engine.benchmark(x, repeats=3, warmup=1)))
    repeats = max(3, int(500 / max(per_run, 1e-3)))  # about 0.5 s inside one C++ call
    worker = threading.Thread(target=engine.benchmark, args=(x, repeats, 0))
    start = last = time.perf_counter()
    longest_pause = 0.0
    worker.start()
    while worker.is_alive():
        now = time.perf_counter()
        longest_pause, last = max(longest_pause, now - last), now
    worker.join()
    # with the GIL held, this loop would stall for the whole call
    assert longest_pause < 0.5 * (time.perf_counter() - start)
