"""What a netlist may do: the check every netlist passes before ngspice sees it.

ngspice is a command interpreter as well as a simulator.  A netlist can make it run shell
commands, write and read files, or load code, through (all measured on ngspice 39.3, batch
mode and the shared library):

* ``.control`` ... ``.endc`` blocks (matched by prefix, any case, leading blanks allowed:
  ``  .CONTROLX`` works too), with ``shell``, ``write``, ``wrdata``, ``source``, ``cd``...;
* a line starting with ``*#``: one control command outside any block;
* ``*ng_script`` as the first line: the whole file is a command script;
* ``.include`` / ``.inc`` / ``.lib`` (any card starting with ``.inc`` or ``.lib``, the first
  line included): the file is read, its lines are parsed as netlist (its own
  ``.control`` blocks run) and lines it cannot parse are echoed into the log
  (``.include /etc/passwd`` prints a line of it);
* XSPICE models that read files: ``filesource`` (``file=``), ``d_source`` (``input_file=``),
  ``d_state`` (``state_file=``), ``table2d``/``table3d`` (``file=``), and ``d_process``
  (runs a program, later ngspice versions).

The shared library splits the text with Python's ``str.splitlines`` (so ``\\r``,
``\\x1c`` and ``\\u2028`` separate lines there), ngspice's own reader at ``\\n``: the check
splits like ``splitlines`` too, which sees every line either of them sees.

By default :func:`check_netlist` refuses all of that, naming the line, except includes of
files inside the netlist's own folder (checked the same way, recursively); dot cards it does
not know are refused as well, so that a card added by a later ngspice cannot slip through.
``allow_control=True`` lets everything through (the netlist then runs with the user's
permissions, like ``ngspice`` itself).  Relative include paths are rewritten to absolute ones
either way, because ngspice resolves them against the folder of the file it reads (the run
directory for the subprocess backend, the working directory for the shared library) rather
than the folder of the user's netlist.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from ..errors import DyadsimError

__all__ = ["check_netlist", "checked_netlist", "UnsafeNetlistError", "SAFE_CARDS", "FILE_MODELS",
           "MAX_INCLUDE_DEPTH", "MAX_INCLUDE_BYTES"]

#: Dot cards a netlist may use without ``allow_control`` (``.include``/``.lib`` are checked
#: separately).  Analyses, models, parameters, options, initial conditions, output requests.
SAFE_CARDS = frozenset("""
    .title .end .ends .endl .subckt .model .param .func .global .option .options .opt .temp
    .op .tran .ac .dc .noise .tf .sens .pz .disto .sp .pss .ic .nodeset .save .print .plot
    .probe .four .meas .measure .width .csparam .if .elseif .else .endif
