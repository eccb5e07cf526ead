"""`remediator glitchtip check`: is GlitchTip's API usable with the configured token?

The first thing to run after setting GLITCHTIP_URL and GLITCHTIP_TOKEN. One line per question,
in the order they depend on each other: reach (does the URL answer as GlitchTip's API?), auth
(does GlitchTip know the token?), read (scope `event:read`: cards with details and live counts),
resolve (scope `event:write`: resolves written back). The scope probes ask for issue 0, which
never exists: GlitchTip checks the token's scope before it looks for the issue, so 404 means
"allowed" and 403 "not allowed", and the PUT changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from bot.glitchtip.api import GlitchTipClient, GlitchTipError
from bot.http_jobs import CheckLine, rendered, skipped
from bot.redact import Redactor

PROBE_ISSUE = "/api/0/issues/0/"
TOKEN_PAGE = "Profile → Auth Tokens"


CHECK_COLUMN = 9  # `resolve:` and a space


async def check_api(client: GlitchTipClient, redact: Callable[[str], str]) -> list[CheckLine]:
    lines: list[CheckLine] = []
    try:
        root = await client.root()
    except GlitchTipError as error:
        lines.append(CheckLine("reach", False, redact(f"{client.base_url}/api/0/ gave no usable answer ({error}): "
                                                      "is GLITCHTIP_URL GlitchTip's base URL?")))
        return lines + skipped("reach", ("auth", "read", "resolve"))
    lines.append(CheckLine("reach", True, f"{client.base_url} answers as GlitchTip's API"))

    try:
        read = await client.status_of("GET", PROBE_ISSUE)
        write = await client.status_of("PUT", PROBE_ISSUE, {"status": "resolved"})
    except GlitchTipError as error:
        lines.append(CheckLine("auth", False, redact(f"the API stopped answering ({error})")))
        return lines + skipped("auth", ("read", "resolve"))
    scopes = f" (scopes: {', '.join(root.auth.scopes)})" if root.auth and root.auth.scopes else ""
    if read == 401:
        lines.append(CheckLine("auth", False, f"GlitchTip does not know this token (401): create one under "
                                              f"{TOKEN_PAGE} and put it in GLITCHTIP_TOKEN"))
        return lines + skipped("auth", ("read", "resolve"))
    label = f" “{root.auth.label}”" if root.auth and root.auth.label else ""
    lines.append(CheckLine("auth", True, redact(f"the token{label} is accepted{scopes}")))
    lines.append(_scope_line("read", "event:read", read, "cards get GlitchTip's details and live counts"))
    lines.append(_scope_line("resolve", "event:write", write, "resolving here resolves the issue in GlitchTip"))
    return lines


def _scope_line(name: str, scope: str, status: int, gives: str) -> CheckLine:
    if status in (200, 404):
        return CheckLine(name, True, f"{scope}: {gives}")
    if status == 403:
        return CheckLine(name, False, f"the token lacks {scope} (403): create a token with event:read and "
                                      f"event:write under {TOKEN_PAGE}")
    return CheckLine(name, False, f"unexpected answer {status} to the {scope} probe")


async def run_check(base_url: str, token: str, timeout_s: float, redactor: Redactor) -> tuple[list[str], bool]:
    """The lines to print and whether everything works."""
    client = GlitchTipClient(base_url, token, timeout_s=timeout_s)
    try:
        lines = await check_api(client, redactor.redact)
    finally:
        await client.aclose()
    return rendered(lines, CHECK_COLUMN)
