"""What needs no model does not import River (and SciPy with it: 1-2 s a start).

The gateway, delivery, the report and every command's early checks (a bad Redis URL, a
missing events file) start in well under a second and fail fast; River is imported
once a command really builds the engine (``engine.app``).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

LIGHT = (
    "engine.cli", "engine.gateway.app", "engine.gateway.cli", "engine.delivery.cli",
    "engine.reporting.cli", "engine.replay", "engine.demo", "engine.up", "engine.scoring",
    "engine.model_cli", "engine.merge_cli",
)  # fmt: skip


@pytest.mark.parametrize("module", LIGHT)
def test_module_imports_without_river(module: str) -> None:
    heavy = "('river', 'scipy', 'bytewax')"
    loaded = f"sorted(m for m in sys.modules if m.split('.')[0] in {heavy})"
    code = f"import sys, {module}; print({loaded})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"{module} imports {out.stdout.strip()[:200]}"


def test_the_engine_does_import_river() -> None:
    """The check above can fail: the module that builds the engine does import River."""
    code = "import sys, engine.app; print('river' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stderr
