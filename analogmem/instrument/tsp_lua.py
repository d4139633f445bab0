"""A small interpreter for the TSP (Lua 5.0) subset that instrument scripts use.

Not a Lua VM: it parses a chunk into closures and runs them, enough for what the
``keithley2600`` driver sends (``print(expr)``, attribute assignment, function calls,
``next``/``getmetatable``/``type`` to list a table) and for analogmem's own on-instrument
write-verify function (``local``, ``function``, ``if``/``elseif``/``else``, numeric
``for``, ``while``, ``repeat``, ``return``, ``break``, tables, arithmetic, comparisons,
``and``/``or``/``not``, ``..``, ``#``, ``pcall``, ``math``, ``string``, ``table``).
Missing: coroutines, metatables set from Lua, generic ``for`` over custom iterators
other than ``pairs``/``ipairs``, goto, varargs, integer division.

Bounded by design: a chunk runs at most ``max_steps`` statements and loop iterations and
``max_depth`` nested calls, so hostile input (``while true do end``, deep recursion)
ends in :class:`LuaRuntimeError`, never a hang.

Errors: :class:`LuaSyntaxError` (nothing of the chunk ran) and :class:`LuaRuntimeError`
(what ran before it stays done, as on an instrument), each with the line.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any, Callable, Iterator

from ..errors import AnalogMemError

__all__ = ["LuaError", "LuaSyntaxError", "LuaRuntimeError", "LuaTable", "LuaFunction", "PyFunction",
           "Interpreter", "lua_tostring", "lua_type", "install_stdlib", "tonumber", "truthy"]


class LuaError(AnalogMemError):
    """A TSP/Lua error (the emulated instrument's script failed); ``line`` is the 1-based
    line of the chunk."""

    def __init__(self, message: str, line: int = 0):
        super().__init__(message)
        self.message, self.line = message, line


class LuaSyntaxError(LuaError):
    pass


class LuaRuntimeError(LuaError):
    pass


# --------------------------------------------------------------------------- values
class LuaTable:
    """A Lua table: ``hash`` maps keys (float for numbers) to values; ``metatable``."""

    __slots__ = ("hash", "metatable")

    def __init__(self, items: dict | None = None):
        self.hash: dict[Any, Any] = {} if items is None else dict(items)
        self.metatable: LuaTable | None = None

    def get(self, key: Any) -> Any:
        return self.hash.get(_key(key))

    def set(self, key: Any, value: Any) -> None:
        if key is None:
            raise LuaRuntimeError("table index is nil")
        k = _key(key)
        if value is None:
            self.hash.pop(k, None)
        else:
            self.hash[k] = value

    def keys(self) -> list[Any]:
        return list(self.hash)

    def length(self) -> int:
        n = 0
        while (float(n + 1)) in self.hash:
            n += 1
        return n


def _key(k: Any) -> Any:
    if isinstance(k, bool):
        return k
    if isinstance(k, int):
        return float(k)
    return k


class LuaFunction:
    __slots__ = ("name", "params", "body", "scope", "interp")

    def __init__(self, name: str, params: list[str], body: Callable, scope: "Scope", interp: "Interpreter"):
        self.name, self.params, self.body, self.scope, self.interp = name, params, body, scope, interp


class PyFunction:
    """A host function: ``fn(*args) -> value | tuple of values``."""

    __slots__ = ("name", "fn")

    def __init__(self, name: str, fn: Callable[..., Any]):
        self.name, self.fn = name, fn


def lua_type(v: Any) -> str:
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, LuaTable):
        return "table"
    if isinstance(v, (LuaFunction, PyFunction)):
        return "function"
    return "userdata"


def fmt_number(x: float) -> str:
    """Lua 5.0's ``%.14g``."""
    if x != x:
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.14g}"


def lua_tostring(v: Any) -> str:
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return fmt_number(float(v))
    if isinstance(v, str):
        return v
    return f"{lua_type(v)}: 0x{id(v) & 0xFFFFFFFF:08x}"


_NUM_RE = re.compile(r"\s*[+-]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*")


def tonumber(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str) and _NUM_RE.fullmatch(v):
        t = v.strip()
        sign = -1.0 if t.startswith("-") else 1.0
        body = t.lstrip("+-")
        return sign * (float(int(body, 16)) if body[:2].lower() == "0x" else float(body))
    return None


def truthy(v: Any) -> bool:
    return v is not None and v is not False


# --------------------------------------------------------------------------- lexer
_KEYWORDS = {"and", "break", "do", "else", "elseif", "end", "false", "for", "function", "if", "in", "local",
             "nil", "not", "or", "repeat", "return", "then", "true", "until", "while"}
_OPS = ["...", "..", "==", "~=", "<=", ">=", "+", "-", "*", "/", "%", "^", "#", "<", ">", "=", "(", ")", "{",
        "}", "[", "]", ";", ":", ",", "."]
_ESC = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v", "\\": "\\", '"': '"',
        "'": "'", "\n": "\n"}


