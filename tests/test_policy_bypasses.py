"""Bypass attempts against the command policy, one table per class (issue 10, item 4).

Each row is something a prompt-injected agent would try; every one passed on the string
matcher this replaced. Also: the splitter and judge stay linear on pathological 64 KB lines.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from offload.policies import check_command, compile_policy
from offload.policies.environment import check_env_allowed

# -- assignment prefixes under an allow list -------------------------------------------------

ASSIGNMENTS = [
    ("echo=1 sh -c id", [r"^echo\b"]),
    ("pytest=1 id", [r"^pytest"]),
    ("echo=1 id", [r"^echo"]),
    ("MAKEFLAGS=--eval=x make", [r"^make\b", r"^MAKEFLAGS"]),
    ("echo=a echo=b id", [r"^echo\b"]),
    ("a[0]=1 echo hi", [r"^a\[", r"^echo"]),
    ("echo+=1 id", [r"^echo"]),
    ("make; PATH=/tmp echo x", [r"^make", r"^PATH", r"^echo"]),
    ("env GIT_CONFIG_COUNT=1 git status", [r"^env\b", r"^git status"]),
]


@pytest.mark.parametrize(("line", "allow"), ASSIGNMENTS)
def test_assignment_prefixes_are_refused_under_an_allow_list(line: str, allow: list[str]) -> None:
    decision = check_command(line, compile_policy(allow, []))
    assert not decision.allowed, line
    assert (
        "assign" in decision.reason or "not allowed" in decision.reason or "sets" in decision.reason
    )


# -- redirection targets ----------------------------------------------------------------------


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    workspace, home = tmp_path / "judged-ws", tmp_path / "judged-home"
    workspace.mkdir()
    home.mkdir()
    (workspace / "out").symlink_to(home / "config.toml")
    return workspace, home


REDIRECTS = [
    "echo x > {home}/config.toml",
    "echo x >> {home}/config.toml",
    "echo x >| {home}/config.toml",
    "echo x <> {home}/config.toml",
    "echo x 2> {home}/config.toml",
    "echo x 3<> {home}/db.sqlite",
    "echo x >&{home}/config.toml",
    "echo x &> {home}/config.toml",  # this row and the next: refused on main too, by luck
    ">{home}/config.toml echo x",
    "echo x>{home}/config.toml",
    "{{ echo x; }} > {home}/config.toml",
    "(echo x) > {home}/config.toml",
    "for a in b; do echo x; done > {home}/config.toml",
    "echo x > out",  # a link in the workspace into the data dir
    "echo x > ../judged-home/config.toml",
    "echo x > /etc/passwd",
    "echo x > $OFFLOAD_HOME/config.toml",
    "echo x > ~/.bashrc",
    "echo x > ${{HOME}}/.profile",
    "echo x > $(echo /etc/passwd)",
    "echo x > *.toml",
    "echo x > `echo a`",
    "cd /etc && echo x > passwd",
    "echo x < {home}/api_token",
]


@pytest.mark.parametrize("template", REDIRECTS)
def test_redirections_outside_the_workspace_are_refused(
    template: str, roots: tuple[Path, Path]
) -> None:
    workspace, home = roots
    policy = compile_policy([r"^echo\b", r"^cd\b"], [], roots=[workspace], forbidden=[home])
    line = template.format(home=home)
    decision = check_command(line, policy, cwd=workspace)
    assert not decision.allowed, line
    assert "redirection" in decision.reason or "not allowed" in decision.reason


@pytest.mark.parametrize(
    "line", ["echo x > built.txt", "echo x 2>/dev/null >> log.txt", "echo x >&2", "echo 2>&1 x"]
)
def test_redirections_inside_the_workspace_pass(line: str, roots: tuple[Path, Path]) -> None:
    workspace, home = roots
    policy = compile_policy([r"^echo\b"], [], roots=[workspace], forbidden=[home])
    assert check_command(line, policy, cwd=workspace).allowed, line


def test_the_data_dir_is_refused_even_without_an_allow_list(roots: tuple[Path, Path]) -> None:
    workspace, home = roots
    policy = compile_policy([], [], roots=[workspace], forbidden=[home])
    decision = check_command(f"echo x > {home}/config.toml", policy, cwd=workspace)
    assert not decision.allowed and "data directory" in decision.reason
    assert check_command("echo x > /tmp/anywhere", policy, cwd=workspace).allowed


# -- the env allow list -------------------------------------------------------------------------

DANGEROUS_ENV = [
    "MAKEFLAGS",
    "PYTHONWARNINGS",
    "BROWSER",
    "GIT_CONFIG_COUNT",
    "GIT_CONFIG_KEY_0",
    "GIT_SSH_COMMAND",
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "NODE_OPTIONS",
    "PERL5OPT",
    "RUBYOPT",
    "JAVA_TOOL_OPTIONS",
    "PAGER",
    "GIT_PAGER",
    "EDITOR",
    "PYTEST_ADDOPTS",
    "PROMPT_COMMAND",
]


@pytest.mark.parametrize("name", DANGEROUS_ENV)
def test_env_names_off_the_allow_list_are_refused(name: str) -> None:
    reason = check_env_allowed([name])
    assert reason is not None and name in reason and "env_allow" in reason


@pytest.mark.parametrize("name", ["LANG", "LC_ALL", "LC_MESSAGES", "TZ", "TERM", "NO_COLOR", "CI"])
def test_harmless_env_names_pass(name: str) -> None:
    assert check_env_allowed([name]) is None


def test_env_allow_setting_widens_the_env_allow_list() -> None:
    assert check_env_allowed(["MY_FLAG"], ["MY_*"]) is None
    assert check_env_allowed(["MAKEFLAGS"], ["MY_*"]) is not None


# -- the deny list on normalised argv ---------------------------------------------------------

DENY_RM = [
    "rm -r -f /",
    "rm -fr /",
    "rm -f -r /",
    "rm -Rf /",
    "rm --recursive --force /",
    "rm -rvf /",
    "rm -v -r -i -f /",
    "/bin/rm -r -f /",
    "/usr/bin/rm -r -f x",
    "\\rm -r -f /",
    "'rm' -f -r /",
    'r"m" -fr /',
    "x=rm; $x -rf /",
    "$(echo rm) -rf /",
    "`echo rm` -rf /",
    "${RM:-rm} -rf /",
    "eval rm -r -f /",
    "eval 'rm -fr /'",
    "exec rm -r -f /",
    "env rm -r -f /",
    "env -i FOO=1 rm -fr /",
    "command rm -r -f /",
    "builtin command rm -r -f /",
    "sudo rm -r -f /",
    "sudo -u root rm -r -f /",
    "nice -n 5 rm -r -f /",
    "timeout 5 rm -r -f /",
    "timeout -s KILL 5 rm -r -f /",
    "nohup rm -r -f / &",
    "busybox rm -r -f /",
    "sh -c 'rm -r -f /'",
    "bash -ec 'cd / && rm -fr x'",
    "sh -c \"sh -c 'rm -r -f /'\"",
    "echo / | xargs rm -r -f",
    "echo / | xargs rm",
    "find / -exec rm -r -f {} +",
    "find . -delete -o -execdir rm {} ;",
    "echo 'rm -r -f /' | sh",
    "watch rm -r -f /",
    "su -c 'rm -r -f /'",
    "flock /tmp/l -c 'rm -r -f /'",
    "time rm -r -f /",
    "stdbuf -o0 rm -r -f /",
    "setsid rm -r -f /",
]


@pytest.mark.parametrize("line", DENY_RM)
def test_the_deny_list_matches_normalised_argv(line: str) -> None:
    decision = check_command(line, compile_policy([], ["rm -rf"]))
    assert not decision.allowed, line


@pytest.mark.parametrize(
    ("line", "deny"),
    [
        ("git push -f origin main", ["git push --force"]),
        ("git push origin main --force", ["git push --force"]),
        ("/usr/bin/git -c x=y push --force", ["git push --force"]),
        ("chmod --recursive 777 /", ["chmod -R 777"]),
    ],
)
def test_the_deny_list_matches_flags_in_any_spelling(line: str, deny: list[str]) -> None:
    assert not check_command(line, compile_policy([], deny)).allowed, line


@pytest.mark.parametrize(
    "line",
    ["rm build.log", "rm -f build.log", "echo rm -f -r /", "git status", "make -j4", "ls -rf"],
)
def test_the_deny_list_leaves_other_commands_alone(line: str) -> None:
    assert check_command(line, compile_policy([], ["rm -rf"])).allowed, line


# -- wrappers under an allow list ----------------------------------------------------------------

WRAPPED = [
    ("xargs sh -c id", [r"^xargs\b"]),
    ("find . -exec id ;", [r"^find\b"]),
    ("env id", [r"^env\b"]),
    ("nice id", [r"^nice\b"]),
    ("sh -c 'pytest; id'", [r"^sh -c", r"^pytest"]),
    ("timeout 5 $CMD", [r"^timeout\b"]),
    ("$X", [r"^\$X"]),
]


@pytest.mark.parametrize(("line", "allow"), WRAPPED)
def test_commands_inside_allowed_wrappers_must_be_allowed_too(line: str, allow: list[str]) -> None:
    assert not check_command(line, compile_policy(allow, [])).allowed, line


def test_allowed_wrappers_of_allowed_commands_pass() -> None:
    policy = compile_policy([r"^(timeout|nice|pytest)\b"], [])
    assert check_command("timeout 60 nice -n 5 pytest -q", policy).allowed


# -- the splitter and judge are linear ------------------------------------------------------------

SIZE = 65_000
PATHOLOGICAL = [
    "echo " + "{" * SIZE,
    "echo " + "}" * SIZE,
    "{ echo " + "}" * SIZE,
    "echo " + "$(" * 30 + "x" * SIZE,
    "echo " + "'a' " * (SIZE // 4),
    'echo "' + "\\\\" * (SIZE // 2) + '"',
    "echo " + "\\\n" * (SIZE // 2),
    "if " * (SIZE // 3) + "echo",
    "for a do " * (SIZE // 9) + "echo",
    "cat <<EOF\n" + "$(x)\n" * (SIZE // 5) + "EOF\n",
    "cat " + "<<EOF " * 2000 + "\n" + "EOF\n" * 2000,
    "echo " + "${a:-" * 30 + "b" * SIZE,
    "echo " + "a=b " * (SIZE // 4),
    "x " + "-rf " * (SIZE // 4),
    "echo " + "`" * SIZE,
    "echo a" + " | a" * (SIZE // 4),
    "echo " + "$((" * 20 + "1" * SIZE,
]


@pytest.mark.slow
@pytest.mark.parametrize("line", PATHOLOGICAL, ids=[repr(p[:24]) for p in PATHOLOGICAL])
def test_a_64_kb_command_is_judged_in_well_under_half_a_second(line: str) -> None:
    policy = compile_policy([r"^echo\b", r"^cat\b"], ["rm -rf", r"curl .*\|\s*sh"])
    spent = 1e9
    for _ in range(3):  # the best of three: other work on a busy machine costs us CPU too
        started = time.process_time()
        decision = check_command(line, policy)
        spent = min(spent, time.process_time() - started)
    assert isinstance(decision.allowed, bool)
    assert spent < 0.5, f"{spent:.3f} s of CPU for {line[:24]!r}"


def test_the_issues_64_kb_of_braces_is_judged_fast() -> None:
    started = time.process_time()
    check_command("echo " + "{" * SIZE, compile_policy([r"^echo\b"], ["rm -rf"]))
    assert time.process_time() - started < 0.5  # 9 s before the splitter was linear


def test_a_line_of_too_many_commands_is_refused_with_the_fix() -> None:
    decision = check_command("true;" * 5000, compile_policy([], []))
    assert not decision.allowed and "put them in a script" in decision.reason
