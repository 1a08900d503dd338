"""A strict, whitelist parser for user-written formulas such as ``exp(sin(pi*x1) + x2**2)``.

User text is parsed with Python's `ast` module (which only builds a tree; nothing is evaluated) and
translated node by node into a sympy expression. Only numbers, the declared variable names, the
constants ``pi`` and ``E``, the operators ``+ - * / **`` (and unary ``-``/``+``) and one-argument calls
to the functions in `FUNCTIONS` are accepted; anything else (attributes, subscripts, dunder names,
lambdas, comprehensions, keyword arguments...) raises `ExpressionError` naming the offending part.
`eval`, `exec`, `sympify` and `parse_expr` never see the raw text. The formulas a worker stores are
read back by the same parser (`STORED_LIMITS`: larger, and sympy's printed names), so no text from the
database is evaluated either.

Size limits keep parsing and evaluation bounded: text length, number of nodes, nesting depth,
literal exponent magnitude, no power inside an exponent (so no ``9**9**9``), and constant powers
must fit in a float (so no ``((9**10)**10)**10...``). sympy folds constants as it builds the tree, so
constants are bounded too: every constant must fit in a float64, and ``exp``, ``sinh`` and ``cosh``
of a constant beyond +-709 (where float64 overflows) are refused before sympy computes them
(``sin(exp(exp(20.0)))`` would otherwise take minutes and gigabytes). Anything sympy still cannot
represent is an ExpressionError, never another exception.
"""

from __future__ import annotations

import ast
import keyword
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import sympy

MAX_LENGTH = 1_000
MAX_NODES = 200
MAX_DEPTH = 32
MAX_EXPONENT = 10
MAX_INTEGER = 10**15  # larger integer literals must be written as floats (1e20): exact big-int arithmetic is slow
# log10 of the largest constant a power of two numbers may produce (float64 tops out near 1e308).
MAX_CONSTANT_LOG10 = 308
MAX_EXP_ARGUMENT = 709.0  # exp(709) ~ 8e307: beyond it exp, sinh and cosh leave float64


@dataclass(frozen=True)
class Limits:
    length: int = MAX_LENGTH
    nodes: int = MAX_NODES
    depth: int = MAX_DEPTH
    exponent: float = MAX_EXPONENT
    integer: int = MAX_INTEGER
    sympy_names: bool = False  # also read the names sympy prints (`Abs`)


USER_LIMITS = Limits()
# Formulas the worker stored (sympy's printing of a trained network): larger, with integer powers
# sympy may have merged (x**4 of x**4 is x**16), but read by the same whitelist; the depth stays
# where the recursive translation is safe on any thread's stack.
STORED_LIMITS = Limits(length=1_000_000, nodes=100_000, depth=200, exponent=1_000, integer=10**300, sympy_names=True)

FUNCTIONS: dict[str, sympy.FunctionClass] = {
    "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan,
    "asin": sympy.asin, "acos": sympy.acos, "atan": sympy.atan,
    "arcsin": sympy.asin, "arccos": sympy.acos, "arctan": sympy.atan,
    "sinh": sympy.sinh, "cosh": sympy.cosh, "tanh": sympy.tanh,
    "asinh": sympy.asinh, "acosh": sympy.acosh, "atanh": sympy.atanh,
    "arcsinh": sympy.asinh, "arccosh": sympy.acosh, "arctanh": sympy.atanh,
    "exp": sympy.exp, "log": sympy.log, "ln": sympy.log, "sqrt": sympy.sqrt,
    "abs": sympy.Abs, "sign": sympy.sign, "sgn": sympy.sign,
}
SYMPY_NAMES: dict[str, sympy.FunctionClass] = {"Abs": sympy.Abs}  # sympy's printing of abs
CONSTANTS: dict[str, sympy.Expr] = {"pi": sympy.pi, "E": sympy.E}
RESERVED_NAMES = frozenset(FUNCTIONS) | frozenset(CONSTANTS)
_UNDEFINED = (sympy.zoo, sympy.oo, -sympy.oo, sympy.nan, sympy.AccumBounds)

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
_NAME_RE = re.compile(NAME_PATTERN)

_BINARY: dict[type[ast.operator], Callable[[sympy.Expr, sympy.Expr], sympy.Expr]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}
_OPERATOR_HINTS: dict[type[ast.AST], str] = {
    ast.BitXor: "'^' is not allowed; write powers as '**'",
    ast.FloorDiv: "'//' is not allowed; use '/'",
    ast.Mod: "'%' is not allowed",
    ast.MatMult: "'@' is not allowed",
}
_NODE_NAMES: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscripts",
    ast.Lambda: "lambdas",
    ast.ListComp: "comprehensions", ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions", ast.GeneratorExp: "comprehensions",
    ast.Compare: "comparisons",
    ast.BoolOp: "boolean operators",
    ast.IfExp: "conditional expressions",
    ast.NamedExpr: "assignment expressions",
    ast.Starred: "starred arguments",
    ast.JoinedStr: "f-strings",
    ast.Tuple: "tuples", ast.List: "lists", ast.Set: "sets", ast.Dict: "dicts",
    ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield",
}


