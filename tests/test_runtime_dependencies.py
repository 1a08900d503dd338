"""Every third-party module that kan_core and service import is installed by `pip install ".[scale]"`
(the Docker image's install), not only by the dev extra: the Docker drill found kan_core.sparse
importing scipy, a dev-only package, so the image's API could not start."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
RUNTIME_EXTRAS = ("scale",)
# Optional: imported inside ``try/except ImportError`` by these modules only, which work without them
# (kan_core.KANRegressor; pyproject's [estimator] extra installs them).
OPTIONAL_IMPORTS = {"sklearn": {"kan_core/estimator.py"}, "pandas": {"kan_core/estimator.py"}}


def imported_top_level_modules(package: Path) -> set[str]:
    return set().union(*(imported_top_level_modules_of_file(path) for path in package.rglob("*.py")))


def runtime_distributions() -> set[str]:
    """The distributions `pip install ".[scale]"` installs: the declared requirements and, through
    installed metadata, theirs (with the extras asked for, e.g. uvicorn[standard])."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    todo = [Requirement(r) for r in project["dependencies"]]
    todo += [Requirement(r) for extra in RUNTIME_EXTRAS for r in project["optional-dependencies"][extra]]
    seen: set[str] = set()
    while todo:
        requirement = todo.pop()
        name = requirement.name.lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            sub = Requirement(line)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in requirement.extras or {""}):
                todo.append(sub)
    return seen


def test_every_imported_third_party_module_is_a_runtime_dependency() -> None:
    ours = {"kan_core", "service", "kan_client"}  # kan_client: optional, imported only when installed
    imported = set().union(*(imported_top_level_modules(REPO / p) for p in ("kan_core", "service")))
    third_party = sorted(imported - ours - set(OPTIONAL_IMPORTS) - set(sys.stdlib_module_names) - {"__future__"})
    providers = metadata.packages_distributions()
    runtime = runtime_distributions()
    missing = {m: providers.get(m, ["?"]) for m in third_party
               if not any(d.lower().replace("_", "-") in runtime for d in providers.get(m, []))}
    assert not missing, f"imported but not installed by pyproject's dependencies or [scale]: {missing}"


def test_optional_imports_stay_in_their_modules() -> None:
    for module, allowed in OPTIONAL_IMPORTS.items():
        users = {str(p.relative_to(REPO)) for pkg in ("kan_core", "service") for p in (REPO / pkg).rglob("*.py")
                 if module in imported_top_level_modules_of_file(p)}
        assert users <= allowed, f"{module} is optional, imported only by {sorted(allowed)}; also by {sorted(users - allowed)}"


def imported_top_level_modules_of_file(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names
