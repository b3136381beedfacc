"""Model zoo registry (create_model, list_models, default_resolution, default_num_classes) and model
references (load_model: a zoo name, path/to/file.py:factory or package.module:factory)."""

from __future__ import annotations

from jcw.models.efficientnet import efficientnet_b0
from jcw.models.mobilenet import mobilenet_v1, mobilenet_v2
from jcw.models.mobilenet_v3 import mobilenet_v3_large, mobilenet_v3_small
from jcw.models.reference import (DEFAULT_RESOLUTION, canonical_reference, deploy_resolution, load_model, model_label,
                                  model_name, model_reference)
from jcw.models.registry import (ModelEntry, create_model, default_num_classes, default_resolution, list_models,
                                 register_model, zoo_name)
from jcw.models.resnet import resnet18, resnet20, resnet50, resnet56
from jcw.models.vgg import vgg16

register_model("resnet18", resnet18, 224, 1000)
register_model("resnet50", resnet50, 224, 1000)
register_model("mobilenet_v1", mobilenet_v1, 224, 1000)
register_model("mobilenet_v2", mobilenet_v2, 224, 1000)
register_model("mobilenet_v3_large", mobilenet_v3_large, 224, 1000)
register_model("mobilenet_v3_small", mobilenet_v3_small, 224, 1000)
register_model("efficientnet_b0", efficientnet_b0, 224, 1000)
register_model("resnet20", resnet20, 32, 10)
register_model("resnet56", resnet56, 32, 10)
register_model("vgg16", vgg16, 32, 10)

__all__ = ["create_model", "list_models", "default_resolution", "default_num_classes", "register_model", "zoo_name",
           "load_model", "model_reference", "ModelEntry"]
