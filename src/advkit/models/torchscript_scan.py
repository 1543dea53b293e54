"""Static check of TorchScript archives: which operators their code can reach, found without loading.

A ``torch.jit.save`` archive is a program, not weights (DESIGN §5). ``torch.jit.load`` compiles the
TorchScript source stored under ``<root>/code/`` and, while unpickling ``data.pkl``, runs the
``__setstate__`` method of any scripted class or module in it; ``forward`` runs on every call. That
code can call any registered operator, and some touch the system: ``torch.from_file(path,
shared=True, size=n)`` maps any path writable (a ``copy_`` into the tensor then writes chosen bytes),
``torch.save`` writes a file, ``torch.ops.<ns>.<op>`` and ``torch.classes.<ns>.<Class>`` run native
code from whatever libraries the process loaded. A pickle scan cannot see any of this.

The stored source is valid Python syntax, so every code member is parsed with :mod:`ast` (never
compiled or run) and every name it reaches is resolved as TorchScript resolves it: ``torch.<op>``
and ``ops.aten.<op>`` are ``aten::<op>``, ``ops.<ns>.<op>`` is ``<ns>::<op>``, a method or attribute
of a value (``x.copy_(...)``) may be the aten operator of that name, ``__torch__.<name>`` must be a
class or function the archive defines (whose code is checked the same way). Each must be on an
**allow-list**, built from what ``torch.jit.script`` and ``torch.jit.trace`` write for the zoo models
and common ``torch.nn`` layers: inert numeric operators (convolutions, linear layers, activations,
pooling, normalization, shape and indexing operators, arithmetic and comparisons, tensors made from
sizes) and the language's own builtins (``int``, ``len``, ``annotate``, ``ops.prim.RaiseException``).
Everything else is refused, named with the method using it: file and process operators (with a
specific reason), custom operators and classes, syntax TorchScript never writes (``import``), names
the archive does not define, any other operator. So is an archive with an absolute or ``..`` member
name, no code or code that does not parse, code with tabs, form feeds or carriage returns (which
TorchScript never writes, and which its lexer and Python's could read differently), pickles naming
a custom class or a class its code lacks, or a header that makes ``torch.jit.load`` read it as a
flatbuffer module instead of a zip.

A member the archive declares (``self.features``, ``(conv)._conv_forward``) is allowed on a
method's own instance; on any other value only if no operator off the list has its name, since on a
tensor that name would call the operator. The list errs towards refusing: a model using an
operator it lacks is refused with that operator named, rather than a payload let through. Not
covered: allowed operators can still exhaust memory or loop forever.
"""

from __future__ import annotations

import ast
import re
import zipfile
from functools import lru_cache

__all__ = ["ALLOWED_OPS", "scan_torchscript"]

_MAX_CODE_BYTES = 32 << 20  # one code member; generated code for real models is kilobytes
_ODD_WHITESPACE = re.compile(r"[\t\f\v\r]")

# aten operators (called as ``torch.<op>``, ``ops.aten.<op>``, ``x.<op>(...)`` or operator syntax)
# that only compute on tensors, numbers, lists and strings already in the program
ALLOWED_OPS = frozenset(f"aten::{name}" for name in """
    conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d _convolution linear
    matmul mm bmm addmm t embedding lstm gru rnn_tanh rnn_relu
    relu relu_ relu6 hardtanh hardtanh_ gelu silu silu_ elu elu_ leaky_relu leaky_relu_ prelu
    sigmoid sigmoid_ tanh tanh_ softplus hardswish hardswish_ hardsigmoid mish softmax log_softmax
    _softmax one_hot einsum linalg_vector_norm cross_entropy_loss nll_loss mse_loss
    max_pool1d max_pool2d max_pool3d avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d
    adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d
    batch_norm layer_norm group_norm instance_norm dropout dropout_ feature_dropout alpha_dropout
    flatten view reshape permute transpose contiguous squeeze unsqueeze expand expand_as cat stack
    split chunk unbind narrow select slice index index_select gather repeat pad constant_pad_nd
    upsample_nearest1d upsample_nearest2d upsample_nearest3d upsample_linear1d upsample_bilinear2d
    upsample_bicubic2d upsample_trilinear3d _upsample_nearest_exact1d _upsample_nearest_exact2d
    _upsample_nearest_exact3d _upsample_bilinear2d_aa _upsample_bicubic2d_aa _upsample_lanczos2d_aa
    scaled_dot_product_attention _native_multi_head_attention baddbmm unflatten
    __getitem__ __contains__
    add add_ sub sub_ mul mul_ div div_ neg pow sqrt rsqrt exp log abs clamp clamp_ floor ceil
    round remainder floordiv sum mean max min amax amin argmax argmin std var norm log1p cumsum
    maximum minimum clamp_min clamp_min_ clamp_max sort argsort topk broadcast_tensors type_as
    eq ne lt le gt ge __is__ __isnot__ __not__ __and__ __or__ __xor__ all any where masked_fill
    masked_fill_ is_floating_point is_grad_enabled set_grad_enabled is_autocast_enabled device
    zeros ones empty full zeros_like ones_like empty_like full_like new_zeros new_ones zero_ fill_
    arange
    size dim numel len list append extend insert pop keys values items copy_ clone detach to
    Int Float Bool ScalarImplicit item tensor format warn __range_length __derive_index dict
""".split()) | frozenset(f"prim::{name}" for name in """
    RaiseException NumToTensor device dtype type layout is_cuda is_nested requires_grad
    unchecked_cast Uninitialized min max abs
""".split())