def tokenize(src: str) -> list[tuple[str, Any, int]]:
    """(kind, value, line) tokens; kinds: name, keyword, number, string, op, eof."""
    out: list[tuple[str, Any, int]] = []
    i, n, line = 0, len(src), 1
    while i < n:
        c = src[i]
        if c == "\n":
            line += 1
            i += 1
        elif c in " \t\r\f\v":
            i += 1
        elif src.startswith("--", i):
            if src.startswith("--[[", i):
                j = src.find("]]", i + 4)
                if j < 0:
                    raise LuaSyntaxError("unfinished long comment", line)
                line += src.count("\n", i, j)
                i = j + 2
            else:
                j = src.find("\n", i)
                i = n if j < 0 else j
        elif c.isalpha() or c == "_":
            j = i + 1
            while j < n and (src[j].isalnum() or src[j] == "_"):
                j += 1
            w = src[i:j]
            out.append(("keyword" if w in _KEYWORDS else "name", w, line))
            i = j
        elif c.isdigit() or (c == "." and i + 1 < n and src[i + 1].isdigit()):
            m = re.compile(r"0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?").match(src, i)
            j = m.end()
            if j < n and (src[j].isalnum() or src[j] == "_" or src[j] == "."):
                raise LuaSyntaxError(f"malformed number near '{src[i:j + 1]}'", line)
            out.append(("number", tonumber(m.group()), line))
            i = j
        elif c in "'\"":
            j, buf = i + 1, []
            while True:
                if j >= n or src[j] == "\n":
                    raise LuaSyntaxError(f"unfinished string near '{src[i:min(j, i + 20)]}'", line)
                ch = src[j]
                if ch == c:
                    break
                if ch == "\\":
                    if j + 1 >= n:
                        raise LuaSyntaxError("unfinished string", line)
                    e = src[j + 1]
                    if e.isdigit():
                        m = re.compile(r"\d{1,3}").match(src, j + 1)
                        code = int(m.group())
                        if code > 255:
                            raise LuaSyntaxError("escape sequence too large", line)
                        buf.append(chr(code))
                        j = m.end()
                        continue
                    if e not in _ESC:
                        raise LuaSyntaxError(f"invalid escape sequence '\\{e}'", line)
                    buf.append(_ESC[e])
                    j += 2
                    continue
                buf.append(ch)
                j += 1
            out.append(("string", "".join(buf), line))
            i = j + 1
        elif src.startswith("[[", i):
            j = src.find("]]", i + 2)
            if j < 0:
                raise LuaSyntaxError("unfinished long string", line)
            s = src[i + 2:j]
            if s.startswith("\n"):
                s = s[1:]
            out.append(("string", s, line))
            line += src.count("\n", i, j)
            i = j + 2
        else:
            for op in _OPS:
                if src.startswith(op, i):
                    out.append(("op", op, line))
                    i += len(op)
                    break
            else:
                raise LuaSyntaxError(f"unexpected symbol near '{c}'", line)
    out.append(("eof", None, line))
    return out


# --------------------------------------------------------------------------- runtime
class Scope:
    __slots__ = ("vars", "parent")

    def __init__(self, parent: "Scope | None"):
        self.vars: dict[str, Any] = {}
        self.parent = parent

    def find(self, name: str) -> "Scope | None":
        s: Scope | None = self
        while s is not None:
            if name in s.vars:
                return s
            s = s.parent
        return None


class _Break(Exception):
    pass


class _Return(Exception):
    def __init__(self, values: list[Any]):
        self.values = values


_PREC = {"or": (1, 1), "and": (2, 2), "<": (3, 3), ">": (3, 3), "<=": (3, 3), ">=": (3, 3), "~=": (3, 3),
         "==": (3, 3), "..": (5, 4), "+": (6, 6), "-": (6, 6), "*": (7, 7), "/": (7, 7), "%": (7, 7),
         "^": (10, 9)}
_UNARY_PREC = 8


