"""Owners file: format validation, precedence, stack-trace paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.models import Category
from bot.triage import OwnerMap, OwnersError, RulesError

OWNERS = """
[[owner]]
name = "Default Dan"
telegram = "@oncall"
default = true

[[owner]]
name = "Cat"
telegram = "dba_cat"          # '@' is added
categories = ["database"]

[[owner]]
name = "Pat"
github = "pat-gh"
projects = ["ai-admin-api"]

[[owner]]
name = "Pat again"             # same rank as Pat, later in file: never wins
projects = ["AI-Admin-API"]

[[owner]]
name = "Pia"
telegram = "@pia"
projects = ["ai-admin-api"]
categories = ["database"]

[[owner]]
name = "Bill"
telegram = "@bill"
github = "bill"
paths = ["src/billing/*"]

[[owner]]
name = "Wendy"
telegram = "@wendy"
paths = ["web/"]
projects = ["shop"]
"""


@pytest.fixture
def owners(tmp_path: Path) -> OwnerMap:
    path = tmp_path / "owners.toml"
    path.write_text(OWNERS, encoding="utf-8")
    return OwnerMap.load(path)


def name(owners: OwnerMap, project: str | None, category: Category, paths: list[str] | None = None) -> str | None:
    owner = owners.find(project, category, paths or [])
    return owner.name if owner else None


def test_precedence_path_over_project_category_over_project_over_category(owners: OwnerMap) -> None:
    billing = ["/srv/app/src/billing/invoice.py"]
    assert name(owners, "ai-admin-api", Category.DATABASE, billing) == "Bill"
    assert name(owners, "ai-admin-api", Category.DATABASE) == "Pia"
    assert name(owners, "ai-admin-api", Category.CODE) == "Pat"
    assert name(owners, "other", Category.DATABASE) == "Cat"
    assert name(owners, None, Category.DATABASE) == "Cat"
    assert name(owners, "other", Category.CODE) == "Default Dan"


def test_every_declared_selector_must_match(owners: OwnerMap) -> None:
    web = ["/app/web/checkout.js"]
    assert name(owners, "shop", Category.CODE, web) == "Wendy"
    assert name(owners, "blog", Category.CODE, web) == "Default Dan"  # path matches, project does not


def test_handles_are_normalised(owners: OwnerMap) -> None:
    cat = owners.find("x", Category.DATABASE, [])
    assert cat is not None and cat.telegram == "@dba_cat"
    pat = owners.find("ai-admin-api", Category.CODE, [])
    assert pat is not None and (pat.telegram, pat.github) == (None, "pat-gh")


def test_no_owners_means_none(tmp_path: Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("", encoding="utf-8")
    assert OwnerMap.load(path).find("p", Category.CODE, ["a.py"]) is None


def test_paths_from_python_and_node_traces() -> None:
    stack = """Traceback (most recent call last):
  File "/srv/app/src/billing/invoice.py", line 12, in total
    return sum(x)
  File "/usr/local/lib/python3.11/site-packages/django/db/models/query.py", line 1, in get
  File "/usr/lib/python3.11/json/__init__.py", line 346, in loads
TypeError: boom
    at Object.handler (/app/src/routes/users.ts:41:13)
    at Layer.handle [as handle_request] (/app/node_modules/express/lib/router/layer.js:95:5)
    at process.processTicksAndRejections (node:internal/process/task_queues:95:5)
    at C:\\Users\\dev\\shop\\web\\cart.js:5:17
    at async file:///app/dist/main.mjs:10:3
    /usr/share/cnchi/src/pages/mirrors.py:294 - save_changes
"""
    assert OwnerMap.paths_from_stacktrace(stack) == [
        "/srv/app/src/billing/invoice.py",
        "/app/src/routes/users.ts",
        "C:/Users/dev/shop/web/cart.js",
        "/app/dist/main.mjs",
        "/usr/share/cnchi/src/pages/mirrors.py",
    ]


def test_paths_from_huge_or_empty_text() -> None:
    assert OwnerMap.paths_from_stacktrace("") == []
    assert OwnerMap.paths_from_stacktrace("x" * 1_000_000 + ".py:1") == []
    many = "\n".join(f"    at f (/app/src/m{i}.js:1:1)" for i in range(500))
    assert len(OwnerMap.paths_from_stacktrace(many)) == 50


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ('[[owner]]\ntelegram = "@a"\nprojects = ["x"]\n', ["owner #1.name: required"]),
        ('[[owner]]\nname = "A"\ncategories = ["db"]\n', ["owner #1 ('A')", "'db'"]),
        ('[[owner]]\nname = "A"\nproject = ["x"]\n', ["owner #1 ('A').project: unknown key", "'projects'"]),
        ('[[owner]]\nname = "A"\ntelegram = "@a"\n', ["owner #1 ('A')", "default = true"]),
        ('[[owner]]\nname = "A"\ntelegram = "not a handle"\nprojects = ["x"]\n', ["telegram"]),
        ('[[owner]]\nname = "A"\ngithub = "-bad-"\nprojects = ["x"]\n', ["github"]),
        ('[[owner]]\nname = "A"\npaths = "src/*"\n', ["paths: must be a list"]),
        ('[[owner]]\nname = "A"\ndefault = "yes"\n', ["default: must be true or false"]),
        ('[[owner]]\nname = " "\ndefault = true\n', ["owner #1.name: must not be empty"]),
        ('[owners]\nname = "A"\n', ["owners: unknown key (did you mean 'owner'?)"]),
        ("[[owner]\n", ["invalid TOML"]),
    ],
)
def test_bad_owners_file(tmp_path: Path, text: str, needles: list[str]) -> None:
    path = tmp_path / "owners.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(OwnersError) as info:
        OwnerMap.load(path)
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_missing_owners_file(tmp_path: Path) -> None:
    with pytest.raises(OwnersError, match="cannot read owners file"):
        OwnerMap.load(tmp_path / "missing.toml")


def test_every_problem_of_an_owners_file_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "owners.toml"
    path.write_text(
        '[[owner]]\nname = "A"\ntelegram = "a b"\ngithub = "-x-"\nprojects = ["api"]\n'
        '[[owner]]\nname = "B"\ncategories = ["db", "code"]\n'
        '[[owner]]\nname = "C"\n',
        encoding="utf-8",
    )
    with pytest.raises(OwnersError) as info:
        OwnerMap.load(path)
    wheres = [p.split(": ")[1] for p in info.value.problems]
    assert wheres == ["owner #1 ('A').telegram", "owner #1 ('A').github", "owner #2 ('B').categories[0]",
                      "owner #3 ('C')"]
    # an owners file's mistakes are not reported as a rules file's
    assert not isinstance(info.value, RulesError) and "owners file" in str(info.value)


def test_a_bad_owners_file_stops_the_start_with_its_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.cli import _check_files
    from bot.settings import load_settings

    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    path = tmp_path / "owners.toml"
    path.write_text('[[owner]]\nname = "A"\ncategories = ["db"]\n', encoding="utf-8")
    message = _check_files(load_settings(owners_file=path, rules_file=None, rollout_stage=2))
    assert message is not None and f"{path}: owner #1 ('A').categories[0]: 'db' is not one of" in message