# builtins and type names TorchScript's own source importer defines; all inert
_BUILTINS = frozenset("""
    int float bool str complex len range enumerate zip min max abs round divmod isinstance getattr
    hasattr setattr annotate unchecked_cast uninitialized print list tuple dict Exception
    Tensor Optional List Dict Tuple Final NoneType Module Device Any Union NamedTuple Enum
    Interface Future inf nan __annotations__ __parameters__ __buffers__
""".split())
_MATH = frozenset("pi e inf nan sqrt exp log floor ceil isnan isinf isfinite".split())
# attributes of a tensor that read a property rather than call an operator, and ``__new__``
# (``__torch__.<Class>.__new__(...)`` makes an instance of a class of the archive)
_PROPERTIES = frozenset("shape dtype device is_cuda requires_grad ndim T layout __new__".split())
_GLOBAL_ROOTS = frozenset({"torch", "ops", "math", "__torch__", "CONSTANTS"})
_NAMES = _BUILTINS | _GLOBAL_ROOTS

_DANGER_WORDS = (
    (re.compile(r"file|mmap|path|(^|_)fd(_|$)|save|load|pickle|storage|shm|shared|librar"),
     "reads, writes or maps files or storage"),
    (re.compile(r"^(fork|wait|rpc_async|rpc_sync|rpc_remote)$"),
     "starts tasks on other threads or machines"),
    (re.compile(r"^(os|sys|subprocess|builtins|open|eval|exec|compile|__import__|globals)$"),
     "reaches the Python runtime (files, processes, imports or code evaluation)"),
)
_KNOWN_DANGEROUS = {
    "aten::from_file": "maps a file into a tensor; with shared=True, writing the tensor writes the "
                       "file, at any path",
    "aten::save": "writes a file at any path",
}
_NOT_LISTED = "not on the allow-list of inert numeric operators"
_CUSTOM_CLASS = "a custom class from a loaded library: native code the scan cannot inspect"
_FOREIGN_SYNTAX = (ast.Import, ast.ImportFrom, ast.Global, ast.Nonlocal, ast.Lambda, ast.Await,
                   ast.Yield, ast.YieldFrom, ast.AsyncFunctionDef, ast.AsyncFor, ast.AsyncWith,
                   ast.Try, ast.NamedExpr)


@lru_cache(maxsize=1)
def _builtin_op_names() -> frozenset[str]:
    """The names of every aten and prim operator this torch registers (what ``x.<name>`` can call)."""
    import torch

    names = (s.name.split("::") for s in torch._C._jit_get_all_schemas())
    return frozenset(name for ns, name in names if ns in ("aten", "prim"))


def _why(op: str) -> str:
    """Why the operator (or name) ``op``, which is not on the allow-list, is refused."""
    if op in _KNOWN_DANGEROUS:
        return _KNOWN_DANGEROUS[op]
    ns, _, name = op.rpartition("::")
    if ns and ns not in ("aten", "prim"):
        return (f"a custom operator of the {ns!r} namespace from a loaded library: native code the "
                "scan cannot inspect")
    for pattern, reason in _DANGER_WORDS:
        if pattern.search(name):
            return reason
    return _NOT_LISTED


class _Findings:
    """Refusals, ``key -> (reason, places)``, rendered as ``key -> "reason; in place, ..."``."""

    def __init__(self):
        self.found: dict[str, tuple[str, set[str]]] = {}

    def add(self, key: str, reason: str, where: str) -> None:
        self.found.setdefault(key, (reason, set()))[1].add(where)

    def as_dict(self) -> dict[str, str]:
        return {key: f"{reason}; in {', '.join(sorted(places)[:5])}"
                     + (f" and {len(places) - 5} more" if len(places) > 5 else "")
                for key, (reason, places) in sorted(self.found.items())}


def _bad_member_name(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]


