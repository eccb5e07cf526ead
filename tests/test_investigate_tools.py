"""Claude's read-only tools over REPO_PATH: every way out of the repository is refused, secret files
are never shown, outputs are redacted and capped. A real git repository, built here."""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bot.investigate.git import GitError, blame_line, git
from bot.investigate.tools import MAX_GREP_LINES, MAX_OUTPUT, MAX_READ_LINES, RepoTools, is_secret_name, regex_problem

SECRET = "s3cr3t-DO-NOT-LEAK"
OUTSIDE = "outside-the-repository"


def _redact(text: str) -> str:
    return text.replace("hunter2", "[REDACTED]")


def _build_repo(tmp_path: Path) -> Path:
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


@pytest.fixture(scope="module")
def shared_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once for the tests that only read it: the tools are read-only, and so are these tests."""
    return _build_repo(tmp_path_factory.mktemp("shared"))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository of its own, for a test that changes it."""
    return _build_repo(tmp_path)


@pytest.fixture
def tools(shared_repo: Path) -> RepoTools:
    return RepoTools(shared_repo, _redact)


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


# -- what the review found (issue 11) ----------------------------------------------------------------------

GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "Ann", "GIT_AUTHOR_EMAIL": "ann@example.com",
           "GIT_COMMITTER_NAME": "Ann", "GIT_COMMITTER_EMAIL": "ann@example.com"}


def _git(cwd: Path, *argv: str, stdin: str | None = None) -> str:
    return subprocess.run(["git", *argv], cwd=cwd, env=GIT_ENV, check=True, capture_output=True, text=True,
                          input=stdin).stdout.strip()


async def test_git_show_shows_commits_only_never_a_blob_or_a_tree(tmp_path: Path) -> None:
    """A bare object id may name a blob: a deleted secret, a secret-named file, a file outside REPO_PATH."""
    mono = tmp_path / "mono"
    (mono / "app").mkdir(parents=True)
    (mono / "billing").mkdir()
    (mono / "app" / "main.py").write_text("print('app')\n")
    (mono / "app" / ".env").write_text(f"DB_PASSWORD={SECRET}\n")
    (mono / "billing" / "rates.py").write_text(f"RATE = '{OUTSIDE}'\n")
    _git(mono, "init", "-q", "-b", "main")
    _git(mono, "add", "-A")
    _git(mono, "commit", "-q", "-m", "Both")
    ids = {"deleted secret": _git(mono, "rev-parse", "HEAD:app/.env"),
           "outside REPO_PATH": _git(mono, "rev-parse", "HEAD:billing/rates.py"),
           "the root tree": _git(mono, "rev-parse", "HEAD^{tree}")}
    _git(mono, "rm", "-q", "app/.env")
    _git(mono, "commit", "-q", "-m", "Remove the .env")
    tools = RepoTools(mono / "app", _redact)
    for what, object_id in ids.items():
        for commit in (object_id, object_id[:7]):
            result = await tools.call("git_show", {"commit": commit})
            assert result.is_error and "not a commit" in result.text, (what, result.text)
            assert SECRET not in result.text and OUTSIDE not in result.text and "billing" not in result.text
    show = await tools.call("git_show", {"commit": "HEAD~1"})  # a commit still works, within REPO_PATH
    assert not show.is_error and "main.py" in show.text and OUTSIDE not in show.text and SECRET not in show.text


async def test_read_file_refuses_when_git_cannot_tell_what_is_ignored(tmp_path: Path, shared_repo: Path) -> None:
    plain = tmp_path / "plain"
    shutil.copytree(shared_repo, plain, symlinks=True)
    shutil.rmtree(plain / ".git")  # REPO_PATH is not a git repository: .gitignore cannot be applied
    result = await RepoTools(plain, _redact).call("read_file", {"path": "local.cfg"})
    assert result.is_error and SECRET not in result.text
    assert "git cannot tell whether local.cfg is ignored" in result.text and "not a git repository" in result.text


