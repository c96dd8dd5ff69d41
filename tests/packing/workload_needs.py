"""What a charm needs of its workload container: programs, paths, users, groups.

Read from the charm's own runs (tests/packing/record_charm_runs.py records the Pebble layers it
adds and the commands it execs): every service and check command, including the words of
``/bin/sh -c`` scripts, their users, groups, working directories and path-valued environment
variables, and every exec'd command with its user, group and working directory. The arguments
of an exec'd command are not paths the charm chose (they may come from an action's
parameters), so only its program is needed, unless it is a shell script the charm wrote. The
shell scripts the charm pushed into the container (a git hook, a bootstrap script) are read the
same way.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

SHELLS = {"sh", "dash", "bash"}
# Words the shell itself runs (dash's builtins and reserved words): no program needed.
SHELL_BUILTINS = {
    ".", ":", "[", "alias", "bg", "break", "cd", "command", "continue", "echo", "eval", "exec",
    "exit", "export", "false", "fg", "getopts", "hash", "jobs", "kill", "local", "printf", "pwd",
    "read", "readonly", "return", "set", "shift", "test", "times", "trap", "true", "type",
    "ulimit", "umask", "unalias", "unset", "wait",
}  # fmt: skip
_RESERVED = {
    "if",
    "then",
    "else",
    "elif",
    "fi",
    "do",
    "done",
    "while",
    "until",
    "esac",
    "!",
    "{",
    "}",
}
# Programs that run the program named after them (after their options and VAR=value words).
_LAUNCHERS = {"exec", "env", "nohup", "command"}
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=(.*)", re.DOTALL)
_PUNCTUATION = ";&|()<>\n"
_REDIRECT = re.compile(r"[<>]+[&|]?|&>")


@dataclass(frozen=True, order=True)
class Need:
    """One thing the charm needs in the container, and where it asked for it."""

    kind: str  # "program", "path", "user" or "group"
    value: str
    where: str


@dataclass
class ShellWords:
    """The words of a shell script that name programs, and those that look like paths."""

    programs: list[str]
    paths: list[str]


def _split_substitutions(script: str) -> tuple[str, list[str]]:
    """Replace ``$(...)`` by a word and ``$((...))`` by ``0``; return the inner scripts too."""
    out: list[str] = []
    inner: list[str] = []
    index = 0
    while index < len(script):
        if script.startswith("$(", index):
            arithmetic = script.startswith("$((", index)
            depth, end, quote = 0, index + 1, ""
            while end < len(script):
                char = script[end]
                if quote:
                    quote = "" if char == quote else quote
                elif char in "'\"" and not arithmetic:
                    quote = char
                elif char == "(":
                    depth += 1
                elif char == ")":
                    depth -= 1
                    if depth == 0:
                        break
                end += 1
            if arithmetic:
                out.append("0")
            else:
                inner.append(script[index + 2 : end])
                out.append("substitution")
            index = end + 1
            continue
        out.append(script[index])
        index += 1
    return "".join(out), inner


def _tokens(script: str) -> list[str]:
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("#")]
    lexer = shlex.shlex(
        "\n".join(lines).replace("\\\n", " "), posix=True, punctuation_chars=_PUNCTUATION
    )
    lexer.whitespace = " \t\r"
    lexer.whitespace_split = True
    lexer.commenters = ""
    return list(lexer)


def _is_punctuation(token: str) -> bool:
    return bool(token) and all(char in _PUNCTUATION for char in token)


def _without_case_patterns(tokens: list[str]) -> list[str]:
    """``tokens`` without ``case WORD in`` and the patterns before each ``)`` of a case."""
    kept: list[str] = []
    state = ""  # "" outside a case, "header" in `case WORD in`, "pattern" before a `)`
    at_command_start = True
    for token in tokens:
        if state == "header":
            state = "pattern" if token == "in" else state
        elif state == "pattern":
            if token == "esac" or (_is_punctuation(token) and ")" in token):
                state = ""
                kept.append(";")
        elif token == "case" and at_command_start:
            state = "header"
        else:
            kept.append(token)
            if _is_punctuation(token) and token.strip().startswith(";;"):
                state = "pattern"
        at_command_start = _is_punctuation(kept[-1]) if kept else True
        at_command_start = at_command_start or (bool(kept) and kept[-1] in _RESERVED)
    return kept


def _simple_commands(tokens: list[str]) -> Iterator[list[str]]:
    """The shell's simple commands: their words, without redirections or case patterns."""
    tokens = _without_case_patterns(tokens)
    words: list[str] = []
    skip_target = False
    for index, token in enumerate(tokens):
        if _is_punctuation(token):
            if _REDIRECT.fullmatch(token.strip("\n")):
                skip_target = True
                continue
            if words:
                yield words
            words = []
            continue
        if skip_target:
            skip_target = False
            continue
        following = tokens[index + 1] if index + 1 < len(tokens) else ""
        if token.isdigit() and _REDIRECT.fullmatch(following):
            continue  # the file descriptor of a redirection such as 2>&1
        words.append(token)
    if words:
        yield words


