"""The chassis is a library any service could use: it imports no module of this platform's
(`ecommerce.*`: each service hands it the message types it accepts), and it declares every
distribution it imports."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

CHASSIS = Path(__file__).resolve().parents[1]
SOURCE = CHASSIS / "src" / "chassis"


def imported_modules() -> dict[str, set[str]]:
    """Top-level module -> the chassis files importing it (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for path in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name, set()).add(str(path.relative_to(CHASSIS)))
    return found


def declared() -> set[str]:
    project = tomllib.loads((CHASSIS / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def test_the_chassis_imports_no_module_of_the_platform() -> None:
    platform = {
        module: files
        for module, files in imported_modules().items()
        if module == "ecommerce" or module.startswith("ecommerce.")
    }
    assert platform == {}


def test_the_chassis_declares_every_distribution_it_imports() -> None:
    providers = packages_distributions()
    wanted = declared()
    missing: dict[str, list[str]] = {}
    for module, files in imported_modules().items():
        top = module.split(".")[0]
        if top in sys.stdlib_module_names or top == "chassis" or top == "__future__":
            continue
        distributions = {canonicalize_name(d) for d in providers.get(top, [])}
        if not distributions & wanted:
            missing[module] = sorted(files)
    assert missing == {}
