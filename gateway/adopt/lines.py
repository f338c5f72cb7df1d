"""
Finding one setting in a client's configuration file and changing only its
value.

Adoption must not reformat files it does not understand: certbot rewrites
its renewal files itself, dehydrated and acme.sh source theirs as shell
scripts, and an operator's comments and layout must survive.  So files are
edited line by line: the line holding the setting keeps its indentation,
quoting and trailing comment; every other byte stays as it was.  A setting
whose value is not a plain literal (a shell variable, a command
substitution, a configobj multi-line string) makes the file *unparsable*:
it is reported and left untouched rather than guessed at.

Two syntaxes:

* shell assignments (``CA="https://…"``, ``Le_API='https://…'``, optional
  ``export``), for dehydrated and acme.sh;
* configobj ``key = value`` lines under ``[section]`` headers, for certbot's
  renewal files (and ``cli.ini``, which has no sections).
"""

from __future__ import annotations

import re
from typing import List, Optional, Tuple

import attrs


class Unparsable(ValueError):
    """
    The file (or the setting's line) is not in the shape adoption can edit
    safely; the message says where.
    """


@attrs.frozen
class Setting:
    """
    One assignment found in a file.

    :ivar index: its line, counted from 0.
    :ivar value: the value, unquoted.
    :ivar start: where the value (with its quotes) begins in the line.
    :ivar end: where it ends (exclusive).
    :ivar quote: the quote used: ``'``, ``"`` or nothing.
    """

    index: int
    value: str
    start: int
    end: int
    quote: str