def _path_words(words: Iterable[str]) -> Iterator[str]:
    for word in words:
        assignment = _ASSIGNMENT.fullmatch(word)
        if assignment:
            word = assignment.group(1)
        elif word.startswith("--") and "=" in word:
            word = word.split("=", 1)[1]
        if word.startswith("/") and "$" not in word and not any(c.isspace() for c in word):
            yield word


def shell_words(script: str) -> ShellWords:
    """The programs a shell script runs and the paths its words name (``$`` words are skipped)."""
    text, substitutions = _split_substitutions(script)
    result = ShellWords(programs=[], paths=[])
    for inner in substitutions:
        nested = shell_words(inner)
        result.programs += nested.programs
        result.paths += nested.paths
    for words in _simple_commands(_tokens(text)):
        if words[0] == "for":
            continue  # a loop variable and its words, not programs
        position = 0
        while position < len(words) and (
            words[position] in _RESERVED or _ASSIGNMENT.fullmatch(words[position])
        ):
            position += 1
        result.paths += _path_words(words[:position])
        program_words = command_words(words[position:])
        result.programs += program_words.programs
        result.paths += program_words.paths
    return result


def command_words(argv: list[str]) -> ShellWords:
    """The programs and paths of one command line (``sh -c`` scripts and launchers followed)."""
    result = ShellWords(programs=[], paths=[])
    position = 0
    while position < len(argv):
        program = argv[position]
        result.programs.append(program)
        if posixpath.basename(program) not in _LAUNCHERS:
            break
        position += 1
        while position < len(argv) and (
            argv[position].startswith("-") or _ASSIGNMENT.fullmatch(argv[position])
        ):
            result.paths += _path_words(argv[position : position + 1])
            position += 1
    rest = argv[position + 1 :]
    if (
        posixpath.basename(argv[position] if position < len(argv) else "") in SHELLS
        and "-c" in rest
    ):
        script_at = rest.index("-c") + 1
        if script_at < len(rest):
            nested = shell_words(rest[script_at])
            result.programs += nested.programs
            result.paths += nested.paths
            # The script's own arguments ($1, ...; $0 is a name): a wrapper that runs "$@"
            # after N shifts runs the arguments from $N+1 on as a command.
            arguments = rest[script_at + 2 :]
            shifts = nested.programs.count("shift")
            if "$@" in nested.programs and len(arguments) > shifts:
                wrapped = command_words(arguments[shifts:])
                result.programs += wrapped.programs
                result.paths += wrapped.paths
                arguments = arguments[:shifts]
            result.paths += _path_words(arguments)
        return result
    result.paths += _path_words(rest)
    return result


def _command_line(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


def _identity_needs(entry: dict, where: str, working_dir_key: str) -> set[Need]:
    needs = {Need(kind, entry[kind], where) for kind in ("user", "group") if entry.get(kind)}
    if entry.get(working_dir_key):
        needs.add(Need("path", entry[working_dir_key], f"{where} working directory"))
    return needs


def _command_needs(argv: list[str], where: str, *, arguments_too: bool) -> set[Need]:
    words = command_words(argv)
    is_script = len(words.programs) > 1 or posixpath.basename(argv[0]) in SHELLS
    needs = {Need("program", program, where) for program in words.programs}
    if arguments_too or is_script:
        needs |= {Need("path", path, where) for path in words.paths}
    return needs


def _layer_needs(container: str, layer: dict) -> set[Need]:
    needs: set[Need] = set()
    for name, service in (layer.get("services") or {}).items():
        where = f"{container}: service {name}"
        if service.get("command"):
            needs |= _command_needs(_command_line(service["command"]), where, arguments_too=True)
        needs |= _identity_needs(service, where, "working-dir")
        for variable, value in (service.get("environment") or {}).items():
            needs |= {
                Need("path", path, f"{where} environment {variable}")
                for path in _path_words([value])
            }
    for name, check in (layer.get("checks") or {}).items():
        exec_check = check.get("exec") or {}
        if exec_check.get("command"):
            where = f"{container}: check {name}"
            command = _command_line(exec_check["command"])
            needs |= _command_needs(command, where, arguments_too=True)
            needs |= _identity_needs(exec_check, where, "working-dir")
    return needs


def _script_needs(container: str, path: str, content: str) -> set[Need]:
    where = f"{container}: script {path}"
    first = content.splitlines()[0] if content else ""
    interpreter = shlex.split(first[2:]) if first.startswith("#!") else ["/bin/sh"]
    needs = {Need("program", program, where) for program in interpreter[:1]}
    if interpreter and posixpath.basename(interpreter[0]) in SHELLS:
        words = shell_words(content)
        needs |= {Need("program", program, where) for program in words.programs}
        needs |= {Need("path", word, where) for word in words.paths}
    return needs


def needs_of_record(
    container: str, layers: list[dict], execs: list[dict], scripts: dict[str, str] | None = None
) -> set[Need]:
    """Everything one recorded run of the charm needs in ``container``."""
    needs: set[Need] = set()
    for layer in layers:
        needs |= _layer_needs(container, layer)
    for path, content in (scripts or {}).items():
        needs |= _script_needs(container, path, content)
    for record in execs:
        where = f"{container}: exec {shlex.join(record['command'])[:80]}"
        needs |= _command_needs(record["command"], where, arguments_too=False)
        needs |= _identity_needs(record, where, "working_dir")
    return needs
