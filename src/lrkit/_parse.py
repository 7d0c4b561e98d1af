"""The compact text form of schedules: ``warmup(500) >> cosine(total_steps=10000)``.

Grammar (whitespace is free)::

    spec   := call (">>" call)*
    call   := NAME "(" [arg ("," arg)* [","]] ")"
    arg    := [NAME "="] value
    value  := spec | NUMBER | STRING | WORD | "[" [value ("," value)*] "]"

``NAME`` is a registered schedule (see :func:`lrkit.registry`; ``wsd`` is short
for ``warmup_stable_decay``). Arguments are the class's parameters, by name or,
for the first few (``Schedule.positional``), by position: ``warmup(500)``,
``cosine(10000)``, ``join(a, b, boundaries=[100])``. Numbers written without a
decimal point (``500``, ``1e4``) are ints; ``true``/``false``/``none`` are
``True``/``False``/``None``; other bare words and quoted text are strings
(``mode=triangular2``). ``a >> b`` runs ``a`` until its ``end_step`` and then
``b``; ``warmup(n) >> b`` ramps into ``b``.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any

from . import _check
from .schedules import Schedule, _required_names, registry

__all__ = ["ScheduleSyntaxError", "parse_plateau", "parse_schedule"]

ALIASES = {"wsd": "warmup_stable_decay"}

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>'[^']*'|"[^"]*")
  | (?P<op>>>|[()\[\],=])
    """,
    re.VERBOSE,
)


class ScheduleSyntaxError(ValueError):
    """A schedule's text form could not be parsed or built.

    ``str(error)`` shows the reason, the text and a caret under the offending
    token; :attr:`column` (1-based) and :attr:`reason` are attributes, and
    :meth:`one_line` is the form the CLI prints.
    """

    def __init__(self, reason: str, text: str, column: int, length: int = 1) -> None:
        self.reason = reason
        self.text = text
        self.column = column
        self.length = max(1, length)
        caret = " " * (column - 1) + "^" * self.length
        super().__init__(f"{reason} (column {column})\n  {text}\n  {caret}")

    def one_line(self) -> str:
        """``reason (column N: 'token')`` on one line."""
        token = self.text[self.column - 1 : self.column - 1 + self.length]
        where = f"column {self.column}"
        if token.strip():
            where += f": {token!r}"
        return f"{self.reason} ({where} of {self.text!r})"


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    pos: int  # 0-based


@dataclass(frozen=True)
class _Arg:
    name: str | None
    value: Any
    pos: int
    length: int


