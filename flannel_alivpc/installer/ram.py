"""The RAM policy the project needs, derived from the code that calls the APIs.

Every Alibaba Cloud call goes through ``ApiCaller.call(product, action, ...)``
(``clients.aliyun_sdk.AliyunApi``). ``called_actions()`` reads the package's
source and collects the (product, action) pairs of those calls: a literal
action, or a helper's parameter whose every caller in the module passes a
literal (an f-string such as ``f"Create{protocol}Listener"`` becomes the RAM
wildcard ``Create*Listener``). A call site it cannot resolve is an error naming the file and line,
so a new call can never silently miss from the policy.

``manifests/ram-policy.json`` is rendered from this (``make manifests``) and a
test checks that the file and the code agree.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

PRODUCTS = ("ecs", "quotas", "slb", "vpc")
PACKAGE_DIR = Path(__file__).resolve().parent.parent
SKIPPED = ("emulator", "testbed")
"""Packages that answer or script the API rather than call it."""


class ActionScanError(Exception):
    """A call site whose action cannot be read from the source."""


@dataclass(frozen=True, order=True)
class ApiAction:
    product: str
    action: str

    @property
    def ram_name(self) -> str:
        return f"{self.product}:{self.action}"


def _constant(node: ast.AST | None) -> str | None:
    """A string literal's value; an f-string becomes a RAM wildcard pattern (``Create*Listener``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for part in node.values:
            if isinstance(part, ast.Constant) and isinstance(part.value, str):
                parts.append(part.value)
            else:
                parts.append("*")
        pattern = "".join(parts)
        return pattern if pattern.strip("*") else None
    return None


def _looks_like_api(func: ast.Attribute) -> bool:
    """``self.api.call``, ``api.call``, ``self._api.call``: the receiver is named like an API caller."""
    receiver = func.value
    name = receiver.attr if isinstance(receiver, ast.Attribute) else receiver.id if isinstance(receiver, ast.Name) \
        else ""
    return name.lstrip("_").lower().endswith("api")


class _Scanner:
    def __init__(self, tree: ast.Module, where: str) -> None:
        self.tree = tree
        self.where = where
        self.parents: dict[ast.AST, ast.AST] = {}
        for parent in ast.walk(tree):
            for child in ast.iter_child_nodes(parent):
                self.parents[child] = parent

    def _function(self, node: ast.AST) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        current: ast.AST | None = node
        while current is not None:
            current = self.parents.get(current)
            if isinstance(current, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return current
        return None

    def _argument(self, call: ast.Call, index: int, keyword: str) -> ast.AST | None:
        for kw in call.keywords:
            if kw.arg == keyword:
                return kw.value
        return call.args[index] if index < len(call.args) else None

    def _resolve(self, node: ast.AST | None, site: ast.Call, what: str) -> list[str]:
        """The literal values ``node`` can take: itself, or what callers pass for a parameter."""
        literal = _constant(node)
        if literal is not None:
            return [literal]
        function = self._function(site)
        if isinstance(node, ast.Name) and function is not None:
            params = [a.arg for a in function.args.posonlyargs + function.args.args]
            if node.id in params:
                index = params.index(node.id)
                bound = bool(params) and params[0] in ("self", "cls")
                values: list[str] = []
                callers = [c for c in ast.walk(self.tree) if isinstance(c, ast.Call) and (
                    (isinstance(c.func, ast.Attribute) and c.func.attr == function.name)
                    or (isinstance(c.func, ast.Name) and c.func.id == function.name))]
                for caller in callers:
                    position = index - 1 if bound and isinstance(caller.func, ast.Attribute) else index
                    value = _constant(self._argument(caller, position, node.id))
                    if value is None:
                        raise ActionScanError(f"{self.where}:{caller.lineno}: the {what} passed to "
                                              f"{function.name}() is not a string literal")
                    values.append(value)
                if values:
                    return values
        raise ActionScanError(f"{self.where}:{site.lineno}: cannot tell the {what} of this API call "
                              f"from the source; pass a string literal (or a helper parameter fed literals)")

    def actions(self) -> set[ApiAction]:
        found: set[ApiAction] = set()
        for node in ast.walk(self.tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "call" and (node.args or node.keywords)):
                continue
            product_node = self._argument(node, 0, "product")
            product = _constant(product_node)
            if product is None and not _looks_like_api(node.func):
                continue
            if product is not None and product not in PRODUCTS:
                continue
            products = self._resolve(product_node, node, "product")
            for name in self._resolve(self._argument(node, 1, "action"), node, "action"):
                for prod in products:
                    if prod not in PRODUCTS:
                        raise ActionScanError(f"{self.where}:{node.lineno}: unknown product {prod!r}")
                    found.add(ApiAction(prod, name))
        return found


def called_actions(package_dir: Path = PACKAGE_DIR) -> list[ApiAction]:
    """Every (product, action) the package calls, sorted."""
    found: set[ApiAction] = set()
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir)
        if relative.parts[0] in SKIPPED:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        found |= _Scanner(tree, f"{package_dir.name}/{relative}").actions()
    return sorted(found)


def ram_policy(actions: list[ApiAction] | None = None) -> dict[str, object]:
    """A RAM policy document allowing exactly ``actions`` (default: every called action)."""
    chosen = called_actions() if actions is None else actions
    statements = []
    for product in PRODUCTS:
        names = sorted(a.ram_name for a in chosen if a.product == product)
        if names:
            statements.append({"Effect": "Allow", "Action": names, "Resource": "*"})
    return {"Version": "1", "Statement": statements}


def render_ram_policy(actions: list[ApiAction] | None = None) -> str:
    return json.dumps(ram_policy(actions), indent=2) + "\n"