@pytest.mark.skipif(os.geteuid() != 0, reason="giving the repository to another user needs root")
async def test_a_repository_owned_by_another_user_is_read_with_its_ignores(tmp_path: Path, repo: Path) -> None:
    """git refuses such a repository ("dubious ownership"); the operator chose REPO_PATH, so it is trusted by path,
    and its .gitignore still applies."""
    for folder in (repo, repo / ".git"):
        os.chown(folder, 12345, 12345)
    tools = RepoTools(repo, _redact)
    assert (await tools.call("grep", {"pattern": "def main"})).text == "src/app.py:1:def main():"
    ignored = await tools.call("read_file", {"path": "local.cfg"})
    assert ignored.is_error and "ignored by git" in ignored.text and SECRET not in ignored.text


async def test_a_symlink_to_an_ignored_file_or_folder_is_refused(repo: Path) -> None:
    (repo / "private").mkdir()
    (repo / "private" / "prod.yaml").write_text(f"api: {SECRET}\n")
    (repo / ".gitignore").write_text(".env\nlocal.cfg\nprivate/\n")
    (repo / "notes.txt").symlink_to("local.cfg")  # tracked link, ignored target
    (repo / "conf").symlink_to("private")  # tracked link to an ignored folder
    (repo / "fresh.py").write_text("x = 1\n")
    (repo / "fresh_link.py").symlink_to("fresh.py")  # untracked target
    _git(repo, "add", ".gitignore", "notes.txt", "conf", "fresh_link.py")
    _git(repo, "commit", "-q", "-m", "Links")
    tools = RepoTools(repo, _redact)
    for path in ("notes.txt", "conf/prod.yaml", "fresh_link.py"):
        result = await tools.call("read_file", {"path": path})
        assert result.is_error and "symlink to a file git ignores or does not track" in result.text, path
        assert SECRET not in result.text
    assert not (await tools.call("read_file", {"path": "fresh.py"})).is_error  # untracked, not ignored: fine
    assert "return 1 / 0" in (await tools.call("read_file", {"path": "src/inside_link.py"})).text


