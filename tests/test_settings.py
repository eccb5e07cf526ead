"""Settings from the environment and `.env`: parsing, empty values, and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.settings import (
    ENV_FILE_VARIABLE,
    Settings,
    SettingsError,
    check_for_run,
    describe_settings_source,
    find_env_file,
    load_settings,
    webhook_port_problem,
)

REPO = Path(__file__).resolve().parent.parent
GOOD_TOKEN = "123456789:" + "AAE" + "x1Y2z3" * 6
GOOD_WEBHOOK_TOKEN = "a-long-random-webhook-token-0123456789"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No remediator setting from the developer's environment, and a cwd without a `.env`."""
    import os

    names = {name.upper() for name in Settings.model_fields} | {ENV_FILE_VARIABLE}
    for key in list(os.environ):
        if key.upper() in names:
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_env(tmp_path: Path, text: str) -> None:
    (tmp_path / ".env").write_text(text, encoding="utf-8")


def error_of(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    return str(info.value)


def line_naming(message: str, name: str) -> str:
    line = next((line for line in message.splitlines() if line.strip().startswith(f"{name}:")), None)
    assert line is not None, f"{name} not named in:\n{message}"
    return line


# --------------------------------------------------------------------------- defaults and parsing


def test_defaults_with_nothing_set_are_the_local_demo() -> None:
    settings = load_settings()
    assert settings.demo_mode
    assert settings.rollout_stage == 2
    assert settings.telegram_approvers == []
    assert settings.kill_switch is False and settings.auto_fix is False
    assert settings.webhook_host == "127.0.0.1"
    check_for_run(settings)  # the demo needs nothing


@pytest.mark.parametrize(
    ("raw", "ids"),
    [
        ("12345", [12345]),
        ("12345,67890", [12345, 67890]),
        ("12345, 67890", [12345, 67890]),
        ("12345 67890", [12345, 67890]),
        (" 12345 ,, 67890 ; 111 ", [12345, 67890, 111]),
        ("12345\n67890", [12345, 67890]),
        ("-100123", [-100123]),
    ],
)
def test_approvers_comma_or_space_separated(monkeypatch: pytest.MonkeyPatch, raw: str, ids: list[int]) -> None:
    monkeypatch.setenv("TELEGRAM_APPROVERS", raw)
    settings = load_settings()
    assert settings.telegram_approvers == ids
    assert all(settings.is_approver(i) for i in ids)
    assert not settings.is_approver(999999)


@pytest.mark.parametrize("raw", ["12345,@alice", "alice", "12345,1.5"])
def test_approvers_that_are_not_ids_name_the_setting(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    message = error_of(monkeypatch, TELEGRAM_APPROVERS=raw)
    line = line_naming(message, "TELEGRAM_APPROVERS")
    assert "numeric Telegram user ids" in line


@pytest.mark.parametrize(
    ("raw", "on"),
    [("on", True), ("off", False), ("ON", True), ("Off", False), (" on ", True), ("true", True), ("0", False)],
)
def test_kill_switch_and_auto_fix_on_off(monkeypatch: pytest.MonkeyPatch, raw: str, on: bool) -> None:
    monkeypatch.setenv("KILL_SWITCH", raw)
    monkeypatch.setenv("AUTO_FIX", raw)
    settings = load_settings()
    assert settings.kill_switch is on
    assert settings.auto_fix is on


def test_approvers_name_every_bad_value_on_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_of(monkeypatch, TELEGRAM_APPROVERS="alice,111,bob")
    lines = [line for line in message.splitlines() if "TELEGRAM_APPROVERS" in line]
    assert len(lines) == 1
    assert "'alice', 'bob' are not user ids" in lines[0] and "'111'" not in lines[0]


@pytest.mark.parametrize(("raw", "level"), [("debug", "DEBUG"), (" Warning ", "WARNING"), ("ERROR", "ERROR")])
def test_log_level_any_case(monkeypatch: pytest.MonkeyPatch, raw: str, level: str) -> None:
    monkeypatch.setenv("LOG_LEVEL", raw)
    assert load_settings().log_level == level


@pytest.mark.parametrize("raw", ["LOUD", "verbose", "10"])
def test_unknown_log_level_lists_the_valid_ones(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    line = line_naming(error_of(monkeypatch, LOG_LEVEL=raw), "LOG_LEVEL")
    assert repr(raw) in line and "DEBUG, INFO, WARNING, ERROR, CRITICAL" in line


def test_kill_switch_nonsense_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_of(monkeypatch, KILL_SWITCH="maybe")
    assert "on or off" in line_naming(message, "KILL_SWITCH")


def test_redact_patterns_split_on_double_semicolon_or_newline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDACT_PATTERNS", r"acme_[a-z]{3,5};;secret-\d+" + "\n" + "x{1,2},y")
    settings = load_settings()
    assert settings.redact_patterns == [r"acme_[a-z]{3,5}", r"secret-\d+", "x{1,2},y"]


def test_fix_hosts_default_to_this_machines_names() -> None:
    import socket

    hosts = load_settings().fix_hosts
    assert socket.gethostname().lower() in hosts
    assert "localhost" in hosts and "127.0.0.1" in hosts


@pytest.mark.parametrize(
    ("raw", "hosts"),
    [("web-01", ["web-01"]), ("web-01, Web-01.Example.com.", ["web-01", "web-01.example.com"]),
     ("a b;c,,a", ["a", "b", "c"]), ("10.0.0.5,::1", ["10.0.0.5", "::1"])],
)
def test_fix_hosts_comma_separated(monkeypatch: pytest.MonkeyPatch, raw: str, hosts: list[str]) -> None:
    monkeypatch.setenv("FIX_HOSTS", raw)
    assert load_settings().fix_hosts == hosts


@pytest.mark.parametrize("raw", ["web-01,http://evil", "web/01", "-x"])
def test_fix_hosts_that_are_not_host_names_name_the_setting(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    line = line_naming(error_of(monkeypatch, FIX_HOSTS=raw), "FIX_HOSTS")
    assert "not a host name" in line and "comma-separated host names" in line


# --------------------------------------------------------------------------- .env


def test_env_file_in_the_working_directory_is_read(clean_env: Path) -> None:
    write_env(clean_env, "ROLLOUT_STAGE=3\nTELEGRAM_APPROVERS=1, 2\nKILL_SWITCH=on\nTIMEZONE=Europe/Berlin\n")
    settings = load_settings()
    assert settings.rollout_stage == 3
    assert settings.telegram_approvers == [1, 2]
    assert settings.kill_switch is True
    assert settings.timezone == "Europe/Berlin"


def test_which_env_file_option_then_variable_then_working_directory(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_env(clean_env, "ROLLOUT_STAGE=1\n")
    named = clean_env / "named.env"
    named.write_text("ROLLOUT_STAGE=3\n", encoding="utf-8")
    given = clean_env / "given.env"
    given.write_text("ROLLOUT_STAGE=4\n", encoding="utf-8")
    assert find_env_file() == clean_env / ".env"
    assert load_settings().rollout_stage == 1
    monkeypatch.setenv(ENV_FILE_VARIABLE, str(named))
    assert load_settings().rollout_stage == 3
    settings = load_settings(env_file=Path("given.env"))
    assert settings.rollout_stage == 4
    assert settings.env_file_read == given
    assert str(given) in describe_settings_source(settings)


def test_no_env_file_is_said_with_where_it_was_looked_for(clean_env: Path) -> None:
    settings = load_settings()
    assert settings.env_file_read is None
    source = describe_settings_source(settings)
    assert "no .env read" in source and str(clean_env) in source and ENV_FILE_VARIABLE in source


@pytest.mark.parametrize("given_by", ["option", "variable"])
def test_a_named_env_file_that_is_missing_is_an_error(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, given_by: str
) -> None:
    missing = clean_env / "typo.env"
    with pytest.raises(SettingsError) as info:
        if given_by == "option":
            load_settings(env_file=missing)
        else:
            monkeypatch.setenv(ENV_FILE_VARIABLE, str(missing))
            load_settings()
    name = "--env-file" if given_by == "option" else ENV_FILE_VARIABLE
    assert f"{name}: no such file {missing}" in str(info.value)


def test_relative_paths_in_an_env_file_are_relative_to_it(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = clean_env / "conf"
    conf.mkdir()
    env_file = conf / "bot.env"
    env_file.write_text(
        f"DATABASE_PATH=data/bot.db\nPATTERNS_FILE=patterns.toml\nRULES_FILE={clean_env}/rules.toml\n"
        "OWNERS_FILE=owners.toml\n", encoding="utf-8",
    )
    monkeypatch.setenv("OWNERS_FILE", "mine.toml")  # from the environment: relative to the working directory
    settings = load_settings(env_file=env_file)
    assert settings.database_path == conf / "data" / "bot.db"
    assert settings.patterns_file == conf / "patterns.toml"
    assert settings.rules_file == clean_env / "rules.toml"
    assert settings.owners_file == Path("mine.toml")


def test_environment_wins_over_env_file(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_env(clean_env, "ROLLOUT_STAGE=3\n")
    monkeypatch.setenv("ROLLOUT_STAGE", "1")
    assert load_settings().rollout_stage == 1


def test_empty_values_in_env_file_are_unset(clean_env: Path) -> None:
    write_env(
        clean_env,
        "TELEGRAM_BOT_TOKEN=\nTELEGRAM_CHAT_ID=\nTELEGRAM_APPROVERS=\nWEBHOOK_TOKEN=\nWEBHOOK_PORT=\n"
        "ROLLOUT_STAGE=\nRULES_FILE=\nPATTERNS_FILE=\nOWNERS_FILE=\nREDACT_PATTERNS=\nKILL_SWITCH=\n"
        "DIGEST_TIME=\nTIMEZONE=\nDATABASE_PATH=\n",
    )
    settings = load_settings()
    assert settings.demo_mode
    assert settings.telegram_chat_id is None and settings.telegram_approvers == []
    assert settings.webhook_token is None and settings.webhook_port == 8080
    assert settings.rollout_stage == 2
    assert settings.rules_file is None and settings.patterns_file is None and settings.owners_file is None
    assert settings.redact_patterns == [] and settings.kill_switch is False
    assert settings.timezone == "UTC"
    assert settings.database_path == Path("remediator.db")
    check_for_run(settings)


def test_the_shipped_env_example_loads_as_the_demo(clean_env: Path) -> None:
    """`cp .env.example .env` must give a working local demo, not an error."""
    write_env(clean_env, (REPO / ".env.example").read_text(encoding="utf-8"))
    settings = load_settings()
    assert settings.demo_mode
    check_for_run(settings)


def test_empty_environment_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_CHAT_ID", "")
    monkeypatch.setenv("ROLLOUT_STAGE", "")
    settings = load_settings()
    assert settings.telegram_chat_id is None and settings.rollout_stage == 2


# --------------------------------------------------------------------------- bad values


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "Europe/Berlín", "../../etc/passwd", "/etc/localtime"])
def test_bad_timezone_names_the_setting(monkeypatch: pytest.MonkeyPatch, zone: str) -> None:
    message = error_of(monkeypatch, TIMEZONE=zone)
    line = line_naming(message, "TIMEZONE")
    assert "time zone" in line and "IANA" in line


def test_bad_redact_pattern_names_the_setting_and_the_regex(monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_of(monkeypatch, REDACT_PATTERNS=r"good-\d+;;bad(unclosed")
    line = line_naming(message, "REDACT_PATTERNS")
    assert "bad(unclosed" in line and "regular expression" in line


def test_a_redact_pattern_that_can_backtrack_catastrophically_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    line = line_naming(error_of(monkeypatch, REDACT_PATTERNS=r"(a+)+b"), "REDACT_PATTERNS")
    assert "(a+)+b" in line and "backtrack" in line


def test_every_bad_setting_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_of(
        monkeypatch, ROLLOUT_STAGE="9", TELEGRAM_CHAT_ID="abc", WEBHOOK_PORT="70000", DIGEST_TIME="25:99",
        TIMEZONE="Nowhere/Special",
    )
    assert message.startswith("Invalid settings:")
    assert "needs 1 (monitor)" in line_naming(message, "ROLLOUT_STAGE")
    assert "numeric id of the chat" in line_naming(message, "TELEGRAM_CHAT_ID")
    assert "0-65535" in line_naming(message, "WEBHOOK_PORT")
    assert "HH:MM" in line_naming(message, "DIGEST_TIME")
    line_naming(message, "TIMEZONE")


def test_bad_value_in_env_file_is_named(clean_env: Path) -> None:
    write_env(clean_env, "ROLLOUT_STAGE=five\n")
    with pytest.raises(SettingsError) as info:
        load_settings()
    line_naming(str(info.value), "ROLLOUT_STAGE")


def test_secret_values_are_not_echoed_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", GOOD_TOKEN)
    message = error_of(monkeypatch, ROLLOUT_STAGE="0")
    assert GOOD_TOKEN not in message
    assert GOOD_TOKEN not in repr(load_settings(rollout_stage=2))


# --------------------------------------------------------------------------- check_for_run


def test_check_for_run_names_every_missing_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "oops")
    monkeypatch.setenv("RULES_FILE", "no/such/rules.toml")
    monkeypatch.setenv("PATTERNS_FILE", "no/such/patterns.toml")
    monkeypatch.setenv("OWNERS_FILE", "no/such/owners.toml")
    settings = load_settings()
    assert not settings.demo_mode
    with pytest.raises(SettingsError) as info:
        check_for_run(settings)
    message = str(info.value)
    # Neither chat nor approvers: allowed (setup mode), and said so next to the real problems.
    assert any("TELEGRAM_APPROVERS" in line and "setup mode" in line for line in message.splitlines())
    assert "16" in line_naming(message, "WEBHOOK_TOKEN")
    assert "BotFather" in line_naming(message, "TELEGRAM_BOT_TOKEN")
    assert "no/such/rules.toml" in line_naming(message, "RULES_FILE")
    assert "no/such/patterns.toml" in line_naming(message, "PATTERNS_FILE")
    assert "no/such/owners.toml" in line_naming(message, "OWNERS_FILE")
    assert "oops" not in message


def test_check_for_run_accepts_a_complete_configuration(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    rules = clean_env / "rules.toml"
    rules.write_text("", encoding="utf-8")
    write_env(
        clean_env,
        f"TELEGRAM_BOT_TOKEN={GOOD_TOKEN}\nTELEGRAM_CHAT_ID=-1001234567890\nTELEGRAM_APPROVERS=111,222\n"
        f"WEBHOOK_TOKEN={GOOD_WEBHOOK_TOKEN}\nRULES_FILE={rules}\n",
    )
    settings = load_settings()
    assert not settings.demo_mode
    assert settings.telegram_chat_id == -1001234567890
    check_for_run(settings)


def test_check_for_run_only_flags_what_is_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(
        telegram_bot_token=GOOD_TOKEN, telegram_chat_id=-100123, telegram_approvers=[111], webhook_token="short",
    )
    with pytest.raises(SettingsError) as info:
        check_for_run(settings)
    lines = [line.strip() for line in str(info.value).splitlines()[1:]]
    assert len(lines) == 1 and lines[0].startswith("WEBHOOK_TOKEN:")


def test_missing_files_are_flagged_even_in_the_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATTERNS_FILE", "nowhere.toml")
    settings = load_settings()
    assert settings.demo_mode
    with pytest.raises(SettingsError) as info:
        check_for_run(settings)
    assert "nowhere.toml" in line_naming(str(info.value), "PATTERNS_FILE")


# --------------------------------------------------------------------------- the webhook port


def test_a_busy_webhook_port_names_the_port_and_the_setting() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        problem = webhook_port_problem("127.0.0.1", port)
    assert problem is not None and f"WEBHOOK_PORT {port} on 127.0.0.1 is already in use" in problem
    assert webhook_port_problem("127.0.0.1", port) is None  # free again
    assert webhook_port_problem("127.0.0.1", 0) is None


def test_a_webhook_host_that_is_not_this_machine_names_the_setting() -> None:
    problem = webhook_port_problem("192.0.2.1", 8080)  # TEST-NET-1: a literal, so no DNS lookup
    assert problem is not None and "WEBHOOK_HOST 192.0.2.1 is not an address of this machine" in problem
