"""Derived columns and row filters for tables of runs, from a small safe expression language (no eval):
numbers, 'strings', column names (quote odd ones in backticks: `smooth loss`), + - * / ** and unary minus, log,
exp, sqrt, abs, comparisons (< <= > >= == !=), `in` / `not in` a list of values, the string tests
startswith(col, 'x'), endswith(col, 'x') and contains(col, 'x'), and `and` / `or` / `not`.

    derive(table, "D", "C / (6 * N)")          # Epoch's Chinchilla file has N, C and loss
    where(table, "D > 1e9 and N < 1e10")
    where(table, "dataset in ('rw', 'owt2') and not startswith(config, 'kaplan')")
"""
import ast
import operator
import re

import numpy as np
import pandas as pd

from .result import NotFittable

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.Pow: operator.pow}
_COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Eq: operator.eq,
            ast.NotEq: operator.ne}
_FUNCTIONS = {"log": np.log, "exp": np.exp, "sqrt": np.sqrt, "abs": np.abs, "log10": np.log10}
_STRING_TESTS = {"startswith": lambda s, x: s.astype(str).str.startswith(x),
                 "endswith": lambda s, x: s.astype(str).str.endswith(x),
                 "contains": lambda s, x: s.astype(str).str.contains(x, regex=False)}


def evaluate(table: pd.DataFrame, expr: str, aliases: dict | None = None):
    """The value of `expr` over the table's columns (a Series, or a number). aliases: other names for columns
    (canonical -> the table's, from --columns), used where the table has no column of that name."""
    aliases = aliases or {}
    names = {}

    def quoted(match):  # `smooth loss` -> a plain identifier standing for that column
        names[f"_c{len(names)}"] = match.group(1)
        return f"_c{len(names) - 1}"
    source = re.sub(r"`([^`]+)`", quoted, expr)
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as err:
        raise NotFittable(f"cannot parse the expression {expr!r}: {err.msg}") from None

    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
            return node.value
        if isinstance(node, ast.Name):
            column = names.get(node.id, node.id)
            column = column if column in table.columns else aliases.get(column, column)
            if column not in table.columns:
                raise NotFittable(f"the expression {expr!r} names the column {column!r}, which the table lacks; "
                                  f"columns are: {', '.join(map(str, table.columns))}")
            values = table[column]
            return values.astype(float) if pd.api.types.is_numeric_dtype(values) and values.dtype != bool else values
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _BINARY[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            return -walk(node.operand) if isinstance(node.op, ast.USub) else walk(node.operand)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return ~walk(node.operand)
        if isinstance(node, ast.BoolOp):
            values = [walk(v) for v in node.values]
            out = values[0]
            for v in values[1:]:
                out = (out & v) if isinstance(node.op, ast.And) else (out | v)
            return out
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], (ast.In, ast.NotIn)):
            choices = node.comparators[0]
            if not isinstance(choices, (ast.Tuple, ast.List, ast.Set)) or \
                    not all(isinstance(c, ast.Constant) for c in choices.elts):
                raise NotFittable(f"the expression {expr!r}: `in` takes a list of values, e.g. dataset in ('rw', 'owt2')")
            inside = walk(node.left).isin([c.value for c in choices.elts])
            return ~inside if isinstance(node.ops[0], ast.NotIn) else inside
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _STRING_TESTS:
            if len(node.args) != 2 or node.keywords or not (isinstance(node.args[1], ast.Constant) and
                                                            isinstance(node.args[1].value, str)):
                raise NotFittable(f"the expression {expr!r}: {node.func.id} takes a column and a 'string', "
                                  f"e.g. {node.func.id}(config, 'rw')")
            return _STRING_TESTS[node.func.id](walk(node.args[0]), node.args[1].value)
        if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
            left, out = walk(node.left), True
            for op, right in zip(node.ops, node.comparators):
                right = walk(right)
                out = out & _COMPARE[type(op)](left, right)
                left = right
            return out
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS \
                and len(node.args) == 1 and not node.keywords:
            return _FUNCTIONS[node.func.id](walk(node.args[0]))
        raise NotFittable(f"the expression {expr!r} uses {ast.dump(node)[:60]}...; allowed: numbers, columns, "
                          f"+ - * / **, {', '.join(_FUNCTIONS)}, comparisons, in (...), "
                          f"{', '.join(_STRING_TESTS)}(column, 'text'), and/or/not")
    return walk(tree)


def derive(table: pd.DataFrame, name: str, expr: str, aliases: dict | None = None) -> pd.DataFrame:
    """The table with column `name` = expr."""
    return table.assign(**{name.strip(): evaluate(table, expr, aliases)})


def where(table: pd.DataFrame, expr: str, aliases: dict | None = None) -> pd.DataFrame:
    """The rows for which expr holds."""
    mask = evaluate(table, expr, aliases)
    if not isinstance(mask, pd.Series) or mask.dtype != bool:
        raise NotFittable(f"--where {expr!r} is not a condition (use a comparison, e.g. D > 1e9)")
    return table[mask]


def drop_top(table: pd.DataFrame, column: str, k: int) -> pd.DataFrame:
    """Without the k rows of highest `column` (Epoch drops the 5 highest-loss Chinchilla points)."""
    if column not in table.columns:
        raise NotFittable(f"--drop-top needs the column {column!r}; columns are: {', '.join(map(str, table.columns))}")
    return table.drop(table[column].astype(float).nlargest(k).index) if k > 0 else table
