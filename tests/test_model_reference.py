"""--model REF: a zoo name, path/to/file.py:factory or package.module:factory, for every command; results
record the reference, so train and export rebuild the model without --model."""

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

import jcw
from jcw.cli.main import main as jcw_main
from jcw.core.errors import UsageError
from jcw.engine import Engine
from jcw.export import read_metadata
from jcw.models import load_model, model_label, model_name, model_reference
from jcw.train.stages import MODEL, load_trained

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
TINY = TESTS / "user_models" / "tiny.py"
SEARCH = ["--device", "a53", "--threads", "4", "--resolution", "32", "--train-resolution", "16", "--population", "4",
          "--generations", "1", "--supernet-steps", "2", "--seed", "3", "--quiet"]
TRAIN = ["--from-scratch", "--epochs-dense", "1", "--epochs-admm", "1", "--epochs-finetune", "1", "--lr", "0.1",
         "--rho", "0.1", "--quiet"]


@pytest.fixture
def tiny_config(tmp_path, monkeypatch):
    monkeypatch.setenv("JCW_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "tiny.yaml"
    path.write_text("pretrain_epochs: 1\nbatch_size: 32\ncalib_batches: 1\nval_samples: 64\n")
    return path


def run(argv, capsys) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``jcw ARGV`` (argparse's exits included)."""
    try:
        code = jcw_main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


# -- load_model ------------------------------------------------------------------------------------------

def test_zoo_names_files_and_modules_resolve_and_are_recorded(monkeypatch):
    zoo = load_model("resnet20", num_classes=4)
    assert model_reference(zoo) == "resnet20" and model_name(zoo) == "resnet20" and zoo.fc.out_features == 4

    monkeypatch.chdir(ROOT)
    path_before = list(sys.path)
    model = load_model("tests/user_models/tiny.py:build", num_classes=3)
    assert sys.path == path_before  # the file's directory is not left on sys.path
    assert isinstance(model, nn.Module) and model.fc.out_features == 3
    assert model_reference(model) == f"{TINY}:build"  # made absolute: rebuilds from any directory
    assert model_name(model) == model_label(model_reference(model)) == "tiny.build"
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 3)

    monkeypatch.syspath_prepend(str(TESTS))
    module_made = load_model("user_models.tiny:build", num_classes=5)
    assert model_reference(module_made) == "user_models.tiny:build" and model_name(module_made) == "tiny.build"
    assert load_model("user_models.tiny:TinyResNet").fc.out_features == 10  # a class is a factory too

    # an instance made by hand records its class when that is importable, else nothing
    from user_models.tiny import TinyResNet

    assert model_reference(TinyResNet(7)) == "user_models.tiny:TinyResNet"

    class Local(nn.Module):
        pass

    assert model_reference(Local()) is None and model_reference(nn.Sequential()) is None


@pytest.mark.parametrize("ref, messages", [
    ("resnet1000", ["unknown model 'resnet1000'", "known models: efficientnet_b0, mobilenet_v1", "path/to/file.py:factory",
                    "package.module:factory"]),
    ("tiny.py", ["unknown model", "tiny.py:FACTORY"]),
    ("TESTS/user_models/nope.py:build", ["no such file", "nope.py"]),
    ("BROKEN:build", ["importing", "broken.py failed (ZeroDivisionError: division by zero)"]),
    ("TINY:nothing", ["has no attribute 'nothing'", "build", "TinyResNet"]),
    ("TINY:not_a_factory", ["not_a_factory is a int, not callable"]),
    ("TINY:no_classes", ["no_classes() cannot be called as no_classes(num_classes=10)"]),
    ("TINY:fails", ["fails(num_classes=10) failed (RuntimeError: the factory broke)"]),
    ("TINY:not_a_module", ["not_a_module(num_classes=10) returned a list, not a torch nn.Module"]),
    ("no_such_package_jcw.models:build", ["cannot import module 'no_such_package_jcw.models'",
                                          "ModuleNotFoundError"]),
    ("jcw_test_local_models:build", ["cannot import module", "jcw_test_local_models.py is a file here: name it "
                                     "by its path, jcw_test_local_models.py:build"]),
])
def test_bad_references_raise_one_usage_error_naming_the_problem(ref, messages, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a model file in the working directory is not a module on sys.path
    (tmp_path / "jcw_test_local_models.py").write_text("def build(num_classes=10):\n    return None\n")
    broken = tmp_path / "broken.py"
    broken.write_text("x = 1 / 0\n")
    ref = ref.replace("TINY", str(TINY)).replace("TESTS", str(TESTS)).replace("BROKEN", str(broken))
    with pytest.raises(UsageError) as e:
        load_model(ref, num_classes=10)
    for text in messages:
        assert text in str(e.value), str(e.value)


def test_every_command_exits_2_on_a_bad_reference(tmp_path, tiny_config, capsys):
    out = tmp_path / "run"
    code, _, err = run(["search", "--config", str(tiny_config), "--model", f"{TINY}:fails", *SEARCH,
                        "--out", str(out)], capsys)
    assert code == 2 and "the factory broke" in err and "Traceback" not in err
    assert not out.exists()
    code, _, err = run(["space", "--model", f"{TINY}:not_a_module"], capsys)
    assert code == 2 and "returned a list" in err
    code, _, err = run(["space", "--model", "resnet1000"], capsys)
    assert code == 2 and "known models: efficientnet_b0, mobilenet_v1" in err and "file.py:factory" in err
    code, _, err = run(["random-prune", "--model", f"{TINY}:nothing", "--out", str(out), "--quiet"], capsys)
    assert code == 2 and "has no attribute 'nothing'" in err
    assert not out.exists()


def test_space_of_a_users_model(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("JCW_CACHE_DIR", str(tmp_path))  # the modelled a53 table of the model is built there
    code, text, _ = run(["space", "--model", f"{TINY}:build", "--json", "--device", "a53"], capsys)
    assert code == 0
    report = json.loads(text)
    assert report["model"] == "tiny.build" and report["resolution"] == 224  # no zoo default: 224
    assert report["num_classes"] == 10 and len(report["channel_genes"]) == 3  # stem + add, conv1, down
    assert 0 < report["latency_min_ms"] < report["latency_full_ms"]
    code, text, _ = run(["space", "--model", f"{TINY}:build", "--resolution", "32"], capsys)
    assert code == 0 and "tiny.build at 32x32" in text


# -- search -> train -> export -> run, never naming the model again --------------------------------------

def test_users_model_search_train_export_run_without_naming_it_again(tmp_path, tiny_config, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # the relative reference is recorded as an absolute path
    run_dir = tmp_path / "search"
    code, _, err = run(["search", "--config", str(tiny_config), "--model", "tests/user_models/tiny.py:build",
                        *SEARCH, "--budget", "10ms", "--out", str(run_dir)], capsys)
    assert code == 0, err
    front = json.loads((run_dir / "front.json").read_text())
    best = json.loads((run_dir / "best.json").read_text())
    for record in (front, best):
        assert (record["model"], record["model_ref"], record["num_classes"], record["resolution"]) == (
            "tiny.build", f"{TINY}:build", 10, 32)
    assert json.loads((run_dir / "config.json").read_text())["model"] == f"{TINY}:build"
    assert best["arch"] == max(front["candidates"], key=lambda c: (c["val_acc"], -c["latency_ms"]))["arch"]

    monkeypatch.chdir(tmp_path)  # another working directory: the recorded reference still resolves
    train_dir = tmp_path / "train"
    code, out, err = run(["train", "--result", str(run_dir / "front.json"), "--pick", "best", *TRAIN,
                          "--out", str(train_dir)], capsys)
    assert code == 0, err
    assert "warning" not in err
    model, record = load_trained(train_dir / MODEL)
    assert record["model_ref"] == f"{TINY}:build" and record["arch"] == best["arch"]

    onnx_path = tmp_path / "tiny.onnx"
    code, out, err = run(["export", str(train_dir / MODEL), "--onnx", str(onnx_path), "--devices", "a53"], capsys)
    assert code == 0, err
    meta = read_metadata(onnx_path)
    assert json.loads(meta["jcw.predicted_ms"])["a53"] == pytest.approx(best["latency_ms"], rel=1e-3)
    assert meta["jcw.model"] == f"{TINY}:build"
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32), dtype=np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    got_ort = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(got_ort, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(Engine(str(onnx_path)).run(x), got_ort, rtol=1e-4, atol=1e-4)

    # --model still wins: the same model under its package.module:factory name (a warning), or another one
    monkeypatch.syspath_prepend(str(TESTS))
    code, _, err = run(["export", str(train_dir / MODEL), "--onnx", str(tmp_path / "again.onnx"), "--devices", "a53",
                        "--model", "user_models.tiny:build"], capsys)
    assert code == 0, err
    assert err.count("\n") == 1 and "warning: --model user_models.tiny:build is not the model" in err
    assert read_metadata(tmp_path / "again.onnx")["jcw.model"] == "user_models.tiny:build"
    code, _, err = run(["train", "--result", str(run_dir / "front.json"), "--pick", "best", *TRAIN,
                        "--model", f"{TINY}:narrow", "--out", str(tmp_path / "narrow")], capsys)
    assert code == 2 and "warning: --model" in err and "exceed the full" in err and "Traceback" not in err
    code, _, err = run(["export", str(train_dir / MODEL), "--onnx", str(tmp_path / "no.onnx"),
                        "--model", f"{TINY}:fails"], capsys)
    assert code == 2 and "the factory broke" in err and not (tmp_path / "no.onnx").exists()


def test_a_python_search_of_an_unimportable_instance_needs_model_later(tmp_path, capsys):
    class Mine(nn.Module):  # a local class: no reference can rebuild it
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))

    g = torch.Generator().manual_seed(0)
    images = torch.randn(64, 3, 8, 8, generator=g)
    data = (torch.utils.data.TensorDataset(images, torch.arange(64) % 10),) * 2
    result = jcw.search(Mine(), data=data, device="a53", resolution=32, population=4, generations=1,
                        supernet_steps=1, pretrain_epochs=1, batch_size=32, val_samples=32, out=tmp_path / "run")
    assert result.info["model_ref"] is None and result.info["model"] == "mine"
    code, _, err = run(["train", "--arch", str(tmp_path / "run" / "best.json"), *TRAIN, "--out",
                        str(tmp_path / "t")], capsys)
    assert code == 2 and "does not record how to rebuild model 'mine'" in err and "pass --model" in err


def test_random_prune_of_a_users_model_named_by_module(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JCW_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(TESTS))
    out = tmp_path / "random"
    code, _, err = run(["random-prune", "--model", "user_models.tiny:build", "--resolution", "8", "--samples", "2",
                        "--top-k", "1", "--topk-epochs", "0", "--finetune-epochs", "0", "--pretrain-epochs", "1",
                        "--recon-images", "32", "--criterion-images", "32", "--val-samples", "64", "--quiet",
                        "--out", str(out)], capsys)
    assert code == 0, err
    result = json.loads((out / "result.json").read_text())
    assert (result["model"], result["model_ref"]) == ("tiny.build", "user_models.tiny:build")
    saved = torch.load(out / "model.pt", weights_only=True)
    assert saved["model_ref"] == "user_models.tiny:build" and saved["num_classes"] == 10


BLOCKS = TESTS / "user_models" / "blocks.py"


def test_a_model_with_concat_se_hardswish_and_avgpool_from_the_cli(tmp_path, tiny_config, capsys, monkeypatch):
    """search -> train --pick best -> export -> jcw run --compare-ort, the model named once."""
    monkeypatch.chdir(ROOT)
    run_dir = tmp_path / "search"
    code, _, err = run(["search", "--config", str(tiny_config), "--model", "tests/user_models/blocks.py:build",
                        *SEARCH, "--budget", "2ms", "--out", str(run_dir)], capsys)
    assert code == 0, err
    front = json.loads((run_dir / "front.json").read_text())
    assert front["model_ref"] == f"{BLOCKS}:build" and all(c["latency_ms"] <= 2.0 for c in front["candidates"])
    code, _, err = run(["train", "--result", str(run_dir / "front.json"), "--pick", "best", *TRAIN,
                        "--out", str(tmp_path / "train")], capsys)
    assert code == 0, err
    onnx_path = tmp_path / "blocks.onnx"
    code, _, err = run(["export", str(tmp_path / "train" / MODEL), "--onnx", str(onnx_path), "--devices", "a53"],
                       capsys)
    assert code == 0, err
    kinds = {n.op_type for n in __import__("onnx").load(str(onnx_path)).graph.node}
    assert {"Concat", "Mul", "HardSwish", "HardSigmoid", "Sigmoid", "AveragePool"} <= kinds
    code, out, err = run(["run", str(onnx_path), "--compare-ort", "--repeats", "3", "--warmup", "1"], capsys)
    assert code == 0, err
    assert "outputs agree" in out


def test_a_model_with_concat_se_hardswish_and_avgpool_from_python(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(96, 3, 16, 16, generator=g)
    data = (torch.utils.data.TensorDataset(images, torch.arange(96) % 10),) * 2
    model = jcw.load_model(f"{BLOCKS}:build", num_classes=10)
    result = jcw.search(model, data=data, device="a53", budget="2ms", resolution=32, population=4, generations=1,
                        supernet_steps=2, pretrain_epochs=1, batch_size=32, val_samples=32, out=tmp_path / "run")
    best = result.best
    assert best.latency_ms <= 2.0 and best.arch.model == "blocks.build"
    small, masks = jcw.materialize(model, best.arch)
    assert {"fire.mix.0", "block.se.fc2"} <= set(masks)
    path = jcw.export_onnx(small.eval(), tmp_path / "small.onnx", resolution=32)
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32), dtype=np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(Engine(str(path)).run(x), want, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(small.eval()(torch.from_numpy(x)).numpy(), want, rtol=1e-4, atol=1e-5)
