"""The search stage: config, strategies, problem, survival, operators, supernet, runner, result, plots.

The package itself is callable: ``jcw.search(model, data=..., device=..., budget=...)`` is ``jcw.api.search``.
"""

import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from jcw.api import search

        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
