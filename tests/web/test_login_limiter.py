"""`accounts.LoginLimiter` on a clock of its own: attempts counted before the password check,
per username and address and per address, a right password taking its attempt back, and
only the failing address blocked. (Over real HTTP: tests/web/test_http_bounds.py.)"""

from __future__ import annotations

import pytest
from lockerctl.accounts import LoginLimiter


@pytest.fixture
def clock():
    return [1000.0]


@pytest.fixture
def limiter(clock):
    return LoginLimiter(per_pair=5, per_client=30, window=900, clock=lambda: clock[0])


def test_attempts_count_before_the_check_and_block_only_the_failing_address(limiter, clock):
    # five attempts in flight at once are all counted; the sixth is refused before any is done
    assert [limiter.begin("admin", "10.0.0.9") for _ in range(5)] == [0.0] * 5
    wait = limiter.begin("admin", "10.0.0.9")
    assert wait == pytest.approx(900)
    assert limiter.begin("Admin", "10.0.0.9") > 0  # usernames compare without case
    assert limiter.begin("admin", "10.0.0.2") == 0.0  # another address: not blocked
    limiter.succeeded("admin", "10.0.0.2")
    assert limiter.failures("admin", "10.0.0.2") == 0
    assert limiter.begin("olive", "10.0.0.9") == 0.0  # another user from the failing address
    clock[0] += 901
    assert limiter.begin("admin", "10.0.0.9") == 0.0  # the window has passed


def test_a_right_password_forgets_the_pairs_failures_and_takes_its_attempt_back(limiter):
    for _ in range(4):
        assert limiter.begin("olive", "10.0.0.1") == 0.0
    assert limiter.failures("olive", "10.0.0.1") == 4
    assert limiter.begin("olive", "10.0.0.1") == 0.0
    limiter.succeeded("olive", "10.0.0.1")
    assert limiter.failures("olive", "10.0.0.1") == 0
    # successful sign-ins do not use up the address's allowance
    for _ in range(100):
        assert limiter.begin("olive", "10.0.0.1") == 0.0
        limiter.succeeded("olive", "10.0.0.1")


def test_an_address_spraying_usernames_is_blocked(limiter):
    for i in range(30):
        assert limiter.begin(f"user{i}", "10.0.0.5") == 0.0
    assert limiter.begin("user99", "10.0.0.5") > 0
    assert limiter.begin("user99", "10.0.0.6") == 0.0


def test_each_wrong_answer_is_held_longer_up_to_a_cap():
    delays = [LoginLimiter.delay(n) for n in range(1, 10)]
    assert delays == sorted(delays) and delays[0] > 0 and max(delays) == 2.0
