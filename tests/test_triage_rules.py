"""Rules engine: modifiers, matching order, file validation, cause rendering, hostile input."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from bot.models import Alert, AlertKind, Category, Priority
from bot.triage import OwnerMap, RulesError, RuleSet
from bot.triage.rules import fold, render_cause


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return RuleSet.load()


def alert(title: str, stacktrace: str = "", **kw: object) -> Alert:
    return Alert(source="generic", kind=AlertKind.ERROR, title=title, fingerprint="fp", stacktrace=stacktrace, **kw)  # type: ignore[arg-type]


REDIS_DOWN = "redis.exceptions.ConnectionError: Error 111 connecting to 127.0.0.1:6379. Connection refused."
DISK_FULL = "OSError: [Errno 28] No space left on device"  # base P2
PG_DOWN = 'could not connect to server: Connection refused Is the server running on host "db"'  # base P0
CSRF = "ForbiddenError: invalid csrf token"  # base P3


# ----------------------------------------------------------------- the packaged file
def test_packaged_rules_load_and_ids_are_unique(rules: RuleSet) -> None:
    ids = [r.id for r in rules.rules]
    assert len(ids) == len(set(ids)) > 40
    assert {r.category for r in rules.rules} >= set(Category) - {Category.UNKNOWN}


def test_triage_fills_rule_id_source_and_cause(rules: RuleSet) -> None:
    t = rules.triage(alert(REDIS_DOWN))
    assert (t.category, t.priority, t.rule_id, t.source) == (
        Category.INFRASTRUCTURE,
        Priority.P1,
        "infra.redis-down",
        "rules",
    )
    assert "127.0.0.1:6379" in t.likely_cause and "\n" not in t.likely_cause
    assert t.owner is None and t.affected_users is None


# ------------------------------------------------------------------------ modifiers
@pytest.mark.parametrize(
    ("environment", "expected", "tag"),
    [
        (None, Priority.P2, None),
        ("production", Priority.P2, None),
        ("eu-prod-2", Priority.P2, None),  # unknown name = treated as production
        ("staging", Priority.P3, "env:staging"),
        ("Development", Priority.P3, "env:development"),
        ("dev", Priority.P3, "env:dev"),
        ("local", Priority.P3, "env:local"),
    ],
)
def test_environment_modifier(rules: RuleSet, environment: str | None, expected: Priority, tag: str | None) -> None:
    t = rules.triage(alert(DISK_FULL, environment=environment))
    assert t.priority == expected
    env_tags = [x for x in t.tags if x.startswith("env:")]
    assert env_tags == ([tag] if tag else [])


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("error", Priority.P2),
        (None, Priority.P2),
        ("fatal", Priority.P1),
        ("warning", Priority.P3),
        ("info", Priority.P3),  # P2 lowered by two, clamped at P3
    ],
)
def test_level_modifier(rules: RuleSet, level: str | None, expected: Priority) -> None:
    t = rules.triage(alert(DISK_FULL, level=level))
    assert t.priority == expected
    if expected != Priority.P2:
        assert f"level:{level}" in t.tags


def test_level_info_lowers_two_steps(rules: RuleSet) -> None:
    assert rules.triage(alert(REDIS_DOWN, level="info")).priority == Priority.P3  # P1 -> P3
    assert rules.triage(alert(REDIS_DOWN, level="debug")).priority == Priority.P3


def test_high_count_raises_one_step(rules: RuleSet) -> None:
    assert rules.triage(alert(DISK_FULL, count=99)).priority == Priority.P2
    t = rules.triage(alert(DISK_FULL, count=250))
    assert t.priority == Priority.P1
    assert "count:250" in t.tags


def test_never_beyond_p0_or_p3(rules: RuleSet) -> None:
    assert rules.triage(alert(PG_DOWN)).priority == Priority.P0
    assert rules.triage(alert(PG_DOWN, level="fatal", count=10_000)).priority == Priority.P0
    assert rules.triage(alert(CSRF)).priority == Priority.P3
    assert rules.triage(alert(CSRF, level="debug", environment="staging")).priority == Priority.P3


def test_modifiers_are_summed_then_clamped(rules: RuleSet) -> None:
    # P0 base, fatal (+1) and staging (-1) cancel out: still P0, not P1.
    t = rules.triage(alert(PG_DOWN, level="fatal", environment="staging"))
    assert t.priority == Priority.P0
    assert {"level:fatal", "env:staging"} <= set(t.tags)
    # P2 base, staging (-1) and high count (+1): P2.
    assert rules.triage(alert(DISK_FULL, environment="staging", count=500)).priority == Priority.P2


def test_uptime_down_is_p0_infrastructure_whatever_the_rest(rules: RuleSet) -> None:
    down = Alert(
        source="glitchtip",
        kind=AlertKind.UPTIME_DOWN,
        title="Booking API health",
        fingerprint="u",
        message="The monitored site has gone down.",
        level="warning",
    )
    t = rules.triage(down)
    assert (t.category, t.priority) == (Category.INFRASTRUCTURE, Priority.P0)
    assert "kind:uptime_down" in t.tags and t.rule_id == "kind.uptime_down"
    # even when the text looks like something else
    t2 = rules.triage(replace(down, title="AxiosError: Request failed with status code 429"))
    assert (t2.category, t2.priority) == (Category.INFRASTRUCTURE, Priority.P0)


def test_uptime_up_and_test_kinds(rules: RuleSet) -> None:
    up = Alert(source="glitchtip", kind=AlertKind.UPTIME_UP, title="Booking API health", fingerprint="u")
    assert rules.triage(up).priority == Priority.P3
    test = Alert(source="glitchtip", kind=AlertKind.TEST, title="Test notification", fingerprint="t")
    assert rules.triage(test).priority == Priority.P3


def test_affected_users_only_when_the_alert_says_so(rules: RuleSet) -> None:
    assert rules.triage(alert(DISK_FULL)).affected_users is None
    assert rules.triage(alert(DISK_FULL, tags={"users": "1,204"})).affected_users == "1,204"


# ------------------------------------------------------------------- matching order
def test_no_match_falls_back_to_unknown_p2(rules: RuleSet) -> None:
    t = rules.triage(alert("Something odd happened in the nightly report"))
    assert (t.category, t.priority, t.rule_id) == (Category.UNKNOWN, Priority.P2, None)
    assert "unclassified" in t.tags


def test_unrecognised_exception_class_is_low_confidence_code(rules: RuleSet) -> None:
    t = rules.triage(alert("InvoiceMismatchException: totals differ for order 881"))
    assert (t.category, t.rule_id) == (Category.CODE, "code.unhandled-exception")
    assert "low-confidence" in t.tags


def test_headline_wins_over_noise_in_the_stack(rules: RuleSet) -> None:
    stack = 'File "app/client.py", line 9, in call\n    except requests.Timeout:  # timed out\n'
    t = rules.triage(alert("TypeError: 'int' object is not subscriptable", stack))
    assert t.category == Category.CODE


def test_specific_cause_in_stack_beats_generic_wrapper_headline(rules: RuleSet) -> None:
    stack = (
        "TypeError: fetch failed\n    at node:internal/deps/undici/undici:12345:11\n"
        "  [cause]: Error: getaddrinfo ENOTFOUND api.payments.example\n"
    )
    t = rules.triage(alert("TypeError: fetch failed", stack))
    assert (t.category, t.rule_id) == (Category.CONFIGURATION, "config.dns")
    # with nothing more specific anywhere, the broad network fallback decides
    bare = rules.triage(alert("TypeError: fetch failed"))
    assert (bare.category, bare.rule_id) == (Category.TRANSIENT, "transient.network-generic")


@pytest.mark.parametrize(
    ("title", "category"),
    [
        # near-miss pairs: same words, different mechanism
        (
            "Error: Redis connection to 127.0.0.1:6379 failed - connect ECONNREFUSED 127.0.0.1:6379",
            Category.INFRASTRUCTURE,
        ),
        ("Error: Redis connection to cache:6379 failed - getaddrinfo ENOTFOUND cache", Category.CONFIGURATION),
        ("Error: ENOSPC: no space left on device, write", Category.RESOURCE),
        ("Error: ENOSPC: System limit for number of file watchers reached, watch '/app/src'", Category.CONFIGURATION),
        ("Error: Cannot find module 'lodash'", Category.DEPENDENCY),
        ("Error: Cannot find module './lib/helpers'", Category.CODE),
        ("openai.RateLimitError: Error code: 429 - {'error': {'code': 'insufficient_quota'}}", Category.CONFIGURATION),
        ("openai.RateLimitError: Error code: 429 - {'error': {'code': 'rate_limit_exceeded'}}", Category.TRANSIENT),
        ("KeyError: 'STRIPE_SECRET_KEY'", Category.CONFIGURATION),
        ("KeyError: 'user_id'", Category.CODE),
        ("ImportError: cannot import name 'soft_unicode' from 'markupsafe'", Category.DEPENDENCY),
        (
            "ImportError: cannot import name 'db' from partially initialized module 'app' "
            "(most likely due to a circular import)",
            Category.CODE,
        ),
        ("ConnectionError: Error 111 connecting to None:6379. Connection refused.", Category.CONFIGURATION),
        (
            "psycopg2.OperationalError: could not connect to server: No such file or directory\n"
            '\tIs the server running locally and accepting connections on Unix domain socket "/run/pg/.s.PGSQL.5432"?',
            Category.INFRASTRUCTURE,
        ),
        ("Error: Cannot find module 'next/dist/server/next'", Category.DEPENDENCY),
        ("Error: Cannot find module '@/lib/db'", Category.CODE),
        ("Error: Cannot find module '/srv/app/dist/main.js'", Category.CONFIGURATION),
        ("ModuleNotFoundError: No module named 'config.settings.production'", Category.CONFIGURATION),
        ("Error: connect ECONNREFUSED 34.120.5.5:443", Category.TRANSIENT),
        ("Error: connect ECONNREFUSED 10.0.3.7:8080", Category.INFRASTRUCTURE),
        ("OSError: [Errno 28] No space left on device: '/dev/shm/pg-123'", Category.CONFIGURATION),
        ("TypeError: Cannot read properties of undefined (reading 'redis')", Category.CODE),
        ("certificate verify failed: certificate has expired", Category.INFRASTRUCTURE),
        ("certificate verify failed: self-signed certificate in certificate chain", Category.CONFIGURATION),
    ],
)
def test_near_miss_pairs(rules: RuleSet, title: str, category: Category) -> None:
    assert rules.triage(alert(title)).category == category


def test_compose_localhost_is_configuration_not_infrastructure(rules: RuleSet) -> None:
    title = "MongoNetworkError: failed to connect to server [localhost:27017] on first connect"
    title += " [connect ECONNREFUSED 127.0.0.1:27017]"
    stack = (
        "api_1    | MongoNetworkError: connect ECONNREFUSED 127.0.0.1:27017\n"
        "api_1    |     at Pool.<anonymous> (/usr/src/app/node_modules/mongodb/lib/pool.js:562:11)\n"
    )
    assert rules.triage(alert(title, stack)).category == Category.CONFIGURATION
    # the same error outside docker compose: the local mongod is down
    plain = "    at Pool.<anonymous> (/srv/app/node_modules/mongodb/lib/pool.js:562:11)\n"
    assert rules.triage(alert(title, plain)).category == Category.INFRASTRUCTURE


def test_literal_prefilter_never_changes_a_result(rules: RuleSet) -> None:
    from tests.test_triage_corpus import EXTRA, load_corpus

    texts = [f"{c.title}\n{c.stacktrace}" for c in [*load_corpus(), *EXTRA]]
    for text in texts:
        folded = fold(text)
        for rule in rules.rules:
            assert bool(rule.search(text, text, folded)) == bool(rule.search(text, text)), (rule.id, text[:80])


# ------------------------------------------------------------------ bad rules files
GOOD_RULE = """
[fallback]
category = "unknown"
priority = "P2"
cause = "nothing matched"

