"""Commands as a learner types them: one text for the notebook, the README and the log.

The course runs every command as an argument list (never a shell string built from input);
``format_command`` only renders one for display, so a notebook can show exactly the line
its code runs (tests check the notebook's text against the builder that made the list).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence


def format_command(command: Sequence[object], width: int = 88) -> str:
    """``command`` as shell text; past ``width`` one option per line, continued with ``\\``."""
    parts = [_quote(str(part)) for part in command]
    if len(" ".join(parts)) <= width:
        return " ".join(parts)
    lines = [parts[0]]
    for part in parts[1:]:
        if not part.startswith("-") and _takes_value(lines[-1], first=len(lines) == 1):
            lines[-1] += " " + part
        else:
            lines.append(part)
    return " \\\n    ".join(lines)


def _quote(word: str) -> str:
    """``shlex.quote``, except that ``$PWD`` stays for the shell to expand (in double quotes)."""
    rest = word.replace("$PWD", "")
    if "$PWD" in word and shlex.quote(rest) == rest:
        return f'"{word}"'
    return shlex.quote(word)


def _takes_value(line: str, first: bool) -> bool:
    """Whether the next bare word belongs on ``line``: the program's line, or a lone option."""
    words = line.split(" ")
    if first:
        return not any(word.startswith("-") for word in words)
    return len(words) == 1 and words[0].startswith("-") and "=" not in words[0]
