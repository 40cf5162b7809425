"""The rooms of the architecture, as imports: ``kairos`` is plumbing and imports no service;
``schemas`` imports neither; a service imports only itself and the reference data (the
services talk through the log, never through each other's code)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("ingest", "timer", "validator", "sender")


def imported(package: Path, root: Path = ROOT) -> set[tuple[str, str]]:
    """(file relative to ``root``, module) of every absolute import under ``package``."""
    found: set[tuple[str, str]] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {(str(path.relative_to(root)), a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add((str(path.relative_to(root)), node.module))
    return found


def offending(package: str, allowed: tuple[str, ...], watched: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{file} imports {module}"
        for file, module in imported(ROOT / package)
        if module.split(".")[0] in watched
        and not any(module == a or module.startswith(a + ".") for a in allowed)
    )


def test_the_core_imports_no_service() -> None:
    assert offending("kairos", ("kairos", "schemas"), ("services", "bench", "tests")) == []


def test_schemas_import_nothing_of_ours() -> None:
    assert offending("schemas", ("schemas",), ("services", "kairos", "bench", "tests")) == []


@pytest.mark.parametrize("service", [*SERVICES, "reference"])
def test_a_service_imports_only_itself_and_the_reference_data(service: str) -> None:
    allowed = (f"services.{service}", "services.reference", "kairos", "schemas")
    assert offending(f"services/{service}", allowed, ("services", "bench", "tests")) == []


def test_the_reference_data_imports_no_service() -> None:
    assert offending("services/reference", ("services.reference",), ("services",)) == []


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The walker is not blind: a file importing a service is reported."""
    (tmp_path / "bad.py").write_text("import os\nfrom services.sender.relay import Relay\n")
    assert imported(tmp_path, tmp_path) == {("bad.py", "os"), ("bad.py", "services.sender.relay")}