""".split())

#: XSPICE code models that read files or start programs.
FILE_MODELS = frozenset({"filesource", "d_source", "d_state", "table2d", "table3d", "d_process"})

#: How deep includes may nest, and how many bytes all included files may hold together.
MAX_INCLUDE_DEPTH = 8
MAX_INCLUDE_BYTES = 256 * 2**20

_HINT = "pass allow_control=True (on the command line: --allow-control) to run it anyway"
_FILE_WORD = re.compile(r"(?<![a-z0-9_])[a-z0-9_]*(?:file|process)[a-z0-9_]*", re.IGNORECASE)
_MODEL_TYPE = re.compile(r"\.model\s+\S+\s+([a-z0-9_]+)", re.IGNORECASE)
_PATH_BAD = re.compile(r"[$`\\\"\x00-\x1f]")
_CARD_WORD = re.compile(r"\.[a-z0-9_]*", re.IGNORECASE)


class UnsafeNetlistError(DyadsimError):
    """A netlist line that could run commands or read or write files, refused.

    Parameters
    ----------
    message : str
        Why it is refused.
    line_number : int
        The line's number (1-based).
    line : str
        Its text.
    file : str or None, optional
        The file it is in: the netlist's own or an included one; None for netlist text.
    """

    def __init__(self, message: str, *, line_number: int, line: str, file: Optional[str] = None):
        self.line_number = line_number
        self.line = line
        self.file = file
        super().__init__(message)


def _show(line: str) -> str:
    text = line.strip()
    shown = text if len(text) <= 80 else text[:77] + "..."
    return ascii(shown) if not shown.isprintable() else repr(shown)


def _where(file: Optional[str], number: int) -> str:
    return f"{file}, line {number}" if file else f"line {number}"


def check_netlist(text: str, folder=None, *, allow_control: bool = False,
                  source: Optional[str] = None) -> str:
    """Refuse netlist text that could run commands or touch files; return the text to run.

    Parameters
    ----------
    text
        The netlist.
    folder
        The folder of the netlist file (None for netlist text): files inside it may be
        included, and relative include paths are made absolute against it.
    allow_control
        Let everything through (``.control`` blocks, ``shell``, includes of any file, XSPICE
        models that read files): ngspice then runs the netlist with this process's
        permissions.  Relative includes are still made absolute.
    source
        How messages name the netlist (its path), if anywhere.

    Returns
    -------
    str
        ``text``, with the paths of its top-level includes made absolute.

    Raises
    ------
    UnsafeNetlistError
        Naming the line and what it would do.
    """
    return checked_netlist(text, folder, allow_control=allow_control, source=source)[0]


def checked_netlist(text: str, folder=None, *, allow_control: bool = False,
                    source: Optional[str] = None) -> tuple[str, frozenset]:
    """:func:`check_netlist`, plus what the netlist would leave switched on in a shared
    ngspice engine for every later run (an ngspice 39 bug): ``"interp"`` (``.options
    interp``: every later transient is interpolated at its print step) and ``"save none"``
    (later runs keep no vectors).

    Returns
    -------
    (str, frozenset)
        The text to run and those names (in includes too; empty for ``allow_control``,
        whose control commands can set anything).
    """
    if not isinstance(text, str):
        raise DyadsimError(f"netlist text must be a str, got {type(text).__name__}")
    folder = None if folder is None else Path(folder).resolve()
    state = {"budget": MAX_INCLUDE_BYTES, "seen": set(), "sticky": set()}
    lines = text.splitlines()
    out = list(lines)
    changed = False
    for index, new in _scan(lines, folder, folder, allow_control, source, 0, state, True):
        out[index] = new
        changed = True
    return ("\n".join(out) + "\n" if changed else text), frozenset(state["sticky"])


def _scan(lines, folder, root, allow, file, depth, state, top):
    """Yield ``(index, rewritten_line)`` for the include lines of the top-level text; raise
    on the first unsafe line.  ``folder`` resolves relative paths, ``root`` bounds them."""
    n = len(lines)
    for index in range(n):
        line = lines[index]
        number = index + 1
        if "\x00" in line:
            raise UnsafeNetlistError(f"{_where(file, number)}: the netlist contains a NUL byte",
                                     line_number=number, line=line, file=file)
        s = line.lstrip()
        if not s or s[0] not in ".*sS":
            continue
        low = s.lower()
        if low.startswith("*"):
            if allow:
                continue
            if low.startswith("*#"):
                _refuse(file, number, line, "a line starting with '*#' is an ngspice control command")
            if low.startswith("*ng_script"):
                _refuse(file, number, line, "'*ng_script' makes the whole netlist an ngspice command script")
            continue
        if low[0] == "s":
            if not allow and top and index == 0:
                continue  # the title line
            if not allow and low.split(None, 1)[0] == "shell":
                _refuse(file, number, line, "'shell' runs a command")
            continue
        token = low.split(None, 1)[0]
        word = _CARD_WORD.match(token).group()
        if word.startswith((".control", ".endc")):
            if not allow:
                _refuse(file, number, line, "'.control' ... '.endc' blocks run ngspice commands "
                        "(shell commands, file writes)")
            continue
        if word.startswith((".inc", ".lib")):
            new = _include(line, s, token, word, folder, root, allow, file, number, depth, state)
            if top and new is not None:
                yield index, new
            continue
        if allow:
            continue
        if top and index == 0:
            continue  # the title line: ngspice only reads includes and control cards there
        card = s
        k = index + 1
        while k < n and lines[k].lstrip().startswith("+"):
            card += " " + lines[k].lstrip()[1:]
            k += 1
        if word.startswith(".opt") and re.search(r"(?<![a-z0-9_])interp(?![a-z0-9_])", card, re.IGNORECASE):
            state["sticky"].add("interp")
        if word == ".save" and re.search(r"(?<![a-z0-9_])none(?![a-z0-9_])", card, re.IGNORECASE):
            state["sticky"].add("save none")
        if word == ".model":
            match = _MODEL_TYPE.match(card)
            kind = match.group(1).lower() if match else ""
            if kind in FILE_MODELS or _FILE_WORD.search(card[len(".model"):]):
                _refuse(file, number, line, f"XSPICE model {kind or '?'!r} reads files or starts "
                        "programs")
            continue
        if word not in SAFE_CARDS:
            _refuse(file, number, line, f"unknown card {word!r} (allowed: "
                    f"{', '.join(sorted(SAFE_CARDS))}, and .include/.lib of files in the netlist's folder)")


def _refuse(file, number, line, why):
    raise UnsafeNetlistError(f"{_where(file, number)}: {_show(line)}: {why}; refused, {_HINT}",
                             line_number=number, line=line, file=file)


def _include(line, s, token, word, folder, root, allow, file, number, depth, state):
    """Check one ``.include``/``.lib`` line; return it with an absolute path, or None."""
    is_lib = word.startswith(".lib")
    if token != word:  # ".include\"x\"" or ".inc(x)": ngspice reads no file name there
        if allow:
            return None
        _refuse(file, number, line, f"malformed {word} card")
    rest = s[len(token):].strip()
    if rest[:1] in ("\"", "'"):
        quote = rest[0]
        end = rest.find(quote, 1)
        if end < 0:
            if allow:
                return None
            _refuse(file, number, line, f"unterminated quote in {word} card")
        name, tail = rest[1:end], rest[end + 1:]
        quoted = True
    else:
        parts = rest.split(None, 1)
        name = parts[0] if parts else ""
        tail = (" " + parts[1]) if len(parts) > 1 else ""
        quoted = False
    if not name:
        if allow:
            return None  # ngspice reports the missing file name itself
        _refuse(file, number, line, f"{word} card without a file name")
    if is_lib and not quoted and not tail.strip() and not re.search(r"[/~.]", name):
        return None  # ".lib section": the start of a library section, not a file
    if allow:
        if folder is None or os.path.isabs(name) or name.startswith("~") or _PATH_BAD.search(name):
            return None
        return _rewrite(line, word, folder / name, tail)
    if _PATH_BAD.search(name):
        _refuse(file, number, line, f"{word} path with '$', '`', '\\\\', a quote or a control character")
    if folder is None:
        _refuse(file, number, line, f"{word} reads a file, and netlist text has no folder to confine "
                "it to (simulate the netlist file instead: then files in its folder may be included)")
    target = Path(os.path.expanduser(name))
    if not target.is_absolute():
        target = folder / target
    resolved = target.resolve()
    if not _inside(resolved, root):
        _refuse(file, number, line, f"{word} of {str(resolved)!r}, outside the netlist's folder {str(root)!r}")
    if not resolved.is_file():
        why = "is not a regular file" if resolved.exists() else "does not exist"
        raise UnsafeNetlistError(f"{_where(file, number)}: {_show(line)}: included file "
                                 f"{str(resolved)!r} {why}", line_number=number, line=line, file=file)
    if depth + 1 > MAX_INCLUDE_DEPTH:
        _refuse(file, number, line, f"includes nested deeper than {MAX_INCLUDE_DEPTH}")
    key = str(resolved)
    if key in state["seen"]:
        _refuse(file, number, line, f"{str(resolved)!r} includes itself")
    state["budget"] -= resolved.stat().st_size
    if state["budget"] < 0:
        _refuse(file, number, line, f"included files hold more than {MAX_INCLUDE_BYTES} bytes")
    data = resolved.read_bytes()
    try:
        inner = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnsafeNetlistError(f"{_where(file, number)}: included file {key!r} is not UTF-8 text "
                                 f"(byte 0x{data[exc.start]:02x} at offset {exc.start})",
                                 line_number=number, line=line, file=file) from None
    state["seen"].add(key)
    try:
        for _ in _scan(inner.splitlines(), resolved.parent, root, allow, key, depth + 1, state, False):
            pass
    finally:
        state["seen"].discard(key)
    return _rewrite(line, word, resolved, tail)


def _rewrite(line, word, path: Path, tail: str) -> str:
    text = str(path)
    if "\"" in text or any(c in text for c in "\r\n"):  # pragma: no cover - refused before
        raise DyadsimError(f"cannot quote the include path {text!r}")
    return f"{word} \"{text}\"{tail}"


def _inside(path: Path, root: Optional[Path]) -> bool:
    if root is None:
        return False
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True