class Interpreter:
    """Runs chunks against one global table (``globals``).

    Args:
        max_steps: statements + loop iterations one :meth:`run` may execute.
        max_depth: nested Lua calls at most.
        max_seconds: wall time one :meth:`run` may take (s).
    """

    def __init__(self, max_steps: int = 20_000_000, max_depth: int = 120, max_seconds: float = 30.0):
        self.globals = LuaTable()
        self.max_steps, self.max_depth = int(max_steps), int(max_depth)
        self.max_seconds = float(max_seconds)
        self._t0 = 0.0
        self.steps = 0
        self.depth = 0
        self.line = 0

    # ------------------------------------------------------------------ api
    def compile(self, src: str) -> Callable[[], list[Any]]:
        """Parse ``src`` (:class:`LuaSyntaxError`); return a function that runs it."""
        p = _Parser(tokenize(src), self)
        try:
            body = p.block()
        except RecursionError:
            raise LuaSyntaxError("chunk has too many syntax levels", p.peek()[2]) from None
        if p.peek()[0] != "eof":
            raise LuaSyntaxError(f"'<eof>' expected near '{p.peek()[1]}'", p.peek()[2])

        def run() -> list[Any]:
            self.steps = 0
            self.depth = 0
            self._t0 = time.monotonic()
            try:
                body(Scope(None))
            except _Return as r:
                return r.values
            except _Break:
                raise LuaRuntimeError("no loop to break", self.line) from None
            except RecursionError:
                raise LuaRuntimeError("stack overflow", self.line) from None
            return []

        return run

    def run(self, src: str) -> list[Any]:
        return self.compile(src)()

    def step(self, line: int) -> None:
        self.line = line
        self.steps += 1
        if self.steps > self.max_steps:
            raise LuaRuntimeError(f"instruction limit of {self.max_steps} steps exceeded", line)
        if not self.steps & 0xFFF and time.monotonic() - self._t0 > self.max_seconds:
            raise LuaRuntimeError(f"time limit of {self.max_seconds:g} s per command exceeded", line)

    # ------------------------------------------------------------------ semantics
    def index(self, obj: Any, key: Any) -> Any:
        if isinstance(obj, LuaTable):
            v = obj.get(key)
            if v is None and obj.metatable is not None:
                h = obj.metatable.get("__index")
                if isinstance(h, LuaTable):
                    return self.index(h, key)
                if h is not None:
                    r = self.call(h, [obj, key])
                    return r[0] if r else None
            return v
        if isinstance(obj, str):
            lib = self.globals.get("string")
            return lib.get(key) if isinstance(lib, LuaTable) else None
        raise LuaRuntimeError(f"attempt to index a {lua_type(obj)} value", self.line)

    def setindex(self, obj: Any, key: Any, value: Any) -> None:
        if isinstance(obj, LuaTable):
            if isinstance(key, float) and key != key:
                raise LuaRuntimeError("table index is NaN", self.line)
            obj.set(key, value)
            return
        raise LuaRuntimeError(f"attempt to index a {lua_type(obj)} value", self.line)

    def call(self, fn: Any, args: list[Any]) -> list[Any]:
        if isinstance(fn, PyFunction):
            try:
                r = fn.fn(*args)
            except LuaError:
                raise
            except (TypeError, ValueError, ArithmeticError, IndexError, KeyError) as exc:
                raise LuaRuntimeError(f"bad argument to '{fn.name}' ({exc})", self.line) from None
            if r is None:
                return []
            return list(r) if isinstance(r, tuple) else [r]
        if isinstance(fn, LuaFunction):
            self.depth += 1
            if self.depth > self.max_depth:
                self.depth = 0
                raise LuaRuntimeError("stack overflow (too many nested calls)", self.line)
            scope = Scope(fn.scope)
            for i, p in enumerate(fn.params):
                scope.vars[p] = args[i] if i < len(args) else None
            try:
                fn.body(scope)
            except _Return as r:
                return r.values
            finally:
                self.depth -= 1
            return []
        if isinstance(fn, LuaTable) and fn.metatable is not None and fn.metatable.get("__call") is not None:
            return self.call(fn.metatable.get("__call"), [fn, *args])
        raise LuaRuntimeError(f"attempt to call a {lua_type(fn)} value", self.line)

    def arith(self, op: str, a: Any, b: Any) -> float:
        x, y = tonumber(a), tonumber(b)
        if x is None or y is None:
            bad = a if x is None else b
            raise LuaRuntimeError(f"attempt to perform arithmetic on a {lua_type(bad)} value", self.line)
        try:
            if op == "+":
                return x + y
            if op == "-":
                return x - y
            if op == "*":
                return x * y
            if op == "/":
                return x / y if y != 0 else (math.nan if x == 0 or x != x else math.copysign(math.inf, x) *
                                             (math.copysign(1.0, y)))
            if op == "%":
                return x - math.floor(x / y) * y if y != 0 else math.nan
            return math.pow(x, y)
        except (OverflowError, ValueError):
            return math.nan

    def compare(self, op: str, a: Any, b: Any) -> bool:
        if op == "==":
            return _key(a) == _key(b) and lua_type(a) == lua_type(b) if not isinstance(a, LuaTable) else a is b
        if op == "~=":
            return not self.compare("==", a, b)
        num = isinstance(a, (int, float)) and not isinstance(a, bool) and isinstance(b, (int, float)) \
            and not isinstance(b, bool)
        if not (num or (isinstance(a, str) and isinstance(b, str))):
            raise LuaRuntimeError(f"attempt to compare {lua_type(a)} with {lua_type(b)}", self.line)
        if op == "<":
            return a < b
        if op == ">":
            return a > b
        if op == "<=":
            return a <= b
        return a >= b

    def concat(self, a: Any, b: Any) -> str:
        for v in (a, b):
            if not isinstance(v, (str, int, float)) or isinstance(v, bool):
                raise LuaRuntimeError(f"attempt to concatenate a {lua_type(v)} value", self.line)
        r = lua_tostring(a) + lua_tostring(b)
        if len(r) > 16_000_000:
            raise LuaRuntimeError("string length overflow", self.line)
        return r

    def length(self, v: Any) -> float:
        if isinstance(v, str):
            return float(len(v))
        if isinstance(v, LuaTable):
            return float(v.length())
        raise LuaRuntimeError(f"attempt to get length of a {lua_type(v)} value", self.line)


