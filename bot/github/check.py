"""`remediator github check`: can the bot file issues in GITHUB_REPO with GITHUB_TOKEN?

One line per question, in the order they depend on each other: reach (does GITHUB_API_URL
answer as GitHub's API?), token (does GitHub accept it?), repo (does the repository exist for
this token, with issues enabled?), issues and labels (may the token create them?).

The last two change nothing: they POST an empty body. GitHub checks the token's permission
before it validates the body, so 422 ("Validation Failed": no title, no name) means "allowed"
and 403 ("Resource not accessible by personal access token") means "not allowed".
"""

from __future__ import annotations

from collections.abc import Callable

from bot.github.api import FailureKind, GitHubClient, GitHubError
from bot.http_jobs import CheckLine, rendered, skipped

TOKEN_HELP = ("create a fine-grained token (GitHub → Settings → Developer settings → Fine-grained tokens) for "
              "the repository with Issues: read and write")
NAMES = ("reach", "token", "repo", "issues", "labels")


CHECK_COLUMN = 8  # `labels:` and a space


async def check_api(client: GitHubClient, repo: str, redact: Callable[[str], str]) -> list[CheckLine]:
    try:
        status, said = await client.status_of("GET", "/user")
    except GitHubError as error:
        return [CheckLine("reach", False, redact(f"{client.api_url} gave no answer ({error}): is GITHUB_API_URL "
                                                 "GitHub's API (https://api.github.com, or https://HOST/api/v3)?")),
                *skipped("reach", NAMES[1:])]
    if status not in (200, 401, 403):
        return [CheckLine("reach", False, redact(f"{client.api_url}/user answered {status} {said}: is GITHUB_API_URL "
                                                 "GitHub's API (https://api.github.com, or https://HOST/api/v3)?")),
                *skipped("reach", NAMES[1:])]
    lines = [CheckLine("reach", True, f"{client.api_url} answers as GitHub's API")]
    if status == 401:
        lines.append(CheckLine("token", False, redact(f"GitHub does not accept GITHUB_TOKEN (401 {said}): "
                                                      f"{TOKEN_HELP}")))
        return lines + skipped("token", NAMES[2:])
    who = ""
    if status == 200:
        try:
            who = f" (signed in as {(await client.user()).login})"
        except GitHubError:
            who = ""
    lines.append(CheckLine("token", True, f"accepted{who}"))

    try:
        repository = await client.repository(repo)
    except GitHubError as error:
        if error.kind is FailureKind.NOT_FOUND:
            text = f"{repo} not found (404): check GITHUB_REPO (owner/name) and the token's repository access"
        else:
            text = f"{repo} could not be read ({error})"
        return lines + [CheckLine("repo", False, redact(text)), *skipped("repo", NAMES[3:])]
    if not repository.has_issues:
        return lines + [CheckLine("repo", False, f"{repository.full_name} has issues turned off (Settings → "
                                                 "Features → Issues)"), *skipped("repo", NAMES[3:])]
    archived = " (archived: GitHub refuses new issues)" if repository.archived else ""
    lines.append(CheckLine("repo", not repository.archived, f"{repository.full_name} exists{archived}"))
    lines.append(await _probe(client, "issues", f"/repos/{repo}/issues", "file issues", redact))
    lines.append(await _probe(client, "labels", f"/repos/{repo}/labels", "create the labels it needs", redact))
    return lines


async def _probe(client: GitHubClient, name: str, path: str, gives: str, redact: Callable[[str], str]) -> CheckLine:
    try:
        status, said = await client.status_of("POST", path, {})
    except GitHubError as error:
        return CheckLine(name, False, redact(f"GitHub stopped answering ({error})"))
    if status == 422:
        return CheckLine(name, True, f"the token may {gives}")
    if status in (403, 404):
        return CheckLine(name, False, redact(f"the token may not {gives} ({status} {said}): it needs Issues: read "
                                             "and write on this repository"))
    return CheckLine(name, False, redact(f"unexpected answer {status} {said}".rstrip()))


async def run_check(api_url: str, token: str, repo: str, timeout_s: float,
                    redact: Callable[[str], str]) -> tuple[list[str], bool]:
    """The lines to print and whether everything works."""
    client = GitHubClient(api_url, token, timeout_s=timeout_s)
    try:
        lines = await check_api(client, repo, redact)
    finally:
        await client.aclose()
    return rendered(lines, CHECK_COLUMN)
