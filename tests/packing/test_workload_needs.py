"""The reading of what a charm needs in its container: shell words, launchers, identities."""

from __future__ import annotations

import shlex

from tests.packing.workload_needs import Need, command_words, needs_of_record, shell_words


def test_a_script_names_its_programs_through_substitutions_redirections_and_assignments():
    script = (
        'set -eu\nrepo=/var/lib/x/git\nmkdir -p "$(dirname "$repo")" /var/lib/x/run\n'
        "i=$((i+1)); [ $i -ge 3 ] && exit 1\n"
        "{ ( until python3 -c 'import sys' http://h; do sleep 1; done ) >/dev/null 2>&1 & }\n"
        "PEBBLE_SOCKET=/charm/sock exec /usr/sbin/apache2 -f /var/lib/x/httpd.conf\n"
    )
    words = shell_words(script)
    assert words.programs == [
        "dirname",
        "set",
        "mkdir",
        "[",
        "exit",
        "python3",
        "sleep",
        "exec",
        "/usr/sbin/apache2",
    ]
    assert set(words.paths) == {
        "/var/lib/x/git",
        "/var/lib/x/run",
        "/charm/sock",
        "/var/lib/x/httpd.conf",
    }


def test_case_patterns_and_comments_are_not_programs():
    script = (
        "#!/bin/sh\n# a comment naming /not/a/program\n"
        'case "$1" in\nrefs/tags/*)\n    echo tag >&2\n    ;;\n'
        "heads/*|main) /usr/bin/true ;;\nesac\n"
    )
    assert shell_words(script).programs == ["echo", "/usr/bin/true"]


def test_launchers_and_wrappers_run_the_command_they_are_given():
    assert command_words(["env", "A=/x", "/charm/bin/pebble", "notify", "k"]).programs == [
        "env",
        "/charm/bin/pebble",
    ]
    wrapper = 'dir="$1"; shift; . "$dir/env" && "$@" >"$dir/out"; exit 0'
    argv = ["/bin/sh", "-c", wrapper, "job", "/var/lib/x/jobs/1", "/bin/sh", "-c", "git fetch"]
    words = command_words(argv)
    assert {"/bin/sh", "git"} <= set(words.programs)
    assert "/var/lib/x/jobs/1" in words.paths
    assert not [path for path in words.paths if " " in path]


def test_a_record_gives_programs_paths_and_identities():
    layer = {
        "services": {
            "web": {
                "command": shlex.join(["/bin/sh", "-c", ". /data/env && exec web --root /srv"]),
                "user": "_daemon_",
                "group": "_daemon_",
                "working-dir": "/data",
                "environment": {"CONFIG": "/data/web.ini", "MODE": "fast"},
            }
        },
        "checks": {"alive": {"exec": {"command": "/usr/bin/curl -f http://localhost"}}},
    }
    execs = [
        {"command": ["/bin/tool", "import", "/home/user/file"], "user": None, "group": None,
         "working_dir": "/data/work", "environment": {}}
    ]  # fmt: skip
    scripts = {"/data/hook": "#!/bin/sh\ngit update-server-info\n"}
    needs = needs_of_record("box", [layer], execs, scripts)
    values = {(need.kind, need.value) for need in needs}
    assert {
        ("program", "/bin/sh"),
        ("program", "web"),
        ("program", "/usr/bin/curl"),
        ("program", "/bin/tool"),
        ("program", "git"),
        ("user", "_daemon_"),
        ("group", "_daemon_"),
        ("path", "/data"),
        ("path", "/srv"),
        ("path", "/data/web.ini"),
        ("path", "/data/work"),
    } <= values
    # An exec'd command's arguments may be an action's parameters: not the charm's paths.
    assert ("path", "/home/user/file") not in values
    assert Need("program", "web", "box: service web") in needs