# --------------------------------------------------------------------------- parser
Expr = Callable[[Scope], Any]
Multi = Callable[[Scope], list]


class _Parser:
    def __init__(self, toks: list[tuple[str, Any, int]], interp: Interpreter):
        self.toks, self.i, self.it = toks, 0, interp

    # tokens
    def peek(self, k: int = 0) -> tuple[str, Any, int]:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def next(self) -> tuple[str, Any, int]:
        t = self.toks[self.i]
        self.i = min(self.i + 1, len(self.toks) - 1)
        return t

    def check(self, kind: str, value: Any = None) -> bool:
        t = self.peek()
        return t[0] == kind and (value is None or t[1] == value)

    def accept(self, kind: str, value: Any = None) -> bool:
        if self.check(kind, value):
            self.next()
            return True
        return False

    def expect(self, kind: str, value: Any = None) -> tuple[str, Any, int]:
        if not self.check(kind, value):
            t = self.peek()
            near = "<eof>" if t[0] == "eof" else t[1]
            raise LuaSyntaxError(f"'{value or kind}' expected near '{near}'", t[2])
        return self.next()

    def name(self) -> str:
        return self.expect("name")[1]

    # blocks
    def block(self) -> Callable[[Scope], None]:
        stmts = []
        while True:
            t = self.peek()
            if t[0] == "eof" or (t[0] == "keyword" and t[1] in ("end", "else", "elseif", "until")):
                break
            if t[0] == "keyword" and t[1] == "return":
                stmts.append(self.ret())
                self.accept("op", ";")
                break
            s = self.statement()
            if s is not None:
                stmts.append(s)
            self.accept("op", ";")
        it = self.it

        def run(scope: Scope) -> None:
            for line, s in stmts:
                it.step(line)
                s(scope)

        return run

    def ret(self) -> tuple[int, Callable[[Scope], None]]:
        line = self.next()[2]
        if self.check("eof") or self.check("op", ";") or (self.check("keyword") and self.peek()[1] in
                                                           ("end", "else", "elseif", "until")):
            def r0(scope: Scope) -> None:
                raise _Return([])
            return line, r0
        values = self.exprlist()

        def r(scope: Scope) -> None:
            raise _Return(values(scope))
        return line, r

    #: Statement keywords and the method that parses the rest of each (after the keyword).
    _STATEMENTS = {"local": "_local", "function": "_function", "if": "_if", "while": "_while",
                   "repeat": "_repeat", "for": "_for", "do": "_do", "break": "_break"}

    def statement(self) -> tuple[int, Callable[[Scope], None]] | None:
        """One statement as ``(line, run)``; None for an empty one (``;``). A keyword
        statement goes to its method in :attr:`_STATEMENTS`, anything else is an
        assignment or a call."""
        t = self.peek()
        line = t[2]
        if t[0] == "op" and t[1] == ";":
            self.next()
            return None
        if t[0] == "keyword":
            kw = t[1]
            if kw not in self._STATEMENTS:
                raise LuaSyntaxError(f"unexpected symbol near '{kw}'", line)
            self.next()
            return line, getattr(self, self._STATEMENTS[kw])(line)
        return line, self._assign_or_call(line)

    def _local(self, line: int) -> Callable[[Scope], None]:
        """``local function f ... end`` or ``local a, b [= exprlist]``."""
        if self.accept("keyword", "function"):
            name = self.name()
            fbody = self.funcbody(name)

            def local_fn(scope: Scope) -> None:
                scope.vars[name] = None
                scope.vars[name] = fbody(scope)
            return local_fn
        names = [self.name()]
        while self.accept("op", ","):
            names.append(self.name())
        values = self.exprlist() if self.accept("op", "=") else (lambda scope: [])

        def local(scope: Scope) -> None:
            vals = values(scope)
            for k, nm in enumerate(names):
                scope.vars[nm] = vals[k] if k < len(vals) else None
        return local

    def _function(self, line: int) -> Callable[[Scope], None]:
        """``function a.b.c[:m](params) ... end``: assigns a global, local or table field."""
        it = self.it
        path = [self.name()]
        while self.accept("op", "."):
            path.append(self.name())
        method = self.accept("op", ":")
        if method:
            path.append(self.name())
        fbody = self.funcbody(".".join(path), method)
        head = path[0]

        def function(scope: Scope) -> None:
            f = fbody(scope)
            if len(path) == 1:
                s = scope.find(head)
                (s.vars if s else it.globals.hash)[head] = f
                return
            s = scope.find(head)
            obj = s.vars[head] if s else it.globals.get(head)
            for k in path[1:-1]:
                obj = it.index(obj, k)
            it.setindex(obj, path[-1], f)
        return function

    def _if(self, line: int) -> Callable[[Scope], None]:
        """``if c then ... {elseif c then ...} [else ...] end``."""
        arms = []
        cond = self.expr()
        self.expect("keyword", "then")
        arms.append((cond, self.block()))
        other = None
        while True:
            if self.accept("keyword", "elseif"):
                c = self.expr()
                self.expect("keyword", "then")
                arms.append((c, self.block()))
            elif self.accept("keyword", "else"):
                other = self.block()
                self.expect("keyword", "end")
                break
            else:
                self.expect("keyword", "end")
                break

        def if_(scope: Scope) -> None:
            for c, b in arms:
                if truthy(c(scope)):
                    b(Scope(scope))
                    return
            if other is not None:
                other(Scope(scope))
        return if_

    def _while(self, line: int) -> Callable[[Scope], None]:
        """``while c do ... end`` (each pass counts as a step)."""
        it = self.it
        cond = self.expr()
        self.expect("keyword", "do")
        body = self.block()
        self.expect("keyword", "end")

        def while_(scope: Scope) -> None:
            try:
                while truthy(cond(scope)):
                    it.step(line)
                    body(Scope(scope))
            except _Break:
                pass
        return while_

    def _repeat(self, line: int) -> Callable[[Scope], None]:
        """``repeat ... until c`` (``c`` sees the body's locals)."""
        it = self.it
        body = self.block()
        self.expect("keyword", "until")
        cond = self.expr()

        def repeat(scope: Scope) -> None:
            try:
                while True:
                    it.step(line)
                    s = Scope(scope)
                    body(s)
                    if truthy(cond(s)):
                        break
            except _Break:
                pass
        return repeat

    def _for(self, line: int) -> Callable[[Scope], None]:
        """``for v = a, b[, c] do ... end`` or ``for k, v in explist do ... end``."""
        n1 = self.name()
        if self.accept("op", "="):
            return self._fornum(line, n1)
        names = [n1]
        while self.accept("op", ","):
            names.append(self.name())
        self.expect("keyword", "in")
        return self._forin(line, names)

    def _fornum(self, line: int, n1: str) -> Callable[[Scope], None]:
        """The numeric ``for`` after ``for n1 =``."""
        it = self.it
        a = self.expr()
        self.expect("op", ",")
        b = self.expr()
        c = self.expr() if self.accept("op", ",") else (lambda scope: 1.0)
        self.expect("keyword", "do")
        body = self.block()
        self.expect("keyword", "end")

        def fornum(scope: Scope) -> None:
            start, stop, step = (tonumber(f(scope)) for f in (a, b, c))
            if start is None or stop is None or step is None:
                raise LuaRuntimeError("'for' initial value, limit and step must be numbers", line)
            if step == 0:
                raise LuaRuntimeError("'for' step is zero", line)
            v = start
            try:
                while (v <= stop) if step > 0 else (v >= stop):
                    it.step(line)
                    s = Scope(scope)
                    s.vars[n1] = v
                    body(s)
                    v += step
            except _Break:
                pass
        return fornum

    def _forin(self, line: int, names: list[str]) -> Callable[[Scope], None]:
        """The generic ``for`` after ``for names in``: calls the iterator until it gives nil."""
        it = self.it
        src = self.exprlist()
        self.expect("keyword", "do")
        body = self.block()
        self.expect("keyword", "end")

        def forin(scope: Scope) -> None:
            vals = src(scope) + [None, None, None]
            f, st, ctl = vals[0], vals[1], vals[2]
            try:
                while True:
                    it.step(line)
                    r = it.call(f, [st, ctl]) + [None] * len(names)
                    if r[0] is None:
                        break
                    ctl = r[0]
                    s = Scope(scope)
                    for k, nm in enumerate(names):
                        s.vars[nm] = r[k]
                    body(s)
            except _Break:
                pass
        return forin

    def _do(self, line: int) -> Callable[[Scope], None]:
        """``do ... end``: a block in its own scope."""
        body = self.block()
        self.expect("keyword", "end")
        return lambda scope: body(Scope(scope))

    def _break(self, line: int) -> Callable[[Scope], None]:
        """``break``: leaves the innermost loop."""
        def brk(scope: Scope) -> None:
            raise _Break()
        return brk

    def _assign_or_call(self, line: int) -> Callable[[Scope], None]:
        """``targets = exprlist`` (every value evaluated before any is assigned) or a call."""
        it = self.it
        first = self.suffixed()
        if self.check("op", "=") or self.check("op", ","):
            targets = [first]
            while self.accept("op", ","):
                targets.append(self.suffixed())
            self.expect("op", "=")
            values = self.exprlist()
            setters = []
            for tg in targets:
                if tg[0] not in ("name", "index"):
                    raise LuaSyntaxError("syntax error: cannot assign to this expression", line)
                setters.append(tg)

            def assign(scope: Scope) -> None:
                vals = values(scope)
                resolved = []
                for tg in setters:
                    if tg[0] == "index":
                        resolved.append((tg[1](scope), tg[2](scope)))
                    else:
                        resolved.append((None, tg[1]))
                for k, (obj, key) in enumerate(resolved):
                    v = vals[k] if k < len(vals) else None
                    if obj is None and isinstance(key, str) and setters[k][0] == "name":
                        s = scope.find(key)
                        if s is not None:
                            s.vars[key] = v
                        else:
                            it.setindex(it.globals, key, v)
                    else:
                        it.setindex(obj, key, v)
            return assign
        if first[0] != "call":
            raise LuaSyntaxError("syntax error: a statement must be an assignment or a call", line)
        call = first[1]
        return lambda scope: call(scope)

    def funcbody(self, name: str, method: bool = False) -> Callable[[Scope], LuaFunction]:
        self.expect("op", "(")
        params = ["self"] if method else []
        if not self.check("op", ")"):
            while True:
                if self.accept("op", "..."):
                    raise LuaSyntaxError("varargs are not supported by this TSP emulator", self.peek()[2])
                params.append(self.name())
                if not self.accept("op", ","):
                    break
        self.expect("op", ")")
        body = self.block()
        self.expect("keyword", "end")
        it = self.it
        return lambda scope: LuaFunction(name, params, body, scope, it)

    # expressions
    def exprlist(self) -> Multi:
        exprs = [self.expr_any()]
        while self.accept("op", ","):
            exprs.append(self.expr_any())
        return _multi(exprs)

    def expr(self) -> Expr:
        kind, f = self.expr_any()
        return f if kind != "multi" else (lambda scope: (f(scope) or [None])[0])

    def expr_any(self) -> tuple[str, Any]:
        """('single', expr) or ('multi', fn returning a list) for calls."""
        return self.subexpr(0)

    def subexpr(self, limit: int) -> tuple[str, Any]:
        t = self.peek()
        it = self.it
        if (t[0] == "keyword" and t[1] == "not") or (t[0] == "op" and t[1] in ("-", "#")):
            self.next()
            kind, operand = self.subexpr(_UNARY_PREC)
            o = _single(kind, operand)
            op = t[1]
            if op == "not":
                left: tuple[str, Any] = ("single", lambda scope: not truthy(o(scope)))
            elif op == "-":
                left = ("single", lambda scope: -_num(it, o(scope)))
            else:
                left = ("single", lambda scope: it.length(o(scope)))
        else:
            left = self.simple()
        while True:
            t = self.peek()
            op = t[1] if t[0] in ("op", "keyword") else None
            if op not in _PREC or _PREC[op][0] <= limit:
                break
            self.next()
            lp, rp = _PREC[op]
            right = self.subexpr(rp)
            left = ("single", _binop(it, op, _single(*left), _single(*right)))
        return left

    def simple(self) -> tuple[str, Any]:
        t = self.peek()
        if t[0] == "number":
            self.next()
            v = t[1]
            return "single", (lambda scope: v)
        if t[0] == "string":
            self.next()
            s = t[1]
            return "single", (lambda scope: s)
        if t[0] == "keyword":
            if t[1] in ("nil", "true", "false"):
                self.next()
                v = {"nil": None, "true": True, "false": False}[t[1]]
                return "single", (lambda scope: v)
            if t[1] == "function":
                self.next()
                return "single", self.funcbody("anonymous")
        if t[0] == "op" and t[1] == "{":
            return "single", self.table()
        if t[0] == "op" and t[1] == "...":
            raise LuaSyntaxError("varargs are not supported by this TSP emulator", t[2])
        s = self.suffixed()
        if s[0] == "call":
            return "multi", s[1]
        if s[0] == "name":
            nm = s[1]
            it = self.it

            def var(scope: Scope) -> Any:
                f = scope.find(nm)
                return f.vars[nm] if f is not None else it.globals.get(nm)
            return "single", var
        if s[0] == "index":
            o, k = s[1], s[2]
            it = self.it
            return "single", (lambda scope: it.index(o(scope), k(scope)))
        return "single", s[1]

    def primary(self) -> tuple:
        t = self.peek()
        if t[0] == "name":
            self.next()
            return ("name", t[1])
        if self.accept("op", "("):
            e = self.expr()
            self.expect("op", ")")
            return ("paren", e)
        near = "<eof>" if t[0] == "eof" else t[1]
        raise LuaSyntaxError(f"unexpected symbol near '{near}'", t[2])

    def suffixed(self) -> tuple:
        cur = self.primary()
        it = self.it
        while True:
            t = self.peek()
            if t[0] == "op" and t[1] == ".":
                self.next()
                cur = ("index", _value(it, cur), _const(self.name()))
            elif t[0] == "op" and t[1] == "[":
                self.next()
                k = self.expr()
                self.expect("op", "]")
                cur = ("index", _value(it, cur), k)
            elif t[0] == "op" and t[1] == ":":
                self.next()
                mname = self.name()
                args = self.args()
                obj = _value(it, cur)

                def mcall(scope: Scope, obj=obj, mname=mname, args=args) -> list:
                    o = obj(scope)
                    return it.call(it.index(o, mname), [o, *args(scope)])
                cur = ("call", mcall)
            elif (t[0] == "op" and t[1] in ("(", "{")) or t[0] == "string":
                args = self.args()
                fn = _value(it, cur)
                line = t[2]

                def call(scope: Scope, fn=fn, args=args, line=line) -> list:
                    f = fn(scope)
                    a = args(scope)
                    it.line = line
                    return it.call(f, a)
                cur = ("call", call)
            else:
                return cur

    def args(self) -> Multi:
        t = self.peek()
        if t[0] == "string":
            self.next()
            s = t[1]
            return lambda scope: [s]
        if t[0] == "op" and t[1] == "{":
            tb = self.table()
            return lambda scope: [tb(scope)]
        self.expect("op", "(")
        if self.accept("op", ")"):
            return lambda scope: []
        m = self.exprlist()
        self.expect("op", ")")
        return m

    def table(self) -> Expr:
        self.expect("op", "{")
        items: list[tuple[str, Any, Any]] = []
        while not self.check("op", "}"):
            if self.check("op", "["):
                self.next()
                k = self.expr()
                self.expect("op", "]")
                self.expect("op", "=")
                items.append(("kv", k, self.expr()))
            elif self.check("name") and self.peek(1)[0] == "op" and self.peek(1)[1] == "=":
                k = _const(self.name())
                self.next()
                items.append(("kv", k, self.expr()))
            else:
                items.append(("pos", None, self.expr_any()))
            if not (self.accept("op", ",") or self.accept("op", ";")):
                break
        self.expect("op", "}")

        def build(scope: Scope) -> LuaTable:
            t = LuaTable()
            n = 0
            h = t.hash
            for idx, (kind, k, v) in enumerate(items):
                if kind == "kv":
                    t.set(k(scope), v(scope))
                elif v[0] == "multi" and idx == len(items) - 1:
                    for x in v[1](scope):
                        n += 1
                        if x is not None:
                            h[float(n)] = x
                else:
                    n += 1
                    x = _single(*v)(scope)
                    if x is not None:
                        h[float(n)] = x
            return t
        return build


