"""ENGINE_VERSION: identifies the compiled kernels, so latency tables measured with other kernels are not reused."""

from __future__ import annotations

import hashlib
from pathlib import Path

from jcw import __version__, _kernels


def _engine_version() -> str:
    digest = hashlib.sha256(Path(_kernels.__file__).read_bytes()).hexdigest()[:12]
    return f"{__version__}+{digest}"


ENGINE_VERSION = _engine_version()
