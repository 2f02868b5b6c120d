"""Imports only point down: cli -> fuse -> sysfs -> model, engine -> model, vfio -> model; pyfuse3 and
trio only where the daemon runs (fuse/, engine, cli). The tests keep the same map: tests/model
reaches the model alone, tests/view the model and its sysfs view.

Every form of import counts: `import vfakefs.x`, `from vfakefs.x import y`, `from vfakefs
import x`, relative imports (`from . import x`, `from ..sysfs import y`), imports inside
functions, and what a test reaches through the test helpers it imports (tests.*)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / "vfakefs"
TESTS = REPO / "tests"
# what each layer may import from vfakefs
ALLOWED = {
    "model": {"model"},
    "sysfs": {"sysfs", "model"},
    "fuse": {"fuse", "sysfs", "model"},
    "engine": {"engine", "model"},
    "syscall": {"syscall", "model"},
    "vfio": {"vfio", "model"},  # the Python VFIO API: beside the adapters, over the model
    "namespace": set(),         # the mount namespace `vfakefs run` makes: system calls only
    "cli": {"cli", "fuse", "sysfs", "model", "engine", "client", "syscall", "namespace", "presets", "cli_tools"},
    # the commands that work on a machine from outside (draw, top, scenario, hotplug, record)
    "cli_tools": {"cli_tools", "fuse", "model", "client", "draw", "top", "record", "progress"},
    "__main__": {"cli"},
    "presets": set(),
    "client": set(),            # talks to a mount's files only
    "draw": set(),              # `vfakefs draw`: reads a mount's files only, like client
    "top": set(),               # `vfakefs top`: the same
    "progress": set(),          # a progress line on stderr for long CLI operations
    "pytest_plugin": {"client", "presets"},  # a user's view: the mount's files and the command line
    "record": {"record", "model"},  # `vfakefs record`: reads a sysfs, checks the text with the model
}
# the only layers that may import these (the model and the view run without them)
DAEMON_ONLY = {"pyfuse3": {"fuse", "cli"}, "trio": {"fuse", "engine", "cli", "syscall"}}
# what a folder of tests may reach of vfakefs, directly or through tests.* helpers
TESTS_ALLOWED = {"model": {"model"}, "view": {"model", "sysfs"}, "vfio": {"model", "vfio"},
                 "syscall": {"model", "syscall"}}


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imported(path: Path) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in path: for `from P import n`, P.n as
    well as P (n may be a submodule or a name defined in P)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                assert len(base) >= 1, f"{path}:{node.lineno}: relative import beyond the top"
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            out.append((mod, node.lineno))
            out += [(f"{mod}.{a.name}", node.lineno) for a in node.names if a.name != "*"]
    return out


def layer(module: str) -> str | None:
    """vfakefs.model.pci.bdf -> model; vfakefs.cli -> cli; vfakefs (the package) -> None."""
    parts = module.split(".")
    if parts[0] != "vfakefs" or len(parts) == 1:
        return None
    return parts[1]


def vfakefs_layers(path: Path) -> set[tuple[str, int]]:
    """The layers path imports, with the line of each import."""
    out = set()
    for mod, line in imported(path):
        lay = layer(mod)
        if lay is not None and ((PKG / lay).is_dir() or (PKG / f"{lay}.py").is_file()):
            out.add((lay, line))
    return out


def package_modules():
    return sorted(p for p in PKG.rglob("*.py"))


@pytest.mark.parametrize("path", package_modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_imports_point_down(path):
    own = layer(module_name(path))
    if own is None:                                     # vfakefs/__init__.py imports nothing
        assert not vfakefs_layers(path), f"{path}: the package's __init__ imports a layer"
        return
    allowed = ALLOWED.get(own)
    assert allowed is not None, f"{path}: module outside the known layers"
    for target, line in sorted(vfakefs_layers(path)):
        assert target in allowed, f"vfakefs/{path.relative_to(PKG)}:{line} imports vfakefs.{target}: points up"


@pytest.mark.parametrize("path", package_modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_pyfuse3_and_trio_only_where_the_daemon_runs(path):
    own = layer(module_name(path))
    for mod, line in imported(path):
        top = mod.split(".")[0]
        if top in DAEMON_ONLY:
            assert own in DAEMON_ONLY[top], f"vfakefs/{path.relative_to(PKG)}:{line} imports {mod}"


def _reach(path: Path, seen: set[Path]) -> set[tuple[str, str]]:
    """(layer, where) of vfakefs that path reaches, itself or through the tests.* it imports."""
    if path in seen:
        return set()
    seen.add(path)
    out = {(lay, f"{path.relative_to(REPO)}:{line}") for lay, line in vfakefs_layers(path)}
    for mod, _ in imported(path):
        if mod.split(".")[0] != "tests":
            continue
        f = REPO.joinpath(*mod.split(".")).with_suffix(".py")
        if f.is_file():
            out |= _reach(f, seen)
    return out


@pytest.mark.parametrize("path", sorted(p for folder in TESTS_ALLOWED for p in (TESTS / folder).rglob("*.py")),
                         ids=lambda p: str(p.relative_to(TESTS)))
def test_tests_keep_to_their_layer(path):
    folder = path.relative_to(TESTS).parts[0]
    for lay, where in sorted(_reach(path, set())):
        assert lay in TESTS_ALLOWED[folder], f"tests/{folder} reaches vfakefs.{lay} ({where})"


# --- the checker itself, on made-up modules -----------------------------------------------------
@pytest.mark.parametrize("source, want", [
    ("import vfakefs.sysfs.tree", {"sysfs"}),
    ("from vfakefs.sysfs.tree import View", {"sysfs"}),
    ("from vfakefs import sysfs", {"sysfs"}),
    ("from vfakefs import engine as e", {"engine"}),
    ("from ... import sysfs", {"sysfs"}),
    ("from .. import iommu", {"model"}),
    ("from ...sysfs.tree import View", {"sysfs"}),
    ("from . import config", {"model"}),
    ("def f():\n    from ...fuse import ops\n", {"fuse"}),
    ("import vfakefs", set()),
])
def test_every_import_form_is_seen(tmp_path, monkeypatch, source, want):
    f = tmp_path / "vfakefs" / "model" / "pci" / "x.py"
    f.parent.mkdir(parents=True)
    f.write_text(source + "\n")
    for d in ("model", "sysfs", "engine", "fuse"):
        (tmp_path / "vfakefs" / d).mkdir(exist_ok=True)
    monkeypatch.setitem(globals(), "REPO", tmp_path)
    monkeypatch.setitem(globals(), "PKG", tmp_path / "vfakefs")
    assert {lay for lay, _ in vfakefs_layers(f)} == want


# model modules may import model modules inside a function only to keep numpy off the
# mount path (imported when first used); every other import sits at the top, so each
# module's place in the layering shows in its imports
LAZY_MODEL_IMPORTS = {
    ("model/machine.py", "vfakefs.model.intel"),            # irq_boot: the IRTE table
    ("model/intel/dmar.py", "vfakefs.model.intel.iotlb"),
    ("model/intel/dmar.py", "vfakefs.model.intel.memory"),
    ("model/intel/dmar.py", "vfakefs.model.intel.pagetable"),
    ("model/intel/dmar.py", "vfakefs.model.intel.walk"),
    ("model/intel/dmar.py", "vfakefs.model.intel.atc"),      # a device's ATC (numpy), once ATS is on
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