def _const(v: Any) -> Expr:
    return lambda scope: v


def _single(kind: str, f: Any) -> Expr:
    if kind == "multi":
        return lambda scope: (f(scope) or [None])[0]
    return f


def _value(it: Interpreter, node: tuple) -> Expr:
    kind = node[0]
    if kind == "name":
        nm = node[1]

        def var(scope: Scope) -> Any:
            f = scope.find(nm)
            return f.vars[nm] if f is not None else it.globals.get(nm)
        return var
    if kind == "index":
        o, k = node[1], node[2]
        return lambda scope: it.index(o(scope), k(scope))
    if kind == "call":
        f = node[1]
        return lambda scope: (f(scope) or [None])[0]
    return node[1]


def _multi(exprs: list[tuple[str, Any]]) -> Multi:
    if len(exprs) == 1:
        kind, f = exprs[0]
        if kind == "multi":
            return f
        return lambda scope: [f(scope)]
    head = [_single(*e) for e in exprs[:-1]]
    last_kind, last = exprs[-1]

    def many(scope: Scope) -> list:
        out = [h(scope) for h in head]
        if last_kind == "multi":
            out.extend(last(scope))
        else:
            out.append(last(scope))
        return out
    return many


def _num(it: Interpreter, v: Any) -> float:
    x = tonumber(v)
    if x is None:
        raise LuaRuntimeError(f"attempt to perform arithmetic on a {lua_type(v)} value", it.line)
    return x