def _module_name(member: str) -> str | None:
    """``root/code/__torch__/a/b.py`` -> ``__torch__.a.b`` (the qualifier TorchScript gives it);
    None for a member outside ``<root>/code/``, which torch.jit.load never compiles."""
    parts = member[:-3].split("/")
    return ".".join(parts[2:]) if len(parts) > 2 and parts[1] == "code" else None


def _declared(trees: dict[str, ast.Module]) -> tuple[set[str], set[str]]:
    """What the archive defines: qualified class and function names, and the names of class
    members (attributes, methods, submodules) that code may read from ``self`` or other values."""
    qualified, members = set(), set()
    for member, tree in trees.items():
        module = _module_name(member)
        for node in tree.body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and module:
                qualified.add(f"{module}.{node.name}")
            for item in node.body if isinstance(node, ast.ClassDef) else ():
                if isinstance(item, ast.FunctionDef):
                    members.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    members.add(item.target.id)
                elif isinstance(item, ast.Assign):
                    members.update(t.slice.value for t in item.targets
                                   if isinstance(t, ast.Subscript)
                                   and isinstance(t.slice, ast.Constant)
                                   and isinstance(t.slice.value, str))
    return qualified, members


def _is_getattr(node: ast.AST) -> bool:
    """``getattr(x, "name")`` (or hasattr, setattr): TorchScript reads it as ``x.name``."""
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) >= 2
            and node.func.id in ("getattr", "hasattr", "setattr"))


def _split(node: ast.Attribute | ast.Call) -> tuple[ast.AST, object]:
    """The value and the attribute name of ``x.name`` or ``getattr(x, name)``."""
    if isinstance(node, ast.Attribute):
        return node.value, node.attr
    return node.args[0], node.args[1].value if isinstance(node.args[1], ast.Constant) else None


def _dotted(node: ast.AST) -> list[str] | None:
    """``a.b.c`` (or ``getattr(a.b, "c")``) -> ``["a", "b", "c"]`` when the chain starts at a
    plain name and every name in it is a constant, else None."""
    parts = []
    while isinstance(node, ast.Attribute) or _is_getattr(node):
        node, name = _split(node)
        if not isinstance(name, str):
            return None
        parts.append(name)
    return [node.id, *reversed(parts)] if isinstance(node, ast.Name) else None


class _Checker(ast.NodeVisitor):
    """Walks one code member and reports every name it reaches that is not allowed."""

    def __init__(self, module: str, qualified: set[str], members: set[str], findings: _Findings):
        self.module, self.qualified, self.members = module, qualified, members
        self.findings, self.where, self.local, self.instance = findings, module, set(), None

    def refuse(self, key: str, reason: str) -> None:
        self.findings.add(key, reason, self.where)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        outer, self.where = self.where, f"{self.module}.{node.name}"
        self.generic_visit(node)
        self.where = outer

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        outer, outer_local = self.where, self.local
        self.where = f"{outer}.{node.name}"
        args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
        self.local = {a.arg for a in args} | {n.id for n in ast.walk(node) if isinstance(
            n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del))}
        # a method's first argument, annotated with its own class, is the instance: its members
        # are the class's attributes and methods, never operators
        first = _dotted(args[0].annotation) if args and args[0].annotation else None
        self.instance = args[0].arg if first and ".".join(first) == outer else None
        self.generic_visit(node)
        self.where, self.local, self.instance = outer, outer_local, None

    def generic_visit(self, node: ast.AST) -> None:
        if isinstance(node, _FOREIGN_SYNTAX):
            self.refuse(type(node).__name__.lower(), "Python syntax TorchScript does not write")
        super().generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load) and node.id not in self.local and node.id not in _NAMES:
            reason = _why(node.id)
            self.refuse(node.id, reason if reason != _NOT_LISTED else
                        "a name that is neither a TorchScript builtin nor defined by the archive")

    def visit_Constant(self, node: ast.Constant) -> None:
        # TorchScript reads a string type annotation naming torch.classes as that custom class
        if isinstance(node.value, str) and node.value.startswith(
                ("torch.classes.", "__torch__.torch.classes.")):
            self.refuse(node.value, _CUSTOM_CLASS)

    def visit_Call(self, node: ast.Call) -> None:
        if _is_getattr(node):
            self.reach(node)
            for arg in node.args[2:]:
                self.visit(arg)
        else:
            self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.reach(node)

    def reach(self, node: ast.Attribute | ast.Call) -> None:
        """``x.name`` or ``getattr(x, "name")``: a global name, or a member of a value."""
        chain = _dotted(node)
        if chain and chain[0] in _GLOBAL_ROOTS and chain[0] not in self.local:
            return self.global_(chain)
        value, name = _split(node)
        if isinstance(name, str):
            self.member(name, self._is_instance(value))
        else:
            self.refuse(f"{node.func.id}(...)", "an attribute whose name is computed at run time")
        self.visit(value)

    def _is_instance(self, node: ast.AST) -> bool:
        return isinstance(node, ast.Name) and node.id == self.instance

    def member(self, name: str, of_instance: bool = False) -> None:
        """An attribute or method of a value: an allowed operator or property, or a member the
        archive declares (on another value than the instance, one not named like an operator)."""
        op = f"aten::{name}"
        if op in ALLOWED_OPS or f"prim::{name}" in ALLOWED_OPS or name in _PROPERTIES:
            return
        if name in self.members and (of_instance or name not in _builtin_op_names()):
            return
        if name in _builtin_op_names():
            self.refuse(op, _why(op))
        else:
            self.refuse(f".{name}", "an attribute or method the archive does not declare")

    def global_(self, chain: list[str]) -> None:
        """A dotted name from TorchScript's global namespaces: an operator, a math constant or
        function, a class or function of the archive, or a custom class."""
        dotted = ".".join(chain)
        root, rest = chain[0], chain[1:]
        if (rest[:1] == ["classes"] and root == "torch") or (
                root == "__torch__" and rest[:2] == ["torch", "classes"]):
            self.refuse(dotted, _CUSTOM_CLASS)
        elif root == "__torch__":
            known = next((i for i in range(len(chain), 1, -1)
                          if ".".join(chain[:i]) in self.qualified), 0)
            if not known:
                self.refuse(dotted, "a class or function the archive does not define")
            for name in chain[known or len(chain):]:
                self.member(name)
        elif root == "CONSTANTS":
            if not (len(rest) == 1 and re.fullmatch(r"c[0-9]+", rest[0])):
                self.refuse(dotted, "not a constant of the archive")
        elif root == "math":
            if len(rest) != 1 or rest[0] not in _MATH:
                self.refuse(dotted, _NOT_LISTED)
        else:
            if root == "torch" and rest[:1] == ["ops"]:
                rest = rest[1:]
            elif root == "torch":
                rest = ["aten", *rest]
            op = "::".join(rest) if len(rest) == 2 else dotted
            if op not in ALLOWED_OPS:
                self.refuse(op, _why(op))


