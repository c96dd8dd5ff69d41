"""The packing device's own rules, checked fast: no compilers on PATH, the right Python."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tools.pack_charms import compiler_free_path, find_python, is_compiler


@pytest.mark.parametrize(
    "program",
    [
        "cc",
        "c++",
        "gcc",
        "gcc-12",
        "g++",
        "g++-13",
        "cpp-12",
        "clang",
        "clang-15",
        "clang++",
        "x86_64-linux-gnu-gcc-12",
        "x86_64-linux-gnu-ld",
        "aarch64-linux-gnu-g++",
        "rustc",
        "cargo",
        "rustup",
    ],
)
def test_compilers_are_recognised(program: str):
    assert is_compiler(program)


@pytest.mark.parametrize(
    "program",
    ["python3", "python3.12", "git", "apt-get", "dpkg", "sh", "env", "ccache-free", "tar"],
)
def test_other_programs_are_not_compilers(program: str):
    assert not is_compiler(program)


def test_compiler_free_path_has_python_but_no_compiler(tmp_path: Path):
    path = compiler_free_path(tmp_path / "bin", Path(sys.executable))
    programs = {entry.name: entry for entry in Path(path).iterdir()}
    assert not [name for name in programs if is_compiler(name)]
    assert programs["python3"].resolve() == Path(sys.executable).resolve()
    assert programs["python3.12"].resolve() == Path(sys.executable).resolve()
    assert {"sh", "env"} <= programs.keys()


def test_a_python_of_the_wrong_version_is_refused_with_the_reason(monkeypatch):
    monkeypatch.setenv("PARTS_PYTHON_INTERPRETER", sys.executable)
    wrong = (sys.version_info.major, sys.version_info.minor + 1)
    with pytest.raises(SystemExit, match="is not a working Python"):
        find_python(wrong)


def test_no_python_of_the_version_is_an_error_naming_what_was_tried(monkeypatch, tmp_path):
    monkeypatch.delenv("PARTS_PYTHON_INTERPRETER", raising=False)
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SystemExit, match=r"no Python 2\.9 here \(tried .*\).*pyenv install"):
        find_python((2, 9))


def test_this_interpreter_is_found_by_its_version(monkeypatch):
    monkeypatch.setenv("PARTS_PYTHON_INTERPRETER", sys.executable)
    found = find_python((sys.version_info.major, sys.version_info.minor))
    assert found.resolve() == Path(sys.executable).resolve()
