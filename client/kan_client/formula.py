"""The service's formula text (sympy's printing) back to a sympy expression, without eval: the text
is parsed with `ast` and only numbers, the formula's variables, + - * / ** and sympy's elementary
functions and constants are rebuilt. Needs sympy (`pip install kan-client[sympy]`)."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import Any

FUNCTIONS = ("exp", "log", "sqrt", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh",
             "asinh", "acosh", "atanh", "Abs", "sign", "re", "im", "Max", "Min", "floor", "ceiling")
CONSTANTS = ("pi", "E", "I", "oo", "zoo", "nan")


def _sympy() -> Any:
    try:
        import sympy
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("formulas as sympy expressions need sympy: pip install 'kan-client[sympy]'") from None
    return sympy


def to_sympy(text: str, variables: Sequence[str] = ()) -> Any:
    """`text` as a sympy expression whose variables are plain Symbols named as in `variables` (any
    other name is a Symbol too). ValueError for anything that is not an arithmetic formula."""
    sympy = _sympy()
    symbols = {name: sympy.Symbol(name) for name in variables}
    functions = {name: getattr(sympy, name) for name in FUNCTIONS}
    constants = {"pi": sympy.pi, "E": sympy.E, "I": sympy.I, "oo": sympy.oo, "zoo": sympy.zoo, "nan": sympy.nan}
    binary = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
              ast.Div: lambda a, b: a / b, ast.Pow: lambda a, b: a**b}

    def build(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return build(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return sympy.Integer(node.value) if isinstance(node.value, int) else sympy.Float(node.value)
        if isinstance(node, ast.Name):
            if node.id in symbols:
                return symbols[node.id]
            return constants.get(node.id) or sympy.Symbol(node.id)
        if isinstance(node, ast.BinOp) and type(node.op) in binary:
            return binary[type(node.op)](build(node.left), build(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = build(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in functions
                and not node.keywords and node.func.id not in symbols):
            return functions[node.func.id](*(build(arg) for arg in node.args))
        raise ValueError(f"not an arithmetic formula: {ast.dump(node)[:80]}")

    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not a formula: {exc.msg}") from None
    return build(tree)
