"""Fuzzing the formula parser (service.expr), the one place client text becomes code-like objects.

Stronger properties than test_expr.py, for any text hypothesis can make (arbitrary unicode, a
Python-like grammar far wider than the whitelist, deep nesting, huge exponents and constants, dunder
names and attribute chains, very long input):

- parse() returns a sympy expression built only from whitelisted pieces, or raises ExpressionError,
  never any other exception, with a short message;
- its work is bounded by a budget of Python function calls (CALL_BUDGET), a machine-independent
  measure instead of wall-clock time;
- it never executes code, imports anything outside sympy / mpmath, opens files or sockets, or
  spawns processes: a Python audit hook watches every parse, and `compile` may only build an AST.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

from service import expr
from service.expr import ExpressionError, parse

VARS = ["x1", "x2"]
SYMBOLS = {sympy.Symbol(v) for v in VARS}
CALL_BUDGET = 1_000_000  # Python-level calls per parse; the costliest accepted input measured ~70,000
MAX_MESSAGE = 400        # error messages are echoed to clients: a bounded excerpt of the input at most

# ---- work budget


class OverBudget(BaseException):
    """Raised from the profiler; a BaseException, so that no `except Exception` in the code under test
    can swallow it."""


@contextmanager
def call_budget(limit: int) -> Iterator[list[int]]:
    count = [0]

    def profile(_frame: Any, event: str, _arg: Any) -> None:
        if event in ("call", "c_call"):
            count[0] += 1
            if count[0] > limit:
                raise OverBudget(f"more than {limit} calls")

    sys.setprofile(profile)
    try:
        yield count
    finally:
        sys.setprofile(None)


# ---- what parse may touch: a Python audit hook, active only around parse() on this thread

_watch = threading.local()
FORBIDDEN_EVENTS = ("exec", "open", "os.", "subprocess.", "socket.", "ctypes.", "shutil.", "builtins.input",
                    "code.__new__", "function.__new__", "marshal.", "pickle.", "urllib.", "webbrowser.")


def _audit(event: str, args: tuple[Any, ...]) -> None:
    seen = getattr(_watch, "events", None)
    if seen is None:
        return
    if event == "compile":
        if args[1] != "<unknown>":  # ast.parse's filename: an AST, never a code object to run
            seen.append(f"compile {args[1]!r}")
    elif event == "import":
        if not str(args[0]).startswith(("sympy", "mpmath")):  # sympy loads its own modules lazily
            seen.append(f"import {args[0]}")
    elif event.startswith(FORBIDDEN_EVENTS):
        seen.append(event)


sys.addaudithook(_audit)  # hooks cannot be removed; this one is idle outside `watched`


@contextmanager
def watched() -> Iterator[list[str]]:
    _watch.events = []
    try:
        yield _watch.events
    finally:
        del _watch.events


# ---- whitelisted output

_ALLOWED_FUNCS = {sympy.Add, sympy.Mul, sympy.Pow, *expr.FUNCTIONS.values()}


def assert_whitelisted(result: sympy.Expr) -> None:
    assert isinstance(result, sympy.Expr)
    for node in sympy.preorder_traversal(result):
        if node.is_Symbol:
            assert node in SYMBOLS, node
        elif node.is_Atom:
            assert node.is_number and node.is_finite is not False, node  # numbers, pi, E, I; no oo / zoo / nan
        else:
            assert node.func in _ALLOWED_FUNCS, (node.func, result)


def check(text: Any) -> sympy.Expr | None:
    """parse(text) under the budget and the audit hook; asserts every property but the first's kind."""
    with watched() as events, call_budget(CALL_BUDGET):
        try:
            result = parse(text, VARS)
        except ExpressionError as error:
            result = None
            message = str(error)
    assert events == [], events
    if result is None:
        assert len(message) <= MAX_MESSAGE, message
        return None
    assert_whitelisted(result)
    return result


def _warm_up() -> None:
    """Let sympy import what it imports lazily before anything is watched."""
    for name in expr.FUNCTIONS:
        for arg in ("0", "1", "-1", "0.5", "2", "-2.5", "pi", "E", "x1", "1/2", "x1*x2", "1e300", "709"):
            try:
                parse(f"{name}({arg})", VARS)
            except ExpressionError:
                pass


_warm_up()


# ---- strategies

NAMES = st.one_of(
    st.sampled_from(VARS + ["pi", "E", "x3", "I", "oo", "nan", "zoo", "eval", "exec", "compile", "open", "getattr",
                            "globals", "locals", "vars", "__import__", "__builtins__", "breakpoint", "input",
                            "sympify", "lambdify", "os", "sys", "Symbol", "Function", "True", "None"]),
    st.from_regex(r"\A__[a-z]{1,12}__\Z"),
    st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,20}\Z"),
)
NUMBERS = st.one_of(
    st.integers(-10**40, 10**40).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["1e308", "1e309", "1e-400", "0.0", "1j", "0x10", "1_000", "0b1", "9" * 400, "1e999", "-0"]),
)
FUNCTION_NAMES = st.sampled_from(sorted(expr.FUNCTIONS) + ["eval", "exec", "__import__", "getattr", "open", "print"])
BINARY = st.sampled_from(["+", "-", "*", "/", "**", "//", "%", "@", "^", "&", "|", "<<", ">>", "<", "==", " and ",
                          " or ", " if x1 else ", " for x1 in "])


