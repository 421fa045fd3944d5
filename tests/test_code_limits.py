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
