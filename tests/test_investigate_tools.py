"""Claude's read-only tools over REPO_PATH: every way out of the repository is refused, secret files
are never shown, outputs are redacted and capped. A real git repository, built here."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bot.investigate.tools import MAX_GREP_LINES, MAX_OUTPUT, MAX_READ_LINES, RepoTools

SECRET = "s3cr3t-DO-NOT-LEAK"
OUTSIDE = "outside-the-repository"


def _redact(text: str) -> str:
    return text.replace("hunter2", "[REDACTED]")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "notes.txt").write_text(f"{OUTSIDE}\n")
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    (root / "config").mkdir()
    (root / "keys").mkdir()
    (root / "src" / "app.py").write_text("def main():\n    password = 'hunter2'\n    return 1 / 0\n")
    (root / "src" / "many.py").write_text("".join(f"needle_{n} = {n}\n" for n in range(1000)))
    (root / "src" / "long.py").write_text(("x = '" + "y" * 300 + "'\n") * 2000)
    (root / "config" / ".env.production").write_text(f"API_TOKEN={SECRET}\n")  # tracked (a mistake): still refused
    (root / "keys" / "server.pem").write_text(f"-----BEGIN PRIVATE KEY-----\n{SECRET}\n")
    (root / ".gitignore").write_text(".env\nlocal.cfg\n")
    (root / "src" / "link_out.txt").symlink_to(outside / "notes.txt")
    (root / "linkdir").symlink_to(outside)
    (root / "src" / "inside_link.py").symlink_to("app.py")  # a symlink within the repository is fine
    env = {**os.environ, "GIT_AUTHOR_NAME": "Ann", "GIT_AUTHOR_EMAIL": "ann@example.com",
           "GIT_COMMITTER_NAME": "Ann", "GIT_COMMITTER_EMAIL": "ann@example.com"}
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True, env=env)
    subprocess.run(["git", "commit", "-q", "-m", "First"], cwd=root, check=True, env=env)
    (root / ".env").write_text(f"DB_PASSWORD={SECRET}\n")  # untracked and ignored
    (root / "local.cfg").write_text(f"token={SECRET}\n")  # ignored by git: refused though not secret-named
    return root


@pytest.fixture
def tools(repo: Path) -> RepoTools:
    return RepoTools(repo, _redact)


ESCAPES = ["../outside/notes.txt", "/etc/passwd", "src/../../outside/notes.txt", "src/link_out.txt",
           "linkdir/notes.txt", "linkdir", ".git/config", ".git/HEAD", ".git", "src/../.git/config", ".env",
           "config/.env.production", "keys/server.pem", ":(top)src/app.py", "--output=/tmp/x", "-n", "~/notes.txt",
           "C:/Windows/win.ini", "src\\..\\..\\outside\\notes.txt", "src/app.py\0", "local.cfg"]


def _calls(path: str) -> list[tuple[str, dict[str, object]]]:
    return [
        ("read_file", {"path": path}),
        ("grep", {"pattern": "a", "path": path}),
        ("list_dir", {"path": path}),
        ("git_log", {"path": path}),
        ("git_show", {"commit": "HEAD", "path": path}),
        ("git_blame", {"path": path, "start_line": 1}),
    ]


@pytest.mark.parametrize("path", ESCAPES)
async def test_every_path_escape_is_refused_by_every_tool(tools: RepoTools, path: str) -> None:
    for name, args in _calls(path):
        result = await tools.call(name, args)
        assert SECRET not in result.text and OUTSIDE not in result.text, (name, path)  # never content
        if path == "local.cfg" and name in ("grep", "git_log", "git_show"):
            continue  # git knows nothing of an ignored file: an empty answer, no refusal needed
        # Refused as outside, secret or git's own; or (a file named as a directory…) an error all the same.
        assert result.is_error, (name, path, result.text)


async def test_secrets_never_come_out_of_git_or_directory_listings(tools: RepoTools) -> None:
    grep = await tools.call("grep", {"pattern": SECRET})
    assert grep.text == "no match"  # .env.production and server.pem are tracked, but left out
    show = await tools.call("git_show", {"commit": "HEAD"})
    assert not show.is_error and "src/app.py" in show.text
    assert SECRET not in show.text and ".env.production" not in show.text and "server.pem" not in show.text
    listing = await tools.call("list_dir", {"path": "."})
    entries = listing.text.splitlines()[1:]
    assert "src/" in entries and ".gitignore" in entries and ".git/" not in entries and ".env" not in entries
    assert ".env.production" not in (await tools.call("list_dir", {"path": "config"})).text
    # A blob named by <commit>:<path> is not a commit: refused before git sees it.
    for commit in ("HEAD:config/.env.production", "HEAD --output=/tmp/x", "--all", "main", "HEAD@{1}", ""):
        refused = await tools.call("git_show", {"commit": commit})
        assert refused.is_error and SECRET not in refused.text, commit
    assert (await tools.call("grep", {"pattern": r"(a)\1", "regex": True})).is_error  # back-references


async def test_outputs_are_redacted_and_capped(tools: RepoTools) -> None:
    read = await tools.call("read_file", {"path": "src/app.py"})
    assert "return 1 / 0" in read.text and "hunter2" not in read.text and "[REDACTED]" in read.text
    assert "password = '[REDACTED]'" in (await tools.call("grep", {"pattern": "password"})).text
    assert "hunter2" not in (await tools.call("git_show", {"commit": "HEAD", "path": "src/app.py"})).text
    assert "hunter2" not in (await tools.call("git_blame", {"path": "src/app.py", "start_line": 1})).text

    lines = (await tools.call("read_file", {"path": "src/many.py", "start_line": 1, "end_line": 5000})).text
    assert "needle_0 = 0" in lines and f"needle_{MAX_READ_LINES - 1} =" in lines and f"needle_{MAX_READ_LINES} =" not in lines
    grep = (await tools.call("grep", {"pattern": "needle_"})).text
    assert f"[{1000 - MAX_GREP_LINES} more matches not shown]" in grep
    assert len(grep.splitlines()) == MAX_GREP_LINES + 1
    long = (await tools.call("read_file", {"path": "src/long.py"})).text
    assert len(long) <= MAX_OUTPUT + 100 and "[output cut at" in long

    inside = await tools.call("read_file", {"path": "src/inside_link.py"})
    assert not inside.is_error and "return 1 / 0" in inside.text  # a symlink that stays inside is fine


async def test_bad_arguments_and_unknown_tools_are_tool_errors_not_exceptions(tools: RepoTools) -> None:
    for name, args in [("rm", {"path": "."}), ("read_file", {}), ("read_file", {"path": 7}),
                       ("read_file", "src/app.py"), ("grep", {"pattern": ""}), ("grep", {"pattern": "x" * 500}),
                       ("git_blame", {"path": "src/app.py", "start_line": "one"}),
                       ("git_blame", {"path": "src/app.py", "start_line": 900}), ("read_file", {"path": "nope.py"})]:
        result = await tools.call(name, args)
        assert result.is_error, (name, args)
    no_repo = RepoTools(None, _redact)
    assert "REPO_PATH is not set" in (await no_repo.call("read_file", {"path": "src/app.py"})).text


async def test_a_repo_path_inside_a_larger_repository_stays_within_its_folder(tmp_path: Path) -> None:
    mono = tmp_path / "mono"
    (mono / "app" / "src").mkdir(parents=True)
    (mono / "billing").mkdir()
    (mono / "app" / "src" / "main.py").write_text("print('app')\n")
    (mono / "billing" / "rates.py").write_text(f"RATE = '{OUTSIDE}'\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "Ann", "GIT_AUTHOR_EMAIL": "ann@example.com",
           "GIT_COMMITTER_NAME": "Ann", "GIT_COMMITTER_EMAIL": "ann@example.com"}
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=mono, check=True)
    subprocess.run(["git", "add", "-A"], cwd=mono, check=True, env=env)
    subprocess.run(["git", "commit", "-q", "-m", "Both"], cwd=mono, check=True, env=env)
    tools = RepoTools(mono / "app", _redact)
    assert (await tools.call("grep", {"pattern": OUTSIDE})).text == "no match"
    assert (await tools.call("grep", {"pattern": "print"})).text == "src/main.py:1:print('app')"
    show = (await tools.call("git_show", {"commit": "HEAD"})).text
    assert "src/main.py" in show and "rates.py" not in show and OUTSIDE not in show
    assert (await tools.call("read_file", {"path": "../billing/rates.py"})).is_error