def split_lines(data: bytes) -> List[str]:
    """
    The lines of a text file, line endings kept, so that joining them gives
    the very same bytes back.

    :raises Unparsable: for a file that is not UTF-8 text.
    """
    if b"\x00" in data:
        raise Unparsable("binary file (NUL bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Unparsable(f"not UTF-8 text (byte {error.start})")
    return text.splitlines(keepends=True)


def join_lines(lines: List[str]) -> bytes:
    return "".join(lines).encode("utf-8")


def _body(line: str) -> Tuple[str, str]:
    """
    A line split into its content and its line ending.
    """
    stripped = line.rstrip("\r\n")
    return stripped, line[len(stripped):]


# --------------------------------------------------------------------------
# Shell assignments.
# --------------------------------------------------------------------------

#: A value the shell takes literally: no expansion, no word splitting.
_SHELL_VALUE = r"""(?:"(?P<dq>[^"$`\\]*)"|'(?P<sq>[^']*)'|(?P<bare>[^\s'"$`\\;&|<>()#]*))"""
_SHELL_TAIL = r"(?P<tail>\s*(?:[;]\s*)?(?:#.*)?)$"

#: Characters that need no quoting in a shell word.
_SHELL_SAFE = re.compile(r"^[A-Za-z0-9_./:%@+,=~-]*$")


def find_shell(lines: List[str], name: str) -> List[Setting]:
    """
    Every assignment of ``name`` at the start of a line (``NAME=value``,
    ``export NAME=value``), in order; the shell uses the last.

    :raises Unparsable: when one assigns something that is not a literal.
    """
    start = re.compile(rf"^\s*(?:export\s+)?{re.escape(name)}=")
    full = re.compile(rf"^(?P<head>\s*(?:export\s+)?{re.escape(name)}=){_SHELL_VALUE}{_SHELL_TAIL}")
    found = []
    for index, line in enumerate(lines):
        content, _ = _body(line)
        if not start.match(content):
            continue
        match = full.match(content)
        if match is None:
            raise Unparsable(f"line {index + 1}: {name}= is not set to a plain literal value")
        quote = '"' if match.group("dq") is not None else "'" if match.group("sq") is not None else ""
        value = next(v for v in (match.group("dq"), match.group("sq"), match.group("bare")) if v is not None)
        found.append(Setting(index=index, value=value, start=match.end("head"),
                             end=match.start("tail"), quote=quote))
    return found


def shell_word(value: str, quote: str) -> str:
    """
    ``value`` written in the quoting ``quote``, or in double quotes when it
    was bare and needs quoting.  Callers pass values free of ``"``, ``'``,
    ``$``, backquotes and backslashes (see `gateway.process.adopt_command`).
    """
    if not quote and not _SHELL_SAFE.match(value):
        quote = '"'
    return f"{quote}{value}{quote}"


# --------------------------------------------------------------------------
# configobj.
# --------------------------------------------------------------------------

_SECTION = re.compile(r"^\s*(?P<open>\[+)\s*(?P<name>[^\[\]]+?)\s*(?P<close>\]+)\s*(?:#.*)?$")
_CONFIGOBJ_VALUE = re.compile(
    r"""^(?P<head>\s*(?P<key>[^=\s#\[][^=]*?)\s*=\s*)"""
    r"""(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>[^'"#]*?))"""
    r"""(?P<tail>\s*(?:#.*)?)$"""
)


def find_configobj(lines: List[str], name: str, section: Optional[str]) -> Tuple[List[Setting], Optional[int]]:
    """
    The assignments of ``name`` directly in ``section`` (``None``: before
    any section, as in ``cli.ini``), checking the whole file's shape on the
    way, as configobj would read it.

    :return: the settings, and the line of the section's header (``None``
        when the section is absent or ``section`` is ``None``).
    :raises Unparsable: for a line that is neither blank, a comment, a
        section header nor ``key = value``; for multi-line values; for a
        key given twice in one section (configobj refuses such files).
    """
    current: Tuple[str, ...] = ()
    header: Optional[int] = None
    seen = set()
    found = []
    for index, line in enumerate(lines):
        content, _ = _body(line)
        stripped = content.strip()
        if not stripped or stripped.startswith("#"):
            continue
        section_match = _SECTION.match(content)
        if section_match:
            depth = len(section_match.group("open"))
            if depth != len(section_match.group("close")) or depth > len(current) + 1:
                raise Unparsable(f"line {index + 1}: section header nested wrongly")
            current = current[: depth - 1] + (section_match.group("name"),)
            if current == (section,):
                if header is not None:
                    raise Unparsable(f"line {index + 1}: section [{section}] given twice")
                header = index
            continue
        match = _CONFIGOBJ_VALUE.match(content)
        if match is None or "'''" in content or '"""' in content:
            raise Unparsable(f"line {index + 1}: not a `key = value` line")
        key = match.group("key")
        if (current, key) in seen:
            raise Unparsable(f"line {index + 1}: {key} given twice in one section")
        seen.add((current, key))
        in_section = current == (() if section is None else (section,))
        if key == name and in_section:
            quote = '"' if match.group("dq") is not None else "'" if match.group("sq") is not None else ""
            value = next(v for v in (match.group("dq"), match.group("sq"), match.group("bare"))
                         if v is not None)
            found.append(Setting(index=index, value=value, start=match.end("head"),
                                 end=match.start("tail"), quote=quote))
    return found, header


# --------------------------------------------------------------------------
# Rewriting.
# --------------------------------------------------------------------------


def with_value(lines: List[str], setting: Setting, word: str) -> List[str]:
    """
    ``lines`` with the value of ``setting`` replaced by ``word`` (already
    quoted as it should appear); nothing else changes.
    """
    line = lines[setting.index]
    changed = list(lines)
    changed[setting.index] = line[: setting.start] + word + line[setting.end:]
    return changed


def line_ending(lines: List[str]) -> str:
    """
    The line ending the file uses (``\\n`` for an empty file).
    """
    for line in lines:
        _, ending = _body(line)
        if ending:
            return ending
    return "\n"


def with_line_after(lines: List[str], index: Optional[int], text: str) -> List[str]:
    """
    ``lines`` with the line ``text`` inserted after line ``index`` (at the
    end when ``None``), in the file's own line ending; a last line without
    one gets it first.
    """
    ending = line_ending(lines)
    changed = list(lines)
    position = len(changed) if index is None else index + 1
    if position > 0 and not _body(changed[position - 1])[1]:
        changed[position - 1] += ending
    changed.insert(position, text + ending)
    return changed
