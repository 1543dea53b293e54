"""The advkit error hierarchy.

Every error a user can cause is an ``AdvkitError``. Its message names the problem and the fix; the
CLI prints it without a traceback and exits 2.
"""

from __future__ import annotations

import math
import re

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed and numpy take seeds below 2**63
MESSAGE_LIMIT = 200  # values quoted in messages are cut to this many characters


def short(value: object, limit: int = MESSAGE_LIMIT) -> str:
    """``repr(value)`` cut to ``limit`` characters, so a message never quotes a huge structure."""
    if isinstance(value, list | tuple | dict | set) and len(value) > 1000:
        return f"<{type(value).__name__} of {len(value)} items>"  # never repr a huge container
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 25]}... ({len(text)} characters)"


# control characters (except newline and tab) and bidirectional overrides: a terminal escape
# sequence among them ("\x1b]0;title\x07", "\x1b[2J") would retitle, clear or rewrite a terminal
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def visible(text: object) -> str:
    """``str(text)`` with control characters (except newline and tab) and bidirectional
    overrides replaced by visible escapes (``\\x1b``, ``\\u202e``): safe to show on a terminal."""
    return _UNSAFE.sub(_escape, str(text))


class AdvkitError(Exception):
    """Base class for every error advkit raises on bad input or an impossible request."""


class InvalidParameterError(AdvkitError, ValueError):
    """A parameter is outside its allowed range or of the wrong kind.

    With ``owner`` (the class the parameter belongs to) the message is the one format of declared
    parameters (``advkit.params``): ``PGD: parameter 'eps' must be a float in [0, inf); got '0.1'
    (str)``."""

    def __init__(self, name: str, value: object, allowed: str, *, owner: str | None = None,
                 given: str | None = None):
        self.name, self.value, self.allowed, self.owner = name, value, allowed, owner
        if owner is None:
            super().__init__(f"invalid parameter {name}={short(value)}: expected {allowed}")
        else:
            given = given or f"{short(value)} ({type(value).__name__})"
            super().__init__(f"{owner}: parameter {name!r} must be {allowed}; got {given}")


class UnknownParameterError(InvalidParameterError):
    """A keyword parameter that the class does not take."""

    def __init__(self, owner: str, name: str, value: object, known):
        self.name, self.value, self.owner = name, value, owner
        self.allowed = ", ".join(known)
        AdvkitError.__init__(self, f"{owner}: unknown parameter {name!r} (given {short(value)}); "
                                   f"{owner} takes {self.allowed or 'no parameters'}")


class RegistrationError(AdvkitError, ValueError):
    """A registry name is already held by another class, or a registration is malformed."""


class IncompatibleTargetError(AdvkitError):
    """An attack or defense needs a capability the target does not have."""


class InputContractError(AdvkitError, ValueError):
    """Inputs, labels or model outputs break the target's declared contract."""


class ModelBehaviorError(InputContractError):
    """A model misbehaved: its forward raised, returned something other than finite floating
    scores of shape (N, n_classes), or ignores its input."""


class NonFiniteScoresError(ModelBehaviorError):
    """A model returned NaN or infinite scores for finite inputs."""


class ModelInputShapeError(ModelBehaviorError):
    """A model's forward refused inputs of the data's shape (flat features into a CNN, images
    into a model for flat features, the wrong number of channels); the message names the shape
    it was given and how to reshape the data."""


def image_layouts(size: int) -> list[tuple[int, int, int]]:
    """Square image layouts ``(channels, side, side)`` (1 or 3 channels) of ``size`` values."""
    out = []
    for c in (1, 3):
        side = math.isqrt(size // c) if size % c == 0 else 0
        if side > 1 and side * side * c == size:
            out.append((c, side, side))
    return out


class UnsafeModelError(AdvkitError):
    """A model file could execute code when loaded and was refused."""


class BudgetExhausted(AdvkitError):
    """A target's query budget is used up."""


class AuditSpecError(AdvkitError):
    """An audit spec (YAML) is malformed or names something that does not exist."""


class ReportFormatError(AdvkitError, ValueError):
    """A report document (or a piece of a report) is malformed or of an unknown schema version."""


class HistoryError(AdvkitError):
    """The audit history (SQLite) is damaged, foreign, locked, or lacks the audit asked for."""


class MissingDependencyError(AdvkitError, ImportError):
    """An optional feature needs a package that is not installed."""

    def __init__(self, feature: str, package: str, extra: str | None = None):
        how = f"pip install 'advkit[{extra}]'" if extra else f"pip install {package}"
        self.package = package
        super().__init__(f"{feature} needs the package {package!r}, which is not installed: {how}")


class ExecutorError(AdvkitError):
    """An executor could not run a stage: the cluster is unreachable, the subject cannot be shipped
    to its workers, or a stage's workers kept dying after every retry."""


class DataFormatError(AdvkitError, ValueError):
    """A data file is corrupt, truncated, or not in the format its name promises."""


class DataFileNotFoundError(AdvkitError, FileNotFoundError):
    """A data file named by the user does not exist."""


class MissingSystemPackageError(MissingDependencyError):
    """A built-in dataset needs a system (Debian) package that is not installed."""

    def __init__(self, feature: str, package: str, hint: str = ""):
        self.package = package
        super(MissingDependencyError, self).__init__(
            f"{feature} needs the Debian package {package!r}, which is not installed: "
            f"apt-get install {package}{hint}"
        )


class RemoteTargetError(AdvkitError):
    """A model behind an API could not be queried: unreachable, refused the request (a wrong API
    key, a bad request), kept failing after the retries, or (offline) its query log has no answer.
    The message names the URL (never the key) and the fix."""


class WebRequestError(AdvkitError):
    """A request to ``advkit serve`` is malformed or refused (an upload too large, not an image,
    an unknown model or attack, an audit already running). ``status`` is the HTTP status the web
    app answers with (4xx); the message names the problem and the fix."""

    def __init__(self, message: str, status: int = 400):
        self.status = status
        super().__init__(message)


class AdvkitWarning(UserWarning):
    """A problem advkit can work around but the user should know about."""


def check_range(name: str, value, *, lo=None, hi=None, lo_open=False, hi_open=False, kind=None):
    """Validate ``lo <= value <= hi`` (open ends when asked); raise InvalidParameterError."""
    if kind is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise InvalidParameterError(name, value, f"a {getattr(kind, '__name__', kind)}")
    if isinstance(value, str | bytes | bool | None | list | tuple | dict):
        raise InvalidParameterError(name, value, "a number")
    bad = (
        value != value  # NaN
        or (lo is not None and (value <= lo if lo_open else value < lo))
        or (hi is not None and (value >= hi if hi_open else value > hi))
    )
    if bad:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        raise InvalidParameterError(name, value, f"a value in {left}{lo_s}, {hi_s}{right}")
    return value


def check_seed(name: str, value) -> int:
    """A seed every generator takes: an int with ``0 <= seed < 2**63``."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SEED:
        raise InvalidParameterError(
            name, value, "an integer seed with 0 <= seed < 2**63 (what torch and numpy take)")
    return value


def check_choice(name: str, value, choices):
    if value not in choices:
        raise InvalidParameterError(name, value, f"one of {sorted(map(str, choices))}")
    return value