def _binop(it: Interpreter, op: str, a: Expr, b: Expr) -> Expr:
    if op == "and":
        return lambda scope: (b(scope) if truthy(x := a(scope)) else x)
    if op == "or":
        return lambda scope: (x if truthy(x := a(scope)) else b(scope))
    if op in ("+", "-", "*", "/", "%", "^"):
        def arith(scope: Scope) -> float:
            x, y = a(scope), b(scope)
            if type(x) is float and type(y) is float and op != "/" and op != "%" and op != "^":
                return x + y if op == "+" else x - y if op == "-" else x * y
            return it.arith(op, x, y)
        return arith
    if op == "..":
        return lambda scope: it.concat(a(scope), b(scope))
    return lambda scope: it.compare(op, a(scope), b(scope))


def iterate(table: LuaTable) -> Iterator[tuple[Any, Any]]:
    for k in table.keys():
        v = table.get(k)
        if v is not None:
            yield k, v


# --------------------------------------------------------------------------- standard library
def _next(table: Any, key: Any = None) -> tuple[Any, Any] | None:
    if not isinstance(table, LuaTable):
        raise LuaRuntimeError(f"bad argument #1 to 'next' (table expected, got {lua_type(table)})")
    keys = table.keys()
    if key is None:
        pos = 0
    else:
        k = _key(key)
        try:
            pos = keys.index(k) + 1
        except ValueError:
            raise LuaRuntimeError("invalid key to 'next'") from None
    while pos < len(keys):
        v = table.get(keys[pos])
        if v is not None:
            return keys[pos], v
        pos += 1
    return None


