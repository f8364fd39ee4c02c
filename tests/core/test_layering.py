"""The layout tells the architecture: sources (sim) -> memories (spatial_memory, splatting,
relocalization) -> interfaces (ros_nodes, emem). A lower layer never imports an upper one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MEMORIES = ("spatial_memory", "splatting", "relocalization")
INTERFACES = ("ros_nodes", "emem")
FORBIDDEN = {
    "sim": MEMORIES[1:] + INTERFACES,  # sources may use the shared core types in spatial_memory only
    **{m: ("sim",) + INTERFACES for m in MEMORIES},
}


def _imports(path: Path) -> set[str]:
    """Top-level package names a module imports (absolute imports, also inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_layers_never_import_upper_ones(package: str) -> None:
    bad = {
        str(p.relative_to(REPO)): sorted(_imports(p) & set(FORBIDDEN[package]))
        for p in (REPO / package).rglob("*.py")
    }
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"{package} imports upper layers: {bad}"