class _Parser:
    def __init__(self, text: str, names: dict[str, type]) -> None:
        self.text = text
        self.names = names
        self.toks = self._lex(text)
        self.i = 0

    # -- errors and tokens
    def error(self, reason: str, pos: int, length: int = 1) -> ScheduleSyntaxError:
        return ScheduleSyntaxError(reason, self.text, pos + 1, length)

    def _lex(self, text: str) -> list[_Tok]:
        toks: list[_Tok] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                raise self.error(f"unexpected character {text[pos]!r}", pos)
            kind = m.lastgroup
            assert kind is not None
            if kind != "ws":
                toks.append(_Tok(kind, m.group(), pos))
            pos = m.end()
        toks.append(_Tok("end", "", len(text)))
        return toks

    def peek(self, offset: int = 0) -> _Tok:
        return self.toks[min(self.i + offset, len(self.toks) - 1)]

    def next(self) -> _Tok:
        tok = self.peek()
        self.i += 1
        return tok

    def expect(self, text: str, what: str) -> _Tok:
        tok = self.peek()
        if tok.text != text:
            found = "the end of the text" if tok.kind == "end" else repr(tok.text)
            raise self.error(f"expected {what}, found {found}", tok.pos, len(tok.text))
        return self.next()

    def valid_names(self) -> str:
        aliases = [a for a, name in ALIASES.items() if name in self.names]
        return ", ".join(sorted([*self.names, *aliases]))

    # -- grammar
    def parse(self) -> Any:
        if self.peek().kind == "end":
            raise self.error(
                f"empty schedule; start with a name: {self.valid_names()}", 0
            )
        value = self.chain()
        tok = self.peek()
        if tok.kind != "end":
            hint = " (join schedules with '>>')" if tok.kind == "name" else ""
            raise self.error(
                f"unexpected {tok.text!r} after a complete schedule{hint}",
                tok.pos,
                len(tok.text),
            )
        return value

    def chain(self) -> Any:
        first = self.call()
        parts = [first]
        ops: list[_Tok] = []
        while self.peek().text == ">>":
            ops.append(self.next())
            parts.append(self.call())
        if len(parts) == 1:
            return first[0]
        from .compose import Warmup, chain

        for (part, pos, length), op in zip(parts[:-1], ops, strict=True):
            if not isinstance(part, Schedule):
                raise self.error("only schedules can be joined with '>>'", pos, length)
            if isinstance(part, Warmup) and part.then is None:
                continue
            try:
                end = part.end_step
            except ArithmeticError as e:
                raise self.error(
                    f"{part.name}(...): {type(e).__name__} computing its end_step "
                    f"({e})",
                    pos,
                    length,
                ) from e
            if end is None or end < 1:
                raise self.error(
                    f"{part.name}(...) never ends, so nothing can follow it with "
                    "'>>'; use join(a, b, boundaries=[...])",
                    op.pos,
                    2,
                )
        return chain(*(p for p, _, _ in parts))

    def call(self) -> tuple[Any, int, int]:
        tok = self.peek()
        if tok.kind != "name":
            found = "the end of the text" if tok.kind == "end" else repr(tok.text)
            raise self.error(
                f"expected a schedule name, found {found}; valid names: "
                f"{self.valid_names()}",
                tok.pos,
                len(tok.text),
            )
        self.next()
        key = ALIASES.get(tok.text, tok.text)
        cls = self.names.get(key)
        if cls is None:
            raise self.error(
                f"unknown schedule {tok.text!r}; valid names: {self.valid_names()}",
                tok.pos,
                len(tok.text),
            )
        if self.peek().text != "(":
            raise self.error(
                f"expected '(' after {tok.text!r} (write {tok.text}(...))",
                self.peek().pos,
                max(1, len(self.peek().text)),
            )
        self.next()
        args: list[_Arg] = []
        while self.peek().text != ")":
            args.append(self.arg())
            if self.peek().text == ",":
                self.next()
            elif self.peek().text != ")":
                t = self.peek()
                found = "the end of the text" if t.kind == "end" else repr(t.text)
                raise self.error(
                    f"expected ',' or ')' in {tok.text}(...), found {found}",
                    t.pos,
                    len(t.text),
                )
        close = self.next()
        value = self.build(cls, tok, args)
        return value, tok.pos, close.pos + 1 - tok.pos

    def arg(self) -> _Arg:
        tok = self.peek()
        if tok.kind == "name" and self.peek(1).text == "=":
            self.next()
            self.next()
            value = self.value()
            return _Arg(tok.text, value, tok.pos, self.span_from(tok.pos))
        start = tok.pos
        value = self.value()
        return _Arg(None, value, start, self.span_from(start) or 1)

    def span_from(self, start: int) -> int:
        prev = self.toks[self.i - 1]
        return prev.pos + len(prev.text) - start

    def value(self) -> Any:
        tok = self.peek()
        if tok.kind == "number":
            self.next()
            return _number(tok.text)
        if tok.kind == "string":
            self.next()
            return tok.text[1:-1]
        if tok.kind == "name":
            if self.peek(1).text == "(":
                return self.chain()
            self.next()
            words = {"true": True, "false": False, "none": None}
            return words.get(tok.text.lower(), tok.text)
        if tok.text == "[":
            self.next()
            items: list[Any] = []
            while self.peek().text != "]":
                items.append(self.value())
                if self.peek().text == ",":
                    self.next()
                elif self.peek().text != "]":
                    t = self.peek()
                    found = "the end of the text" if t.kind == "end" else repr(t.text)
                    raise self.error(
                        f"expected ',' or ']' in a list, found {found}",
                        t.pos,
                        len(t.text),
                    )
            self.next()
            return items
        found = "the end of the text" if tok.kind == "end" else repr(tok.text)
        raise self.error(f"expected a value, found {found}", tok.pos, len(tok.text))

    def build(self, cls: type, name_tok: _Tok, args: list[_Arg]) -> Any:
        label = name_tok.text
        params = list(inspect.signature(cls).parameters)
        positional: tuple[str, ...] = getattr(cls, "positional", ())
        kwargs: dict[str, Any] = {}
        where: dict[str, _Arg] = {}
        star = bool(positional) and positional[0].startswith("*")
        varargs: list[Any] = []
        seen_keyword = False
        for k, a in enumerate(args):
            if a.name is None:
                if seen_keyword:
                    raise self.error(
                        f"positional argument after a keyword argument in {label}(...)",
                        a.pos,
                        a.length,
                    )
                if star:
                    varargs.append(a.value)
                    continue
                if k >= len(positional):
                    shown = ", ".join(positional) or "none"
                    raise self.error(
                        f"{label}() takes {len(positional)} positional argument"
                        f"{'' if len(positional) == 1 else 's'} ({shown}); "
                        "give the others by name",
                        a.pos,
                        a.length,
                    )
                key = positional[k]
            else:
                seen_keyword = True
                key = a.name
                if key not in params:
                    raise self.error(
                        f"{label}() has no parameter {key!r}; "
                        f"valid: {', '.join(params)}",
                        a.pos,
                        len(key),
                    )
            if key in kwargs:
                raise self.error(f"{label}() got {key!r} twice", a.pos, a.length)
            kwargs[key] = tuple(a.value) if isinstance(a.value, list) else a.value
            where[key] = a
        if star:
            kwargs[positional[0][1:]] = tuple(varargs)
        for key in _required_names(cls):
            if key not in kwargs:
                how = f"Write {label}({key}=...)"
                if key in positional:
                    at = positional.index(key) + 1
                    how += f" or give it as positional argument {at}"
                raise self.error(
                    _check.message(key, "given", None, how + "."),
                    name_tok.pos,
                    len(label),
                )
        try:
            return cls(**kwargs)
        except ArithmeticError as e:  # overflow in a (custom) schedule's arithmetic
            raise self.error(
                f"{label}(...): {type(e).__name__} while building it ({e}); "
                "check the size of its arguments",
                name_tok.pos,
                len(label),
            ) from e
        except (TypeError, ValueError) as e:
            message = str(e)
            arg = next(
                (a for k, a in where.items() if message.startswith(k + " ")), None
            )
            if arg is not None:
                raise self.error(message, arg.pos, arg.length) from e
            raise self.error(
                f"{label}(...): {message}", name_tok.pos, len(label)
            ) from e