def install_stdlib(it: Interpreter) -> None:
    """``type tostring tonumber next pairs ipairs pcall error unpack select`` and the
    ``math``, ``string``, ``table``, ``os`` functions scripts use."""
    g = it.globals

    def fn(name: str, f: Callable[..., Any], table: LuaTable | None = None) -> None:
        (table or g).set(name.rsplit(".", 1)[-1], PyFunction(name, f))

    fn("type", lambda v=None: lua_type(v))
    fn("tostring", lambda v=None: lua_tostring(v))
    fn("tonumber", lambda v=None, base=None: tonumber(v) if base is None else float(int(str(v), int(base))))
    fn("next", _next)
    fn("pairs", lambda t=None: (g.get("next"), t, None))

    def ipairs_step(t: Any, i: Any) -> Any:
        j = float(i) + 1
        v = it.index(t, j)
        return None if v is None else (j, v)
    step = PyFunction("ipairs_iter", ipairs_step)
    fn("ipairs", lambda t=None: (step, t, 0.0))

    def pcall(f: Any = None, *args: Any) -> tuple:
        depth = it.depth
        try:
            return (True, *it.call(f, list(args)))
        except LuaError as exc:
            it.depth = depth
            return False, exc.message
    fn("pcall", pcall)

    def error(msg: Any = None, level: Any = None) -> None:
        raise LuaRuntimeError(lua_tostring(msg), it.line)
    fn("error", error)

    def unpack(t: Any) -> tuple:
        if not isinstance(t, LuaTable):
            raise LuaRuntimeError("bad argument #1 to 'unpack' (table expected)")
        return tuple(t.get(float(i)) for i in range(1, t.length() + 1))
    fn("unpack", unpack)

    def select(n: Any, *args: Any) -> Any:
        if n == "#":
            return float(len(args))
        return tuple(args[int(n) - 1:])
    fn("select", select)

    m = LuaTable()
    g.set("math", m)
    for name, f in (("abs", abs), ("floor", math.floor), ("ceil", math.ceil), ("sqrt", math.sqrt),
                    ("exp", math.exp), ("log", math.log), ("log10", math.log10), ("sin", math.sin),
                    ("cos", math.cos)):
        fn(f"math.{name}", (lambda f: lambda x: float(f(_num(it, x))))(f), m)
    fn("math.min", lambda *a: float(min(_num(it, x) for x in a)), m)
    fn("math.max", lambda *a: float(max(_num(it, x) for x in a)), m)
    fn("math.pow", lambda x, y: it.arith("^", x, y), m)
    fn("math.mod", lambda x, y: math.fmod(_num(it, x), _num(it, y)), m)
    fn("math.fmod", lambda x, y: math.fmod(_num(it, x), _num(it, y)), m)
    m.set("huge", math.inf)
    m.set("pi", math.pi)

    s = LuaTable()
    g.set("string", s)
    fn("string.len", lambda x: float(len(lua_tostring(x))), s)

    def sub(x: Any, i: Any = 1, j: Any = -1) -> str:
        t = lua_tostring(x)
        i, j = int(i), int(j)
        i = len(t) + i + 1 if i < 0 else max(i, 1)
        j = len(t) + j + 1 if j < 0 else min(j, len(t))
        return t[i - 1:j]
    fn("string.sub", sub, s)
    fn("string.upper", lambda x: lua_tostring(x).upper(), s)
    fn("string.lower", lambda x: lua_tostring(x).lower(), s)
    fn("string.rep", lambda x, n: lua_tostring(x) * min(int(n), 1_000_000), s)

    def fmt(f: Any, *args: Any) -> str:
        spec = lua_tostring(f)
        vals = [tonumber(a) if isinstance(a, (int, float)) else lua_tostring(a) for a in args]
        try:
            return spec % tuple(vals)
        except (TypeError, ValueError) as exc:
            raise LuaRuntimeError(f"bad argument to 'format' ({exc})") from None
    fn("string.format", fmt, s)

    t = LuaTable()
    g.set("table", t)

    def insert(tb: Any, a: Any, b: Any = None) -> None:
        if not isinstance(tb, LuaTable):
            raise LuaRuntimeError("bad argument #1 to 'insert' (table expected)")
        if b is None:
            tb.set(float(tb.length() + 1), a)
        else:
            n, pos = tb.length(), int(a)
            for i in range(n, pos - 1, -1):
                tb.set(float(i + 1), tb.get(float(i)))
            tb.set(float(pos), b)
    fn("table.insert", insert, t)

    def concat(tb: Any, sep: Any = "", i: Any = 1, j: Any = None) -> str:
        if not isinstance(tb, LuaTable):
            raise LuaRuntimeError("bad argument #1 to 'concat' (table expected)")
        j = tb.length() if j is None else int(j)
        parts = []
        for k in range(int(i), j + 1):
            v = tb.get(float(k))
            if not isinstance(v, (str, int, float)) or isinstance(v, bool):
                raise LuaRuntimeError(f"invalid value (at index {k}) in table for 'concat'")
            parts.append(lua_tostring(v))
        return lua_tostring(sep).join(parts)
    fn("table.concat", concat, t)
    fn("table.getn", lambda tb: float(tb.length()) if isinstance(tb, LuaTable) else 0.0, t)

    o = LuaTable()
    g.set("os", o)
    fn("os.time", lambda *a: float(int(time.time())), o)
    fn("os.clock", lambda: float(time.process_time()), o)
    g.set("_G", g)
