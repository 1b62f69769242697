"""The package's layers (ARCHITECTURE.md): no module imports one of a higher layer."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "provision"

#: Top-level unit of ``provision`` -> its layer; a unit may import its own layer's
#: other units only where listed in SIDEWAYS, and any unit of a lower layer.
LAYERS = {
    "_version": 0,
    "_lazy": 0,
    "_gc": 0,
    "errors": 0,
    "models": 0,
    "stopping": 0,
    "results": 1,
    "tls": 2,
    "tls_failures": 2,
    "tls_facts": 2,
    "inbox": 2,
    "probes": 3,
    "rocketchat": 3,
    "sandbox": 3,
    "discover": 3,
    "commands": 4,
    "render": 4,
    "cli_coerce": 5,
    "cli_help": 5,
    "cli_options": 5,
    "watch": 5,
    "cli_run": 6,
    "cli_dial": 6,
    "cli_dispatch": 6,
    "cli": 7,
    "__init__": 6,
    "entry": 8,
    "__main__": 9,
}
SIDEWAYS = {("tls_failures", "tls"), ("tls", "tls_facts"), ("cli_dial", "cli_run")}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "provision":  # from provision import tls
                found |= {f"provision.{a.name}" for a in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m == "provision" or m.startswith("provision.")}


def test_every_unit_has_a_layer() -> None:
    units = {
        p.stem if p.parent == PACKAGE else p.relative_to(PACKAGE).parts[0]
        for p in PACKAGE.rglob("*.py")
    }
    assert units == set(LAYERS)


def test_no_import_runs_upward() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        importer = rel.stem if len(rel.parts) == 1 else rel.parts[0]
        for module in _imports(path):
            imported = _unit(module) if module != "provision" else "__init__"
            if imported == importer or (importer, imported) in SIDEWAYS:
                continue
            if LAYERS[imported] >= LAYERS[importer]:
                upward.append(f"{rel} imports {module}")
    assert upward == []


def test_the_check_detects_an_upward_import(tmp_path: Path) -> None:
    """The rule can fail: results importing a command would be reported."""
    probe = tmp_path / "results.py"
    probe.write_text("from provision.commands.check import check\n")
    (module,) = _imports(probe)
    assert LAYERS[_unit(module)] >= LAYERS["results"]
