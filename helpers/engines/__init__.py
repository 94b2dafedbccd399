"""The engine seam: the only place that knows detectron2 or torchvision.

An engine is a module with these functions (see :mod:`helpers.engines.base` for the shared parts):

    available() -> (bool, reason)
    prepare_config(cfg) -> cfg                                          # effective values (e.g. random init -> trainable norm)
    train(cfg, splits, run_dir, resume=False, progress=True) -> dict     # final val metrics
    load_predictor(cfg, checkpoint, categories) -> base.Predictor
    architecture(cfg, categories, image) -> list[dict]                  # stages + tensor shapes of one forward pass
    build_optimizer(cfg, categories) -> torch optimizer                 # the real parameter groups (weight decay per group)
    training_steps(cfg, splits) -> step()                               # k-th call: training iteration k-1, as train() runs it (measuring)
    inspect(cfg, checkpoint, categories, image, gt=None, **options) -> dict  # one image, every stage, plain data

Engines are imported lazily, so a machine without detectron2 can still use torchvision.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import EngineError

ENGINE_MODULES = {
    "torchvision": "helpers.engines.torchvision_engine",
    "detectron2": "helpers.engines.detectron2_engine",
}


def get_engine(name: str) -> ModuleType:
    """The engine module, or an EngineError saying why it cannot be used here."""
    if name not in ENGINE_MODULES:
        raise EngineError(f"unknown engine {name!r}; choose one of {', '.join(ENGINE_MODULES)}")
    module = importlib.import_module(ENGINE_MODULES[name])
    ok, reason = module.available()
    if not ok:
        raise EngineError(f"the {name} engine is not available: {reason}")
    return module


def available_engines() -> dict[str, tuple[bool, str]]:
    """{name: (available, reason)} for every engine."""
    return {name: importlib.import_module(mod).available() for name, mod in ENGINE_MODULES.items()}