class ExpressionError(ValueError):
    """User text that is not an acceptable expression; `part` is the offending fragment, if any."""

    def __init__(self, message: str, part: str | None = None):
        super().__init__(f"{message}: {part!r}" if part else message)
        self.part = part


def is_valid_name(name: str) -> bool:
    """Whether `name` can be a variable (feature or target) name in formulas."""
    return (
        bool(_NAME_RE.match(name)) and not name.startswith("__") and name not in RESERVED_NAMES
        and not keyword.iskeyword(name)
    )


def parse(text: str, variables: Sequence[str], *, limits: Limits = USER_LIMITS) -> sympy.Expr:
    """`text` as a sympy expression over `variables` (plain sympy Symbols of those names).

    Raises ExpressionError for anything outside the whitelist or over the size limits."""
    if not isinstance(text, str):
        raise ExpressionError("the expression must be a string")
    if len(text) > limits.length:
        raise ExpressionError(f"the expression is longer than {limits.length} characters")
    if not text.strip():
        raise ExpressionError("the expression is empty")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"syntax error: {exc.msg}", (exc.text or "").strip()[:60] or None) from None
    except (RecursionError, MemoryError, ValueError):
        raise ExpressionError(f"the expression is nested too deeply (at most {limits.depth} levels)") from None
    source = text.strip()
    _check_size(tree.body, source, limits)
    symbols = {name: sympy.Symbol(name) for name in variables}
    try:
        return _Translator(source, symbols, limits).convert(tree.body)
    except ExpressionError:
        raise
    except (ArithmeticError, ValueError, TypeError, MemoryError, RecursionError) as exc:
        # sympy folds constants eagerly; a constant it cannot represent is the expression's fault
        raise ExpressionError(f"the expression's constants cannot be evaluated ({type(exc).__name__})") from None


def compile_numpy(expr: sympy.Expr, variables: Sequence[str]) -> Callable[[np.ndarray], np.ndarray]:
    """A function mapping an (n, len(variables)) float array to the n values of `expr`.

    Values may be non-finite (log of a negative number...) or complex (a fractional power of a negative
    constant); callers check. The code lambdify generates comes from sympy's printer of an
    already-whitelisted expression, not from user text."""
    symbols = [sympy.Symbol(name) for name in variables]
    try:
        fn = sympy.lambdify(symbols, expr, modules="numpy")
    except NotImplementedError as exc:  # something numpy cannot express; parse() should not produce it
        raise ExpressionError(f"the expression cannot be evaluated numerically ({exc})") from None

    def evaluate(x: np.ndarray) -> np.ndarray:
        try:
            with np.errstate(all="ignore"):
                values = fn(*(x[:, j] for j in range(x.shape[1])))
            return np.broadcast_to(np.asarray(values), (x.shape[0],)).copy()
        except (ArithmeticError, TypeError, ValueError) as exc:  # e.g. a constant too large for a float
            raise ExpressionError(f"the expression cannot be evaluated numerically ({exc})") from None

    return evaluate


def _check_size(root: ast.AST, source: str, limits: Limits) -> None:
    """Node count and nesting depth, computed iteratively so hostile input cannot overflow the stack."""
    count = 0
    stack: list[tuple[ast.AST, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, ast.expr):
            count += 1
            if count > limits.nodes:
                raise ExpressionError(f"the expression has more than {limits.nodes} terms")
            if depth > limits.depth:
                raise ExpressionError(
                    f"the expression is nested too deeply (at most {limits.depth} levels)", _segment(source, node)
                )
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def _segment(source: str, node: ast.AST, limit: int = 60) -> str:
    text = ast.get_source_segment(source, node) or type(node).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _contains_power(node: ast.AST) -> bool:
    return any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Pow) for n in ast.walk(node))


_EXPONENTIAL = (sympy.exp, sympy.sinh, sympy.cosh)


def _magnitude(constant: sympy.Expr) -> float:
    """|constant| as a float (inf when it is beyond float64); the constant's parts are bounded already."""
    real, imag = constant.evalf(15).as_real_imag()
    return max(abs(float(real)), abs(float(imag)))


def _log10_abs(number: sympy.Number) -> float:
    if number.is_Rational:
        return math.log10(abs(int(number.p))) - math.log10(int(number.q))
    return math.log10(abs(float(number)))