def _compound(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(children, BINARY, children).map(lambda t: f"({t[0]}){t[1]}({t[2]})"),
        st.tuples(st.sampled_from(["-", "+", "~", "not "]), children).map("".join),
        st.tuples(FUNCTION_NAMES, st.lists(children, max_size=3)).map(lambda t: f"{t[0]}({', '.join(t[1])})"),
        st.tuples(FUNCTION_NAMES, children, NAMES).map(lambda t: f"{t[0]}({t[2]}={t[1]})"),
        st.tuples(children, NAMES).map(lambda t: f"({t[0]}).{t[1]}"),
        st.tuples(children, children).map(lambda t: f"({t[0]})[{t[1]}]"),
        children.map(lambda c: f"lambda: {c}"),
        children.map(lambda c: f"[{c} for x1 in ()]"),
        children.map(lambda c: f"f'{{{c}}}'"),
        children.map(lambda c: f"(x1 := {c})"),
        st.lists(children, max_size=3).map(lambda cs: "(" + ", ".join(cs) + ",)"),
        children.map(lambda c: f"*{c}"),
        st.sampled_from(["'os'", "b'x'", "...", "{}", "[]", "()", "\\", "#", ";", "\n", "\x00"]),
    )


PYTHONISH = st.recursive(st.one_of(NAMES, NUMBERS), _compound, max_leaves=25)


# ---- properties


@given(st.text(max_size=1_500))
def test_any_unicode_text(text: str) -> None:
    check(text)


@given(PYTHONISH)
@settings(max_examples=300)
def test_python_like_text_far_beyond_the_whitelist(text: str) -> None:
    check(text)


@given(st.sampled_from(["(", "-", "+", "sin(", "exp(", "x1**(", "[", "not ", "~", "(x1+", "abs(-", "lambda: ",
                        "x1*(", "f(", "x1.", "x1[", "((x1)**(2))*("]),
       st.integers(1, 5_000))
def test_deep_nesting(opener: str, depth: int) -> None:
    closer = {"(": ")", "sin(": ")", "exp(": ")", "x1**(": ")", "[": "]", "(x1+": ")", "abs(-": ")",
              "x1*(": ")", "f(": ")", "((x1)**(2))*(": ")"}.get(opener, "")
    check(opener * depth + "x1" + closer * depth)


@given(st.sampled_from(["x1", "2", "2.5", "-1", "pi", "E", "(x1+1)", "1e300", "0", "10", "0.5"]),
       st.one_of(st.integers(-10**50, 10**50).map(str), st.floats(allow_nan=False).map(repr),
                 st.sampled_from(["1e308", "-1e308", "10.0000001", "-10", "x2", "(1/3)", "1e-300"])),
       st.integers(1, 12))
def test_huge_exponents_and_power_chains(base: str, exponent: str, chain: int) -> None:
    check(f"({base})" + f"**({exponent})" * chain)
    check(f"{base}**{exponent}")


@given(st.sampled_from(["exp", "sinh", "cosh", "sin", "tanh", "log", "sqrt"]),
       st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-10**15, 10**15)), st.integers(1, 6))
def test_towers_of_functions_of_large_constants(name: str, value: float, depth: int) -> None:
    check(f"{name}(" * depth + repr(value) + ")" * depth)


@given(st.lists(st.sampled_from(["x1", "__class__", "__bases__", "__subclasses__()", "__globals__", "__builtins__",
                                 "__import__('os')", "__dict__", "mro()", "real", "func", "args", "__code__"]),
                min_size=2, max_size=8))
def test_dunder_names_and_attribute_chains(parts: list[str]) -> None:
    assert check(".".join(parts)) is None
    assert check("sin(" + ".".join(parts) + ") + x1") is None


@given(st.text(min_size=expr.MAX_LENGTH + 1, max_size=100_000))
@settings(max_examples=20)
def test_very_long_text_is_refused_cheaply(text: str) -> None:
    with call_budget(1_000):  # refused on its length, before any parsing
        with pytest.raises(ExpressionError, match="longer than"):
            parse(text, VARS)


@given(st.sampled_from(["x1+", "sin(x1)*", "x1**2-", "(x1)/", "9*"]), st.integers(0, 1_000))
def test_long_valid_looking_input_up_to_the_limit(unit: str, repeat: int) -> None:
    check((unit * repeat + "x1")[: expr.MAX_LENGTH])


@pytest.mark.parametrize("value", [None, 1, 1.5, b"x1", ["x1"], {"x1": 1}, object()])
def test_non_strings_are_an_expression_error(value: Any) -> None:
    assert check(value) is None


def test_the_watchers_see_what_they_guard_against() -> None:
    """The hook and the budget are live: a real eval, a file open and a loop are all caught."""
    with watched() as events:
        eval("1 + 1")  # noqa: S307 - the point of the test
        with open(__file__, encoding="utf-8"):
            pass
    assert "exec" in events and "open" in events
    with pytest.raises(OverBudget), call_budget(1_000):
        for _ in range(2_000):
            abs(-1)


@pytest.mark.parametrize("text", ["sin(exp(exp(20.0)))", "exp(exp(exp(100.0)))", "exp(1e10)", "cosh(1e6)*x1",
                                  "1e300*1e300", "exp(pi*1e12)"])
def test_constants_beyond_float64_are_refused_before_sympy_computes_them(text: str) -> None:
    """Found by these tests: sympy folds constants eagerly, so `sin(exp(exp(20.0)))` took minutes and
    gigabytes, and `exp(exp(exp(100.0)))` raised OverflowError (a 500 from POST /v1/datasets)."""
    with call_budget(CALL_BUDGET), pytest.raises(ExpressionError, match="constant too large"):
        parse(text, VARS)


def test_the_budget_holds_the_costliest_accepted_input() -> None:
    text = "sin(" * (expr.MAX_DEPTH - 1) + "x1" + ")" * (expr.MAX_DEPTH - 1)
    with call_budget(CALL_BUDGET) as calls:
        parse(text, VARS)
    assert calls[0] < CALL_BUDGET // 5  # a wide margin: the budget is not tuned to pass