[[rule]]
id = "demo.disk"
match = ['No space left']
category = "resource"
priority = "P2"
cause = "disk full"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_minimal_custom_file_loads(tmp_path: Path) -> None:
    rs = RuleSet.load(write(tmp_path, GOOD_RULE))
    assert rs.triage(alert("OSError: No space left on device")).rule_id == "demo.disk"


def test_custom_file_without_fallback_or_kinds_gets_safe_defaults(tmp_path: Path) -> None:
    rs = RuleSet.load(write(tmp_path, "[[rule]]" + GOOD_RULE.split("[[rule]]")[1]))
    assert rs.triage(alert("nothing known")).category == Category.UNKNOWN
    down = Alert(source="glitchtip", kind=AlertKind.UPTIME_DOWN, title="site", fingerprint="u")
    assert rs.triage(down).priority == Priority.P0


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (GOOD_RULE.replace('category = "resource"', 'category = "disk"'), ["demo.disk", "category", "'disk'"]),
        (GOOD_RULE.replace('priority = "P2"\ncause = "disk', 'priority = "P5"\ncause = "disk'), ["demo.disk", "P5"]),
        (GOOD_RULE.replace("'No space left'", "'No space (left'"), ["demo.disk", "match[0]", "invalid regex"]),
        (GOOD_RULE.replace("'No space left'", "'(a+)+b'"), ["demo.disk", "backtrack"]),
        (GOOD_RULE.replace('cause = "disk full"', 'cause = "disk {volume} full"'), ["demo.disk", "{volume}"]),
        (GOOD_RULE.replace('cause = "disk full"', 'cause = "disk {full"'), ["demo.disk", "stray"]),
        (GOOD_RULE.replace('cause = "disk full"', 'cause = ""'), ["demo.disk", "cause"]),
        (GOOD_RULE.replace("match = ", "exlude = ['x']\nmatch = "), ["demo.disk", "unknown key", "exlude"]),
        (GOOD_RULE.replace("match = ['No space left']", "match = []"), ["demo.disk", "match: must not be empty"]),
        (GOOD_RULE.replace("match = ['No space left']", "match = 'No space'"), ["demo.disk", "match: must be a list"]),
        (GOOD_RULE + "[[rule]]" + GOOD_RULE.split("[[rule]]")[1], ["demo.disk", "duplicate"]),
        (GOOD_RULE.replace('id = "demo.disk"', 'id = "Demo Disk"'), ["rule #1 ('Demo Disk').id:", "lowercase"]),
        (GOOD_RULE.split("[[rule]]")[0], ["rule: required", "[[rule]]"]),
        (GOOD_RULE.replace("[fallback]", "[fallbak]"), ["fallbak: unknown key (did you mean 'fallback'?)"]),
        (GOOD_RULE + "\n[modifiers.level]\nfatal = 'up'\n", ["modifiers", "fatal"]),
        (GOOD_RULE + "\n[kinds.uptime_sideways]\ncategory='code'\npriority='P1'\ncause='x'\n", ["uptime_sideways"]),
        (GOOD_RULE.replace("'No space left'", "'(a|a)*b'"), ["demo.disk", "match[0]", "backtrack"]),
        (GOOD_RULE.replace("match = ", "require = ['(x+x+)+y']\nmatch = "), ["require[0]", "backtrack"]),
        (GOOD_RULE + "\n[modifiers]\nhigh_count = 0\n", ["modifiers.high_count: must be 1 or more"]),
        ("[[rule]\nid = 1", ["invalid TOML"]),
    ],
)
def test_bad_rules_file_names_the_problem(tmp_path: Path, text: str, needles: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(RulesError) as info:
        RuleSet.load(path)
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_every_problem_of_a_rules_file_is_reported_at_once(tmp_path: Path) -> None:
    rule = GOOD_RULE.split("[[rule]]")[1]
    text = (
        GOOD_RULE.replace("'No space left'", "'(a+)+'")
        + "[[rule]]" + rule.replace("demo.disk", "demo.two").replace('priority = "P2"', 'priority = "P9"')
        + "[[rule]]" + rule.replace("demo.disk", "demo.three").replace("cause =", "cuase = 'x'\ncause =")
        + "\n[modifiers.environment]\nstaging = 7\n"
    )
    with pytest.raises(RulesError) as info:
        RuleSet.load(write(tmp_path, text))
    wheres = [p.split(": ")[1] for p in info.value.problems]
    assert wheres == [
        "modifiers.environment.staging",
        "rule #1 ('demo.disk').match[0]",
        "rule #2 ('demo.two').priority",
        "rule #3 ('demo.three').cuase",
    ]
    assert str(info.value).startswith("4 problem(s) in the rules file:")
    assert "did you mean 'cause'" in info.value.problems[3] and "'P9'" in info.value.problems[2]


def test_missing_rules_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read"):
        RuleSet.load(tmp_path / "nope.toml")


# ------------------------------------------------------------------- cause rendering
CAUSE_RULES = """
[fallback]
category = "unknown"
priority = "P2"
cause = "nothing matched"

[[rule]]
id = "demo.echo"
match = ['ECHO:(?P<value>[^\\n]{0,500})', 'ALT']
category = "code"
priority = "P2"
cause = "value was <{value|none}> {value|none}"
"""


@pytest.mark.parametrize(
    "value",
    [
        "{0}",
        "{value}",
        "{__class__.__init__.__globals__}",
        "%s %d %(x)s",
        "}{",
        "{",
        "\\x00",
        "\u202e\u0000\u2028evil",
        "x" * 400,
        "   ",
        "<b>html</b>",
    ],
)
def test_cause_substitution_never_crashes(tmp_path: Path, value: str) -> None:
    rs = RuleSet.load(write(tmp_path, CAUSE_RULES))
    t = rs.triage(alert(f"ECHO:{value}"))
    assert t.rule_id == "demo.echo"
    assert "\n" not in t.likely_cause and "\u2028" not in t.likely_cause and "\x00" not in t.likely_cause
    assert len(t.likely_cause) <= 300
    if value == "{value}":
        assert "<{value}>" in t.likely_cause  # inserted literally, never expanded again


def test_cause_default_used_when_group_absent(tmp_path: Path) -> None:
    rs = RuleSet.load(write(tmp_path, CAUSE_RULES))
    assert rs.triage(alert("ALT")).likely_cause == "value was <none> none"


def test_render_cause_without_a_match() -> None:
    assert render_cause("pkg {module} and {x|dflt}", None) == "pkg ? and dflt"


# -------------------------------------------------------------------- hostile input
HUGE_LINES = [
    "a" * 1_000_000,
    "'" * 1_000_000,
    "Cannot find module '" + "a/" * 500_000,
    "ECONNREFUSED " * 80_000,
    ('File "' + "x" * 300) * 3_000,
    "\tat " + "(" * 1_000_000,
    "Error" * 200_000,
    "host='" + "1" * 1_000_000,
]


@pytest.mark.parametrize("blob", HUGE_LINES, ids=lambda b: repr(b[:12]))
def test_huge_input_is_triaged(rules: RuleSet, blob: str) -> None:
    # The regexes are linear and the text is clipped: this returns promptly (a catastrophic
    # backtracking regex would hang here instead of failing).
    t = rules.triage(alert(DISK_FULL[:20] + blob[:1000], blob))
    assert t.source == "rules"
    assert t.category in set(Category)


def test_huge_python_traceback_still_finds_the_final_error(rules: RuleSet) -> None:
    frames = '  File "/srv/app/jobs/export.py", line 10, in run\n    do()\n' * 20_000  # ~1 MB
    stack = "Traceback (most recent call last):\n" + frames + DISK_FULL + "\n"
    assert len(stack) > 1_000_000
    t = rules.triage(alert("export failed", stack))
    assert t.category == Category.RESOURCE


def test_triage_uses_owner_map(rules: RuleSet, tmp_path: Path) -> None:
    owners_file = tmp_path / "owners.toml"
    owners_file.write_text(
        '[[owner]]\nname = "Dana"\ntelegram = "@dana"\ngithub = "dana"\npaths = ["jobs/*"]\n'
        '[[owner]]\nname = "Ops"\ntelegram = "@ops"\ncategories = ["resource"]\n',
        encoding="utf-8",
    )
    owners = OwnerMap.load(owners_file)
    stack = f'Traceback (most recent call last):\n  File "/srv/app/jobs/export.py", line 10, in run\n{DISK_FULL}'
    t = rules.triage(alert(DISK_FULL, stack), owners)
    assert t.owner is not None and t.owner.name == "Dana"
    t2 = rules.triage(alert(DISK_FULL), owners)
    assert t2.owner is not None and t2.owner.telegram == "@ops"
