"""The dependency rule of posekit's layers (docs/architecture.md), read from the imports of every module.

A module may import from its own layer and the layers below it, never from one above:

    base (errors, defaults, data) < core < io < models < eval < train < applications < cli

Imports inside functions count too: a lazy import is still a dependency.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "posekit"

# The layers, lowest first. A top-level module not named here is an application (estimator, track, viz, ...).
LAYERS = ["base", "core", "io", "models", "eval", "train", "applications", "cli"]
BASE = {"errors", "defaults", "data"}


def layer_of(module: str) -> str:
    """'posekit.core.crop' -> 'core'; 'posekit.errors' -> 'base'; 'posekit.track' -> 'applications'."""
    parts = module.split(".")
    if len(parts) == 1:  # the package itself: its __init__ only names things lazily
        return "applications"
    head = parts[1]
    if head == "__main__":  # python -m posekit: the command line
        return "cli"
    if head in BASE:
        return "base"
    if head in LAYERS:
        return head
    return "applications"  # estimator, poses, predict, track, demo, viz, widgets, bench, __main__


def module_name(path: Path, root: Path) -> str:
    relative = path.relative_to(root.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def posekit_imports(source: str, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import of a posekit module in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "posekit"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                base = module.split(".")[: -node.level] if not module.endswith("__init__") else module.split(".")
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.split(".")[0] != "posekit":
                continue
            if name == "posekit":  # from posekit import hub: each name is a module of the package
                found += [(node.lineno, f"posekit.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, name))
    return found


def violations(root: Path) -> list[str]:
    """Every import in the package under ``root`` that reaches a layer above the importing module's."""
    found = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        own = LAYERS.index(layer_of(module))
        for line, imported in posekit_imports(path.read_text(), module):
            target = layer_of(imported)
            if LAYERS.index(target) > own:
                found.append(f"{path.relative_to(root.parent)}:{line}: {layer_of(module)} module {module} imports "
                             f"{imported} ({target})")
    return found


def test_no_module_imports_from_a_layer_above_its_own():
    assert violations(PACKAGE) == []


def test_every_layer_is_a_package_with_modules():
    for layer in ("core", "io", "models", "eval", "train", "cli"):
        modules = [p for p in (PACKAGE / layer).glob("*.py") if p.name != "__init__.py"]
        assert (PACKAGE / layer / "__init__.py").is_file() and modules, layer


@pytest.mark.parametrize("statement, above", [
    ("from posekit.models.weights import WEIGHTS", "models"),
    ("from posekit.io import hub", "io"),
    ("import posekit.estimator", "applications"),
    ("from posekit import track", "applications"),
    ("def f():\n    from posekit.cli import main\n", "cli"),
])
def test_the_rule_fails_for_a_core_module_that_imports_from_above(tmp_path, statement, above):
    """The checker itself: a core module importing from any layer above is reported, with its line."""
    package = tmp_path / "posekit"
    (package / "core").mkdir(parents=True)
    (package / "core" / "__init__.py").write_text("")
    (package / "core" / "crop.py").write_text(f"import numpy\nfrom posekit.errors import PosekitError\n{statement}\n")
    (found,) = violations(package)
    line = 3 + statement.rstrip().count("\n")
    assert found.startswith(f"posekit/core/crop.py:{line}: core module posekit.core.crop imports") and f"({above})" in found


def test_the_rule_allows_imports_from_the_same_layer_and_below(tmp_path):
    package = tmp_path / "posekit"
    (package / "eval").mkdir(parents=True)
    (package / "eval" / "coco.py").write_text(
        "from posekit.core import oks\nfrom posekit.io.files import read_json\nfrom posekit.models import weights\n"
        "from posekit.eval.posetrack import load_posetrack\nfrom posekit.errors import PosekitError\n"
    )
    assert violations(package) == []
