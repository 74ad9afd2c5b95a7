"""The package's layers point down only (README "Layout"): no module imports a layer above its own, at module level
or inside a function."""
import ast
from pathlib import Path

import zreward

# Bottom to top; a module may import its own layer and the ones before it.
LAYERS = ["atomic", "data", "models", "losses", "metrics", "trainers", "eval", "align", "serve", "client",
          "demo_profiles", "demo_types", "demo_stages", "demo", "cli"]


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
    return [(ln, m) for ln, m in out if m.startswith("zreward.")]


def test_layers_point_down_only():
    root = Path(zreward.__file__).parent
    rank = {name: i for i, name in enumerate(LAYERS)}
    files = sorted(p for p in root.rglob("*.py") if p.name != "__init__.py" or p.parent != root)
    upward, unknown = [], []
    for f in files:
        top = f.relative_to(root).parts[0].removesuffix(".py")
        if top not in rank:
            unknown.append(str(f.relative_to(root)))
            continue
        for line, mod in _imports(ast.parse(f.read_text(), str(f))):
            target = mod.split(".")[1]
            if rank.get(target, -1) > rank[top]:
                upward.append(f"{f.relative_to(root)}:{line} imports {mod}")
    assert not unknown, f"modules outside every layer (add them to LAYERS): {unknown}"
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_layer_check_sees_function_local_imports():
    tree = ast.parse("def f():\n    from zreward.eval.metrics import kl\n")
    assert _imports(tree) == [(2, "zreward.eval.metrics")]
