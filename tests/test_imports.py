"""The import rule (README, "Imports, for contributors"): mmpt's own modules at the top of a module, heavy ones only where they are used."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (file, module): a module of ours that wraps an optional heavy dependency, imported where it is chosen
WRAPPERS = {("mmpt/eval/generate.py", "mmpt.eval.engines.vllm")}
HEAVY = {"torch", "transformers", "deepspeed", "datasets", "matplotlib"}


def _function_level_imports(path: Path) -> set[str]:
    """The modules of ours that `path` imports inside a function body."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and (inner.module or "").split(".")[0] == "mmpt":
                    found.add(inner.module)
                elif isinstance(inner, ast.Import):
                    found |= {a.name for a in inner.names if a.name.split(".")[0] == "mmpt"}
    return found


def test_our_modules_are_imported_at_the_top():
    late = {
        (path.relative_to(ROOT).as_posix(), module)
        for path in (ROOT / "mmpt").rglob("*.py")
        for module in _function_level_imports(path)
    }
    assert late <= WRAPPERS, sorted(late - WRAPPERS)


def test_light_commands_import_no_heavy_module():
    """`--help` of every command whose work needs none of them, and the demo's report, pay for none."""
    code = (
        "import sys\nfrom mmpt.cli import main\n"
        "for name in ('report', 'execute', 'passk', 'prepare', 'demo'):\n"
        "    try:\n        main([name, '--help'])\n    except SystemExit:\n        pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[1:])))\n"
    )
    run = subprocess.run([sys.executable, "-c", code, *HEAVY], capture_output=True, text=True, cwd=ROOT)
    assert run.stdout.strip().splitlines()[-1] == "[]", run.stdout[-2000:] + run.stderr[-2000:]
