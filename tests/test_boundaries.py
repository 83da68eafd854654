"""Only store/ knows how a store lies on disk: ml/, info, plot and the CLI use nothing of it but the
public names of ``molmnist_dask.store`` (its ``__all__``), never its modules (layout,
partfile, index, backend, write, ...). Read from the source, so nothing heavy is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import molmnist_dask
import molmnist_dask.store as store

PACKAGE = Path(molmnist_dask.__file__).parent
CLIENTS = sorted(PACKAGE.glob("ml/*.py")) + [PACKAGE / n for n in ("info.py", "plot.py", "cli.py")]
STORE = "molmnist_dask.store"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute name of a ``from X import`` (relative ones resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def store_uses(source: str, module: str, is_package: bool = False) -> list:
    """What ``source`` (the text of module ``module``) takes from the store package that is
    not one of its public names: ``[(line, what)]``."""
    public, bad, aliases = set(store.__all__), [], set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(STORE + "."):
                    bad.append((node.lineno, alias.name))
                elif alias.name == STORE:
                    aliases.add(alias.asname or "molmnist_dask")
        elif isinstance(node, ast.ImportFrom):
            name = _absolute(node, module, is_package)
            if name.startswith(STORE + "."):
                bad.append((node.lineno, name))
            elif name == STORE:
                bad += [(node.lineno, f"{STORE}.{a.name}") for a in node.names if a.name not in public]
            elif name == "molmnist_dask":
                aliases |= {a.asname or a.name for a in node.names if a.name == "store"}
    for node in ast.walk(ast.parse(source)):  # store.layout.X, mm.store.partfile...
        if isinstance(node, ast.Attribute) and node.attr not in public:
            value = node.value
            if isinstance(value, ast.Name) and value.id in aliases - {"molmnist_dask"}:
                bad.append((node.lineno, f"{STORE}.{node.attr}"))
            elif isinstance(value, ast.Attribute) and value.attr == "store" and isinstance(value.value, ast.Name) \
                    and value.value.id in aliases | {"mm", "molmnist_dask"}:
                bad.append((node.lineno, f"{STORE}.{node.attr}"))
    return bad


@pytest.mark.parametrize("path", CLIENTS, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_store_is_used_through_its_public_names_only(path):
    bad = store_uses(path.read_text(), _module_name(path), path.name == "__init__.py")
    assert not bad, f"{path.relative_to(PACKAGE.parent)} uses store internals: " + \
        ", ".join(f"{what} (line {line})" for line, what in bad)


@pytest.mark.parametrize("line", [
    "from ..store.partfile import check_part",
    "from ..store import Part",
    "from molmnist_dask.store.layout import INDEX",
    "import molmnist_dask.store.index",
    "from .. import store\nstore.layout.part_name(0, 0, 1)",
    "import molmnist_dask.store as s\ns.read_index('x').parts[0].name\ns.backend",
])
def test_the_check_sees_internals(line):
    assert store_uses(line, "molmnist_dask.ml.data")


def test_the_check_passes_public_names():
    assert not store_uses("from ..store import parts, locate, check, open_dataset\n"
                          "from molmnist_dask import store\nstore.check('x')", "molmnist_dask.ml.data")


def test_store_all_lists_what_users_call():
    assert {"save_dataset", "open_dataset", "consolidate", "parts", "locate", "check"} <= set(store.__all__)
    assert not {"Part", "IMAGE_VARS", "SMALL_VARS", "INDEX", "StoreBackend"} & set(store.__all__)
    assert all(hasattr(store, name) for name in store.__all__)