def scan_torchscript(path, head: bytes = b"", pickle_globals=()) -> dict[str, str]:
    """Check the TorchScript archive at ``path`` (whose file starts with ``head``, and whose pickles
    import ``pickle_globals``, as ``"module.name"``) without loading it: ``{what: why}`` for
    everything refused, empty when all of its code is allowed."""
    findings = _Findings()
    if head[4:8] == b"PTMF":
        findings.add("flatbuffer header", "torch.jit.load would read this file as a flatbuffer "
                     "module, which the scan does not cover", "the file header")
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            if _bad_member_name(name):
                findings.add(name, "a member name that is absolute or climbs out of the archive",
                             "the archive")
        trees = _parse_code(zf, findings)
    qualified, members = _declared(trees)
    for member, tree in trees.items():
        try:
            _Checker(_module_name(member), qualified, members, findings).visit(tree)
        except RecursionError:
            findings.add(member, "code nested too deeply to inspect", "the archive")
    for name in pickle_globals:
        if name.startswith("__torch__.torch.classes."):
            findings.add(name, _CUSTOM_CLASS, "the archive's pickles")
        elif name.startswith("__torch__.") and name not in qualified:
            findings.add(name, "a class the archive's code does not define", "the archive's pickles")
    return findings.as_dict()


def _parse_code(zf: zipfile.ZipFile, findings: _Findings) -> dict[str, ast.Module]:
    """Parse every ``code/**.py`` member (what torch.jit.load compiles); refuse what does not."""
    trees, members = {}, [i for i in zf.infolist() if i.filename.endswith(".py")
                          and _module_name(i.filename)]
    for info in members:
        try:
            if info.file_size > _MAX_CODE_BYTES:
                raise ValueError(f"over {_MAX_CODE_BYTES >> 20} MiB")
            text = zf.read(info).decode("utf-8")
            if _ODD_WHITESPACE.search(text):  # where Python and TorchScript could split it apart
                raise ValueError("a tab, form feed or carriage return, which TorchScript never writes")
            trees[info.filename] = ast.parse(text, info.filename)
        except (SyntaxError, ValueError, UnicodeDecodeError, RecursionError) as exc:
            findings.add(info.filename, f"code that does not parse ({type(exc).__name__}: "
                         f"{str(exc)[:80]}), so what it runs is unknown", "the archive")
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError) as exc:
            findings.add(info.filename, f"code that cannot be read ({exc})", "the archive")
    if not members:
        findings.add("code/", "no TorchScript code (a torch.jit.save archive has a code/ folder), "
                     "so what it would run is unknown", "the archive")
    return trees
