import pytest
import torch

from jcw.train.checkpoint import load_weights
from jcw.core.errors import UsageError
from jcw.models import create_model


def test_loads_wrapped_prefixed_state_and_keeps_a_classifier_of_another_size(tmp_path):
    source = create_model("resnet20", num_classes=100)
    path = tmp_path / "w.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    model = create_model("resnet20", num_classes=10)
    fresh_fc = model.fc.weight.detach().clone()
    load_weights(model, path, "fc")
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert torch.equal(model.fc.weight, fresh_fc)


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    (b"not a checkpoint", "not a readable torch checkpoint"),
    ({"weights": [1, 2]}, "expected a state dict of tensors"),
    ({"conv1.weight": torch.ones(2)}, "does not fit"),
])
def test_bad_files_raise_checkpoint_error(tmp_path, content, message):
    path = tmp_path / "w.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(UsageError, match=message):
        load_weights(create_model("resnet20", num_classes=10), path, "fc")
