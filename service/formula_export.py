"""Formulas as text a program can use, no HTTP: code in several dialects (sympy's code printers), a
discovery's Pareto front as CSV, and the symbolic function library as plain records.

Code is printed from the formula read back by the whitelist parser (service.expr), never evaluated
here. Each dialect prints one module: imports, then one function per output whose parameters are
the formula's variables in input-column order, so `f(*row)` evaluates one row and numpy / torch
arrays evaluate many at once.
"""

from __future__ import annotations

import csv
import enum
import io
import keyword
import re
from collections.abc import Mapping, Sequence
from typing import Any

import sympy
from sympy.printing.latex import latex
from sympy.printing.numpy import NumPyPrinter
from sympy.printing.pycode import PythonCodePrinter
from sympy.printing.pytorch import TorchPrinter
from sympy.printing.str import StrPrinter

from kan_core.expr import STORED_LIMITS, parse
from kan_core.functions import DEFAULT_LIBRARY, SEED_LIBRARY_NAMES

# names the printed code uses itself: a variable or function may not shadow them
_CODE_NAMES = frozenset({"math", "numpy", "torch"})
_SYMPY_NAMES = frozenset(name for name in dir(sympy) if not name.startswith("_"))


class FormulaFormat(str, enum.Enum):
    sympy = "sympy"    # Python that builds the sympy expressions
    latex = "latex"    # one LaTeX formula per line
    python = "python"  # plain Python on floats (the math module)
    numpy = "numpy"    # numpy: scalars or arrays
    torch = "torch"    # torch tensors (differentiable)


MEDIA_TYPES = {FormulaFormat.latex: "text/x-latex; charset=utf-8"}
PYTHON_MEDIA_TYPE = "text/x-python; charset=utf-8"


def _identifier(name: str, taken: set[str], reserved: frozenset[str]) -> str:
    """`name` as a Python identifier that is no keyword, reserved name or duplicate."""
    ident = re.sub(r"\W", "_", name) or "f"
    if ident[0].isdigit():
        ident = "_" + ident
    while keyword.iskeyword(ident) or ident in reserved or ident in taken:
        ident += "_"
    taken.add(ident)
    return ident


def _functions(entries: Sequence[Mapping[str, Any]], reserved: frozenset[str]
               ) -> list[tuple[str, list[str], sympy.Expr]]:
    """(function name, parameter names, expression over those parameters) per formula entry."""
    out, names = [], set()
    for j, entry in enumerate(entries):
        variables = list(entry["variables"])
        expr = parse(entry["text"], variables, limits=STORED_LIMITS)
        params: set[str] = set()
        idents = [_identifier(v, params, reserved) for v in variables]
        expr = expr.xreplace({sympy.Symbol(v): sympy.Symbol(p) for v, p in zip(variables, idents) if v != p})
        out.append((_identifier(entry.get("name") or f"y{j + 1}", names, reserved), idents, expr))
    return out


def export(entries: Sequence[Mapping[str, Any]], fmt: FormulaFormat) -> str:
    """The formulas (FormulaOut-shaped dicts: text, variables, name) printed in `fmt`. A variable or
    output name that would clash with the printed code's own names gets a trailing underscore."""
    if fmt is FormulaFormat.sympy:
        # `from sympy import *` code: names sympy exports are taken; S(1)/3 keeps rationals exact
        printer = StrPrinter({"sympy_integers": True})
        lines = ["from sympy import *  # noqa: F403", ""]
        for name, params, expr in _functions(entries, _SYMPY_NAMES):
            if params:
                lines.append(f"{', '.join(params)}{',' if len(params) == 1 else ''} = symbols({' '.join(params)!r})")
            lines += [f"{name} = {printer.doprint(expr)}", ""]
        return "\n".join(lines)
    functions = _functions(entries, _CODE_NAMES)
    if fmt is FormulaFormat.latex:  # the output's own name, as the JSON answer gives it
        return "".join(f"{entry.get('name') or name} = {latex(expr)}\n"
                       for entry, (name, _, expr) in zip(entries, functions))
    printer_class, header = {
        FormulaFormat.python: (PythonCodePrinter, "import math"),
        FormulaFormat.numpy: (NumPyPrinter, "import numpy"),
        FormulaFormat.torch: (TorchPrinter, "import torch"),
    }[fmt]
    lines = [header, ""]
    for name, params, expr in functions:
        body = printer_class({"fully_qualified_modules": True}).doprint(expr)
        if fmt is FormulaFormat.torch and not expr.free_symbols:  # a constant: a tensor all the same
            body = f"torch.as_tensor({body})"
        lines += ["", f"def {name}({', '.join(params)}):", f"    return {body}", ""]
    return "\n".join(lines)


FRONT_COLUMNS = ("chosen", "complexity", "test_rmse", "r2", "train_rmse", "formula", "latex", "variables",
                 "job_id", "candidate_id", "family", "label")


def front_csv(front: Sequence[Mapping[str, Any]], chosen: Mapping[str, Any] | None) -> str:
    """A discovery's Pareto front, simplest first, one row per formula; `variables` joined by spaces."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(FRONT_COLUMNS)
    for point in front:
        candidate = point.get("candidate") or {}
        writer.writerow([
            str(chosen is not None and point.get("job_id") == chosen.get("job_id")).lower(),
            point["complexity"], _num(point["test_rmse"]), _num(point.get("r2")), _num(point.get("train_rmse")),
            point["formula"], point.get("latex", ""), " ".join(point.get("variables", [])), point["job_id"],
            candidate.get("id") or "", candidate.get("family") or "", candidate.get("label") or "",
        ])
    return buffer.getvalue()


def _num(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def function_library() -> list[dict[str, Any]]:
    """Every function of the engine's library: name, complexity, its sympy form at x, whether the seed
    pipeline's auto_symbolic uses it and whether discovery does."""
    from kan_core.discovery import DISCOVERY_LIBRARY

    x = sympy.Symbol("x")
    return [{"name": fn.name, "complexity": fn.complexity, "sympy": str(fn.sympy(x)), "latex": latex(fn.sympy(x)),
             "seed_library": fn.name in SEED_LIBRARY_NAMES, "discovery_library": fn.name in DISCOVERY_LIBRARY}
            for fn in DEFAULT_LIBRARY.values()]