def _marked(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A program that leaves a mark when run (and then behaves as cat or fails): (program, mark)."""
    mark = tmp_path / f"RAN-{name}"
    program = tmp_path / f"{name}.sh"
    program.write_text(f"#!/bin/sh\ntouch {mark}\ncat \"$1\" 2>/dev/null\nexit 1\n")
    program.chmod(0o755)
    return program, mark


async def test_the_repositorys_own_config_cannot_make_git_run_a_program(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("def main():\n    return 1 / 0\n")
    (root / ".gitattributes").write_text("*.py diff=pwn\n")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "first")
    (root / "src" / "app.py").write_text("def main():\n    return 2 / 0\n")
    _git(root, "add", "-A")
    signed = (f"tree {_git(root, 'write-tree')}\nparent {_git(root, 'rev-parse', 'HEAD')}\n"
              "author Ann <a@e.com> 1700000000 +0000\ncommitter Ann <a@e.com> 1700000000 +0000\n"
              "gpgsig -----BEGIN PGP SIGNATURE-----\n \n AAAA\n -----END PGP SIGNATURE-----\n\nsigned\n")
    _git(root, "update-ref", "HEAD", _git(root, "hash-object", "-t", "commit", "-w", "--stdin", stdin=signed))
    textconv, textconv_ran = _marked(tmp_path, "textconv")
    gpg, gpg_ran = _marked(tmp_path, "gpg")
    external, external_ran = _marked(tmp_path, "external")
    for key, value in [("diff.pwn.textconv", textconv), ("log.showSignature", "true"), ("gpg.program", gpg),
                       ("diff.external", external), ("core.pager", external)]:
        _git(root, "config", key, str(value))
    tools = RepoTools(root, _redact)
    for name, args in [("git_blame", {"path": "src/app.py", "start_line": 1}), ("git_log", {}),
                       ("git_show", {"commit": "HEAD"}), ("git_log", {"path": "src/app.py"})]:
        result = await tools.call(name, args)
        assert not result.is_error and ("Ann" in result.text or "return 2 / 0" in result.text), (name, result.text)
    assert (await blame_line(root, "src/app.py", 2)) is not None  # the key-free findings use the same runner
    assert not textconv_ran.exists() and not gpg_ran.exists() and not external_ran.exists()
    # Nor print a file it names: blame quotes the first line of its ignore-revs file that is not a sha.
    (tmp_path / "outside.txt").write_text(f"{OUTSIDE}\n")
    _git(root, "config", "blame.ignoreRevsFile", str(tmp_path / "outside.txt"))
    blame = await tools.call("git_blame", {"path": "src/app.py", "start_line": 1})
    assert blame.is_error and OUTSIDE not in blame.text and "invalid object name (not shown)" in blame.text


@pytest.mark.parametrize(("pattern", "refused"), [
    ("((a{1,100}){1,100}){1,100}", "repeat counts above 32"),
    ("((a{1,9}){1,9}){1,9}", "may not be nested"),
    ("(a+){2}", "may not be nested"),
    ("(a{2})*", "may not be nested"),
    ("a{2}{3}", "may not be nested"),
    ("x{,40}", "repeat counts above 32"),
    (r"(a)\1", "back-references"),
    (r"def \w+\(self", None),
    (r"[0-9]{4}-[0-9]{2}-[0-9]{2}", None),
    (r"(foo|bar)+baz", None),
    (r"[{(]a{1,9}\}", None),  # a bracket and an escaped brace are plain characters
    (r"price|cost", None),
])
def test_grep_regexes_that_would_explode_are_refused(pattern: str, refused: str | None) -> None:
    problem = regex_problem(pattern)
    assert (problem is None) if refused is None else (problem is not None and refused in problem), problem


async def test_an_exploding_regex_is_refused_and_git_cannot_use_gigabytes_anyway(
    tools: RepoTools, shared_repo: Path
) -> None:
    result = await tools.call("grep", {"pattern": "((a{1,100}){1,100}){1,100}", "regex": True})
    assert result.is_error and "repeat counts above 32" in result.text
    assert "src/app.py:1" in (await tools.call("grep", {"pattern": "def mai[n]", "regex": True})).text
    # Had one slipped through: git's address space is capped, so it fails fast instead of taking ~3 GB.
    started = time.monotonic()
    with pytest.raises(GitError, match="Memory exhausted|[Oo]ut of memory"):
        await git(shared_repo, "grep", "-E", "-e", "((a{1,100}){1,100}){1,100}", "--", ".")
    assert time.monotonic() - started < 5
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < 1024 * 1024  # KiB: under 1 GB at its peak


def _running(marker: str) -> list[int]:
    """Live processes whose command line holds the marker (zombies are dead)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in command and state != "Z":
            found.append(int(pid))
    return found


async def test_a_cancelled_git_call_leaves_no_git_running(shared_repo: Path) -> None:
    marker = f"sleep 30.{time.monotonic_ns() % 10**9:09d}"  # a sleep of a unique duration, run by git
    call = asyncio.create_task(git(shared_repo, "-c", f"alias.slow=!{marker}", "slow"))
    for _ in range(200):
        if _running(marker):
            break
        await asyncio.sleep(0.02)
    assert _running(marker), "git and its child started"
    call.cancel()  # what INVESTIGATE_MAX_SECONDS does to a tool call in flight
    # Bounded well below the sleep: a child left running holds git's pipes, and the call would
    # otherwise return only when that child ends by itself, 30 s later, and the test pass.
    await asyncio.wait({call}, timeout=5)
    returned, left = call.done(), _running(marker)
    for pid in left:  # (only when the test fails: not left behind for the next test)
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(asyncio.CancelledError):
        await call
    assert returned, f"the cancelled call waited for what git started: {left}"
    assert left == []  # git, and what it started, killed and reaped before the cancel returned


@pytest.mark.parametrize("path", [
    "infra/prod.tfvars", "deploy/service-account-prod.json", "home/.docker/config.json", "ops/.kube/config",
    "ops/.aws/credentials", "ops/.ssh/deploy_key", "ci/kubeconfig",
])
def test_secret_files_by_name_or_by_folder_are_recognised(path: str) -> None:
    assert is_secret_name(path)


@pytest.mark.parametrize("path", ["src/config.json", "src/config", "docs/ssh/setup.md", "app/settings.py"])
def test_ordinary_config_files_are_not_taken_for_secrets(path: str) -> None:
    assert not is_secret_name(path)
