"""The house rules a reader can rely on: small modules and functions, MXNet's private names in one module."""
import ast
import os
import re

from conftest import REPO

PACKAGE = os.path.join(REPO, "multitask_mx")
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60
# private attributes of MXNet/GluonCV objects this code has needed; only mxprivate.py may touch them
MXNET_PRIVATE = re.compile(r"(?<!self)(?<!cls)\.(_optimizer|_updaters|_kvstore|_kv_initialized|_params_to_init|"
                           r"_init_kvstore|_init_params|_update_on_kvstore|_distributed|_barrier|_dataset|_timeout|"
                           r"_scale|_param2idx|_deferred_init|_finish_deferred_init|_collect_params_with_prefix|"
                           r"_model_sha1|_url_format|_init_kvstore_server_module|_LIB)\b")


def _modules():
    for folder, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                yield os.path.relpath(path, REPO), open(path, encoding="utf-8").read()


def test_no_module_over_400_lines_and_no_function_over_60():
    too_long = []
    for path, source in _modules():
        lines = source.count("\n")
        if lines > MAX_MODULE_LINES:
            too_long.append("%s: %d lines" % (path, lines))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append("%s:%d %s(): %d lines" % (path, node.lineno, node.name, length))
    assert not too_long, "split these by concept:\n" + "\n".join(too_long)


def test_mxnet_private_names_only_in_mxprivate():
    found = ["%s:%d %s" % (path, number, line.strip())
             for path, source in _modules() if not path.endswith("mxprivate.py")
             for number, line in enumerate(source.splitlines(), 1) if MXNET_PRIVATE.search(line)]
    assert not found, "use (or add) an accessor in multitask_mx/mxprivate.py:\n" + "\n".join(found)


# The stages, lowest first: a module imports only its own layer or lower ones (docs/internals.md "Code map").
LAYERS = {"data": 1, "model": 2, "training": 3, "use": 4, "commands": 5, "cli": 5, "api": 5, "__main__": 5}
# Top-level aliases that must import upward: ``multitask_mx.schedules`` is the old home of the schedule
# classes that pickled .states files name (tests/training/test_states_compat.py); the package's __init__ offers the API.
LAYER_EXCEPTIONS = {"multitask_mx", "multitask_mx.schedules"}


def _layer(module):
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def _import_graph():
    """{module: {modules of this package it imports}}, lazy imports inside functions included."""
    graph = {}
    for path, source in _modules():
        module = path[:-3].replace(os.sep, ".")
        is_package = module.endswith(".__init__")
        module = module[:-len(".__init__")] if is_package else module
        package = module if is_package else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                if base.startswith("multitask_mx"):
                    for alias in node.names:
                        child = base + "." + alias.name
                        found = os.path.exists(os.path.join(REPO, *child.split(".")) + ".py") or \
                            os.path.isdir(os.path.join(REPO, *child.split(".")))
                        graph.setdefault(module, set()).add(child if found else base)
            elif isinstance(node, ast.Import):
                graph.setdefault(module, set()).update(a.name for a in node.names if a.name.startswith("multitask_mx"))
    return {m: {t for t in targets if t != m} for m, targets in graph.items()}


def test_imports_flow_one_way_with_no_circles():
    graph = _import_graph()
    upward = ["%s imports %s" % (m, t) for m, targets in sorted(graph.items()) if m not in LAYER_EXCEPTIONS
              for t in sorted(targets) if _layer(t) > _layer(m)]
    assert not upward, "a lower stage imports a higher one:\n" + "\n".join(upward)
    circles = []
    for start in graph:  # every circle passes through its smallest module name
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for target in graph.get(node, ()):
                if target == start:
                    circles.append(" -> ".join(path + [start]))
                elif target > start and target not in path:
                    stack.append((target, path + [target]))
    assert not circles, "import circles:\n" + "\n".join(sorted(set(circles))[:20])
