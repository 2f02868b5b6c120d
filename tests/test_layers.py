"""Imports only point down: cli -> fuse -> sysfs -> model, and engine -> model."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "vfakefs"
# what each layer may import from vfakefs
ALLOWED = {
    "model": {"model"},
    "sysfs": {"sysfs", "model"},
    "fuse": {"fuse", "sysfs", "model"},
    "engine": {"engine", "model"},
    "cli": {"cli", "fuse", "sysfs", "model", "engine"},
    "presets": set(),
    "client": set(),            # talks to a mount's files only
}


def layer_of(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vfakefs."):
            yield node.module.split(".")[1]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("vfakefs."):
                    yield a.name.split(".")[1]


@pytest.mark.parametrize("path", sorted(p for p in PKG.rglob("*.py") if p.name != "__main__.py"),
                         ids=lambda p: str(p.relative_to(PKG)))
def test_imports_point_down(path):
    layer = layer_of(path)
    if layer in ("__init__",):
        return
    allowed = ALLOWED.get(layer)
    assert allowed is not None, f"{path}: module outside the known layers"
    for target in imports(path):
        assert target in allowed, f"{path.relative_to(PKG)} imports vfakefs.{target}: points up"


def test_model_imports_no_fuse():
    for path in (PKG / "model").rglob("*.py"):
        text = path.read_text()
        assert "pyfuse3" not in text and "trio" not in text, f"{path}: the model must not know FUSE or trio"


# model modules may import model modules inside a function only to keep numpy off the
# mount path (imported when first used); every other import sits at the top, so each
# module's place in the layering shows in its imports
LAZY_MODEL_IMPORTS = {
    ("model/machine.py", "vfakefs.model.intel"),            # irq_boot: the IRTE table
    ("model/intel/dmar.py", "vfakefs.model.intel.iotlb"),
    ("model/intel/dmar.py", "vfakefs.model.intel.memory"),
    ("model/intel/dmar.py", "vfakefs.model.intel.pagetable"),
    ("model/intel/dmar.py", "vfakefs.model.intel.walk"),
}


def test_model_has_no_function_level_imports_of_the_model():
    found = set()
    for path in sorted((PKG / "model").rglob("*.py")):
        rel = str(path.relative_to(PKG))
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom):
                    mod = ("." * node.level) + (node.module or "")
                    if node.level or mod.startswith("vfakefs."):
                        found.add((rel, mod))
                elif isinstance(node, ast.Import):
                    found.update((rel, a.name) for a in node.names if a.name.startswith("vfakefs."))
    assert found <= LAZY_MODEL_IMPORTS, sorted(found - LAZY_MODEL_IMPORTS)
