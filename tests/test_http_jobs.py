"""The outage pause both workers share (bot/http_jobs.py), on a clock the test moves.

The end-to-end tests run the GitHub and GlitchTip workers with a backoff of a fraction of a
second; these pin what the real one does over minutes, without waiting for them.
"""

from __future__ import annotations

import ssl
import time

from bot.github.api import GitHubClient
from bot.glitchtip.api import GlitchTipClient
from bot.http_jobs import OutagePause, idle_wait, tls_context


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_each_pause_in_a_row_waits_twice_as_long_up_to_the_longest():
    clock = Clock()
    pause = OutagePause(lambda: (2.0, 300.0), clock)
    delays = []
    for _ in range(10):
        delays.append(pause.pause())
        clock.now += delays[-1]
    assert delays == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0]


def test_no_call_until_the_pause_is_over():
    clock = Clock()
    pause = OutagePause(lambda: (5.0, 300.0), clock)
    assert pause.left() == 0.0
    pause.pause()
    clock.now += 3.0
    assert pause.left() == 2.0
    clock.now += 2.0
    assert pause.left() == 0.0


def test_the_service_asking_for_longer_wins_over_the_backoff():
    clock = Clock()
    pause = OutagePause(lambda: (2.0, 300.0), clock)
    assert pause.pause(at_least_s=60.0) == 60.0  # a Retry-After of 60 s
    assert pause.left() == 60.0
    clock.now += 60.0
    assert pause.pause(at_least_s=1.0) == 4.0  # asked for less than the backoff: the backoff stands


def test_an_answer_ends_the_streak_and_a_retry_now_ends_the_pause():
    clock = Clock()
    pause = OutagePause(lambda: (2.0, 300.0), clock)
    for _ in range(4):
        pause.pause()
    pause.end()  # a person (or the scheduled refresh) said: try now
    assert pause.left() == 0.0
    assert pause.pause() == 32.0  # the streak stays: the service has not answered yet
    pause.answered()
    assert pause.pause() == 2.0


def test_the_backoff_setting_is_read_at_each_pause():
    clock = Clock()
    backoff = [(2.0, 300.0)]
    pause = OutagePause(lambda: backoff[0], clock)
    pause.pause()
    backoff[0] = (0.05, 0.2)  # what the end-to-end tests set on a running worker
    assert pause.pause() == 0.1


def test_an_idle_worker_sleeps_until_its_next_job_at_most_poll_s_never_spinning():
    assert idle_wait(None, 2.0) == 2.0
    assert 0.9 <= idle_wait(time.time() + 1.0, 2.0) <= 1.0
    assert idle_wait(time.time() + 60.0, 2.0) == 2.0
    assert idle_wait(time.time() - 5.0, 2.0) == 0.05  # overdue: look again soon, not in a busy loop


async def test_the_clients_share_one_tls_context_that_still_verifies_the_server():
    """Reading the CA bundle costs ~50 ms of CPU: paid once, not at every start or `check`."""
    github = GitHubClient("https://api.github.com", "token")
    glitchtip = GlitchTipClient("https://glitchtip.example.com", "token")
    try:
        for client in (github, glitchtip):
            context = client._http._transport._pool._ssl_context  # type: ignore[attr-defined]
            assert context is tls_context()
        assert tls_context().verify_mode is ssl.CERT_REQUIRED and tls_context().check_hostname
        assert tls_context().get_ca_certs() or tls_context().cert_store_stats()["x509_ca"]
    finally:
        await github.aclose()
        await glitchtip.aclose()