def _number(text: str) -> int | float:
    """Ints for integral literals without a decimal point (``500``, ``1e4``)."""
    if "." not in text:
        value = float(text)
        if value.is_integer() and abs(value) < 2**53:
            return int(value)
        return value
    return float(text)


def parse_schedule(text: str) -> Schedule:
    """Build a schedule from its compact text form.

    Grammar: ``spec := call (">>" call)*``, ``call := name(arg, ..., key=value)``;
    values are numbers, strings, lists ``[...]`` or nested schedules. See the
    module docstring of ``lrkit._parse`` and ``docs/schedules.md``.

    Raises:
        ScheduleSyntaxError: (a ``ValueError``) with the column of the
            offending token, a caret under it and, for unknown names, the
            valid ones.

    Example:
        >>> from lrkit import parse_schedule
        >>> s = parse_schedule("warmup(500) >> cosine(total_steps=10000, end_lr=1e-5)")
        >>> s.end_step, s(500), s(10500)
        (10500, 1.0, 1e-05)
        >>> parse_schedule("warmup(100) >> cosin(total_steps=1000)")
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lrkit._parse.ScheduleSyntaxError: unknown schedule 'cosin'; valid names: ...
    """
    if not isinstance(text, str):
        _check.fail("text", "a str", text, exc=TypeError)
    names: dict[str, type] = dict(registry())
    value = _Parser(text, names).parse()
    if not isinstance(value, Schedule):  # pragma: no cover - grammar makes calls
        raise ScheduleSyntaxError("not a schedule", text, 1, len(text))
    return value


def parse_plateau(text: str) -> Any:
    """Parse ``plateau(patience=5, factor=0.5, ...)`` into a ReduceOnPlateau.

    Used by ``lrkit schedule --plateau``; same grammar and errors as
    :func:`parse_schedule`.

    Example:
        >>> parse_plateau("plateau(patience=3, factor=0.5)").patience
        3
    """
    from .plateau import ReduceOnPlateau

    if not isinstance(text, str):
        _check.fail("text", "a str", text, exc=TypeError)
    parser = _Parser(text, {"plateau": ReduceOnPlateau})
    value, _, _ = parser.call()
    tok = parser.peek()
    if tok.kind != "end":
        raise parser.error(f"unexpected {tok.text!r}", tok.pos, len(tok.text))
    return value
