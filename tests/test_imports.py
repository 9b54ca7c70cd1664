"""The dependency direction, enforced: vcrnet imports with torch alone (never ray, optuna, mlflow
or study); study/'s rooms import only rooms below them, through their public names; only the
tracking room imports mlflow; the CLI imports no mlflow, ray or optuna and starts without them.
The rooms and the rule: docs/architecture.md."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

HARNESS = ("ray", "optuna", "mlflow", "study")
WALK = """
import importlib, pkgutil, sys
import vcrnet
names = [m.name for m in pkgutil.walk_packages(vcrnet.__path__, "vcrnet.")]
for name in names:
    importlib.import_module(name)
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:]))
print(len(names), *loaded)
"""
# study/'s rooms, lowest first: a module imports study code of its own room or of a lower rank
RANK = {
    "lazy": 0,  # how a room shows its names (no study import)
    "cluster": 1,
    "search": 2,
    "tracking": 3,
    "store": 4,
    "inputs": 5,
    "reports": 6,
    "launch": 7,
    "api": 8,
    "cli": 9,
}
ROOMS = ("search", "tracking", "store", "inputs", "reports", "launch", "cli")
STUDY = ROOT / "study"


def test_no_vcrnet_module_imports_the_harness_stack():
    """Every module of vcrnet (walked, not listed), imported in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", WALK, *HARNESS], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    count, *loaded = out.stdout.split()
    assert int(count) >= 20  # the walk found the package's modules
    assert loaded == []


class Import:
    """One import statement of a study module: what it names, where, and how guarded."""

    def __init__(self, module: str, names: list[str], line: int, typing_only: bool, top: bool):
        self.module, self.names, self.line = module, names, line
        self.typing_only, self.top = typing_only, top


def imports_of(path: Path) -> list[Import]:
    """Every import in ``path``: module-level or in a function, under ``TYPE_CHECKING`` or not."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[Import] = []

    def walk(node: ast.AST, typing_only: bool, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for inner in child.body:
                    walk(ast.Module([inner], []), True, top)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(alias.name, [], child.lineno, typing_only, top))
            elif isinstance(child, ast.ImportFrom) and child.module:
                names = [a.name for a in child.names]
                found.append(Import(child.module, names, child.lineno, typing_only, top))
            inner_top = top and not isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
            )
            walk(child, typing_only, inner_top)

    walk(tree, False, True)
    return found


def room_of(path: Path) -> str:
    parts = path.relative_to(STUDY).with_suffix("").parts
    return parts[0]


def study_modules() -> list[Path]:
    return sorted(p for p in STUDY.rglob("*.py") if p.name != "__main__.py")


def targets(imp: Import) -> list[tuple[str, str | None]]:
    """``(room, name or None)`` for each study room an import reaches: ``from study import
    tracking`` -> (tracking, None); ``from study.tracking import trial_runs`` -> (tracking,
    trial_runs); ``from study.tracking.runs import x`` -> (tracking, "runs." + x)."""
    parts = imp.module.split(".")
    if parts[0] != "study":
        return []
    if len(parts) == 1:
        return [(name, None) for name in imp.names]
    if len(parts) == 2:
        return [(parts[1], name) for name in imp.names] or [(parts[1], None)]
    return [(parts[1], f"{parts[2]}.{name}") for name in imp.names or ["*"]]


def test_rooms_import_only_rooms_below_them_through_their_public_names():
    problems = []
    for path in study_modules():
        mine = room_of(path)
        for imp in imports_of(path):
            for room, name in targets(imp):
                where = f"{path.relative_to(ROOT)}:{imp.line}"
                if room == mine:
                    continue
                if room not in RANK:
                    problems.append(f"{where}: study.{room} is no room")
                elif RANK[room] >= RANK[mine]:
                    problems.append(f"{where}: {mine} imports {room}, a room at or above it")
                elif room in ROOMS and name is not None:
                    public = importlib.import_module(f"study.{room}").__all__
                    if name not in public:
                        problems.append(f"{where}: {name} is not in study.{room}.__all__")
    assert problems == []


def test_no_cycle_within_a_room():
    """Module-level imports between the modules of one room form no cycle."""
    graph: dict[str, set[str]] = {}
    for path in study_modules():
        here = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        graph[here] = set()
        for imp in imports_of(path):
            if imp.top and not imp.typing_only and imp.module.startswith("study."):
                modules = [imp.module] + [f"{imp.module}.{n}" for n in imp.names]
                graph[here] |= {
                    m for m in modules if (ROOT / (m.replace(".", "/") + ".py")).is_file()
                }
    seen, stack = set(), []

    def visit(node: str) -> None:
        assert node not in stack, f"import cycle: {' -> '.join([*stack, node])}"
        if node in seen:
            return
        stack.append(node)
        for nxt in graph.get(node, ()):
            visit(nxt)
        stack.pop()
        seen.add(node)

    for node in graph:
        visit(node)


@pytest.mark.parametrize(
    ("library", "allowed"), [("mlflow", ("tracking",)), ("optuna", ("search", "reports"))]
)
def test_a_library_is_imported_only_by_its_rooms(library, allowed):
    """MLflow only by the tracking room (others may name its types under TYPE_CHECKING); Optuna
    by the search room and the reports' fANOVA."""
    wrong = [
        f"{path.relative_to(ROOT)}:{imp.line}"
        for path in study_modules()
        if room_of(path) not in allowed
        for imp in imports_of(path)
        if imp.module.split(".")[0] == library and not imp.typing_only
    ]
    assert wrong == []


def test_the_cli_imports_no_mlflow_ray_or_optuna():
    wrong = [
        f"{path.relative_to(ROOT)}:{imp.line}: {imp.module}"
        for path in (STUDY / "cli").rglob("*.py")
        for imp in imports_of(path)
        if imp.module.split(".")[0] in ("mlflow", "ray", "optuna")
    ]
    assert wrong == []


@pytest.mark.parametrize("room", ROOMS)
def test_each_room_says_what_lives_there_and_has_a_public_surface(room):
    package = importlib.import_module(f"study.{room}")
    assert package.__doc__ and len(package.__doc__.split()) > 15
    if room == "cli":
        assert package.__all__ == ["app", "main"]
        return
    for module in (STUDY / room).glob("*.py"):  # a submodule named like a public name hides it
        importlib.import_module(f"study.{room}.{module.stem}".removesuffix(".__init__"))
    assert package.__all__ and sorted(dir(package)) == sorted(package.__all__)
    for name in package.__all__:
        assert not inspect.ismodule(getattr(package, name)), f"{name} is also a module's name"


STARTUP = """
import json, sys
from study.cli import main
sys.argv = ["vcr-study", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
heavy = ("torch", "ray", "mlflow", "optuna")
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(heavy))))
"""


@pytest.mark.parametrize(
    ("args", "may_load"),
    [
        (["--help"], []),
        (["launch", "--help"], []),
        (["best", "--help"], []),
        (["data", "features", "--help"], []),
        (["studies"], ["mlflow"]),  # it reads each study's tracking store
    ],
)
def test_commands_that_only_read_start_without_torch_or_ray(args, may_load, tmp_path):
    env = {"VCR_STUDY_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", STARTUP, *args], capture_output=True, text=True, env=env, cwd=ROOT
    )
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(loaded) <= set(may_load), out.stderr
