"""The commands NOTES.txt prints, taken out of the rendered text so tests can check them
(bash syntax offline) and run them (against an installed release).

NOTES marks every command with a leading "$ "; a command continues on lines after a
trailing backslash, and a here-document (<<'WORD') runs to its WORD line."""

from __future__ import annotations

import re

PROMPT = re.compile(r"^\s*\$ (.*)$")
HEREDOC = re.compile(r"<<'(\w+)'")


def commands(text: str) -> list[str]:
    """Every command of `text`, in order, as one shell string each."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        match = PROMPT.match(lines[i])
        i += 1
        if not match:
            continue
        command = [match.group(1)]
        while command[-1].endswith("\\"):
            command.append(lines[i].strip())
            i += 1
        heredoc = HEREDOC.search(command[0])
        if heredoc:
            end = lines.index(heredoc.group(1), i)
            command.extend(lines[i:end + 1])
            i = end + 1
        out.append("\n".join(command))
    return out


def starting(cmds: list[str], *prefixes: str) -> list[str]:
    return [c for c in cmds if c.startswith(prefixes)]


def one_starting(cmds: list[str], prefix: str) -> str:
    found = starting(cmds, prefix)
    assert len(found) == 1, f"expected one command starting {prefix!r} in NOTES, found {found}"
    return found[0]


def substitute(command: str, words: dict[str, str]) -> str:
    """Replace NOTES' UPPERCASE placeholders (whole words only: NAMESPACE, never a part of
    SCHEDGEN_API_KEY) and other literal words the test must change."""
    for word, value in words.items():
        command = re.sub(rf"(?<![A-Za-z0-9_]){re.escape(word)}(?![A-Za-z0-9_])", value, command)
    return command