class _Translator:
    def __init__(self, source: str, symbols: dict[str, sympy.Symbol], limits: Limits):
        self.source = source
        self.symbols = symbols
        self.limits = limits
        self.functions = {**FUNCTIONS, **SYMPY_NAMES} if limits.sympy_names else FUNCTIONS

    def fail(self, message: str, node: ast.AST) -> ExpressionError:
        return ExpressionError(message, _segment(self.source, node))

    def convert(self, node: ast.AST) -> sympy.Expr:
        """`node` as sympy; every sub-expression must stay defined (sympy folds constants eagerly,
        and a folded 1/0 can hide later, e.g. atan(1/0) becomes an interval)."""
        result = self._convert(node)
        if result.has(*_UNDEFINED):
            raise self.fail("undefined (a division by zero or an infinite value)", node)
        if result.is_Number and result != 0 and _log10_abs(result) > MAX_CONSTANT_LOG10:
            raise self.fail("constant too large", node)
        return result

    def _convert(self, node: ast.AST) -> sympy.Expr:
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                return -self.convert(node.operand)
            if isinstance(node.op, ast.UAdd):
                return self.convert(node.operand)
            raise self.fail("only unary '-' and '+' are allowed", node)
        if isinstance(node, ast.BinOp):
            return self.binary(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        raise self.fail(f"{_NODE_NAMES.get(type(node), type(node).__name__)} not allowed", node)

    def constant(self, node: ast.Constant) -> sympy.Expr:
        value = node.value
        if type(value) is int:
            if value > self.limits.integer:
                raise self.fail("integer too large (write large numbers as floats, e.g. 1e20)", node)
            return sympy.Integer(value)
        if type(value) is float:
            if not math.isfinite(value):
                raise self.fail("number out of range", node)
            return sympy.Float(value)
        raise self.fail("only numbers are allowed as literals", node)

    def name(self, node: ast.Name) -> sympy.Expr:
        name = node.id
        if name.startswith("__"):
            raise self.fail("names starting with '__' are not allowed", node)
        if name in self.symbols:
            return self.symbols[name]
        if name in CONSTANTS:
            return CONSTANTS[name]
        if name in self.functions:
            raise self.fail(f"function {name!r} must be called with one argument", node)
        raise self.fail("unknown name (declare it as a variable)", node)

    def binary(self, node: ast.BinOp) -> sympy.Expr:
        if isinstance(node.op, ast.Pow):
            return self.power(node)
        op = _BINARY.get(type(node.op))
        if op is None:
            raise self.fail(_OPERATOR_HINTS.get(type(node.op), "operator not allowed"), node)
        return op(self.convert(node.left), self.convert(node.right))

    def power(self, node: ast.BinOp) -> sympy.Expr:
        if _contains_power(node.right):
            raise self.fail("powers inside an exponent (power towers) are not allowed", node)
        base, exponent = self.convert(node.left), self.convert(node.right)
        if exponent.is_Number:
            if abs(exponent) > self.limits.exponent:
                raise self.fail(f"exponents must be between -{self.limits.exponent:g} and {self.limits.exponent:g}",
                                node)
            if base.is_Number and base != 0 and abs(float(exponent)) * _log10_abs(base) > MAX_CONSTANT_LOG10:
                raise self.fail("constant too large", node)
        return sympy.Pow(base, exponent)

    def call(self, node: ast.Call) -> sympy.Expr:
        if not isinstance(node.func, ast.Name):
            raise self.fail("only calls of named functions are allowed", node)
        name = node.func.id
        function = self.functions.get(name)
        if function is None:
            raise self.fail(f"function {name!r} is not allowed (allowed: {', '.join(sorted(FUNCTIONS))})", node)
        if node.keywords:
            raise self.fail("keyword arguments are not allowed", node)
        if len(node.args) != 1:
            raise self.fail(f"function {name!r} takes exactly one argument", node)
        argument = self.convert(node.args[0])
        if function in _EXPONENTIAL and argument.is_number and _magnitude(argument) > MAX_EXP_ARGUMENT:
            raise self.fail(f"constant too large: {name} of a constant beyond +-{MAX_EXP_ARGUMENT:g}", node)
        return function(argument)


__all__ = [
    "CONSTANTS",
    "FUNCTIONS",
    "MAX_CONSTANT_LOG10",
    "MAX_DEPTH",
    "MAX_EXPONENT",
    "MAX_EXP_ARGUMENT",
    "MAX_INTEGER",
    "MAX_LENGTH",
    "MAX_NODES",
    "NAME_PATTERN",
    "RESERVED_NAMES",
    "STORED_LIMITS",
    "SYMPY_NAMES",
    "USER_LIMITS",
    "ExpressionError",
    "Limits",
    "compile_numpy",
    "is_valid_name",
    "parse",
]
