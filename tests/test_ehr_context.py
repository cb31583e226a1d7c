"""The EHR context store (R5): validated before it is taken, one card, expires."""
from __future__ import annotations

import math

import pytest

from agent.desk.ehr_context import MAX_TTL_S, ContextStore
from bildsluss_common.identity.reserve import from_config as reserve_formats
from agent.card.model import Mode


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> ContextStore:
    return ContextStore(clock=clock)


def test_put_canonicalises_and_take_consumes(store, clock):
    ctx = store.put("121212+1212", Mode.ULTRASOUND, 600, set_by="anna")  # "+": 100 or older
    assert ctx.patient == "191212121212" and ctx.mode is Mode.ULTRASOUND
    assert (ctx.set_at, ctx.expires_at, ctx.set_by, ctx.expired) == (clock.now, clock.now + 600, "anna", False)
    assert store.peek() == ctx, "peek does not consume"
    assert store.take() == ctx
    assert store.take() is None, "a context belongs to one card"


def test_a_new_context_replaces_the_old_one(store):
    store.put("191212121212", None, 600, set_by="anna")
    store.put("19121212-1212", Mode.AUDIO, 60, set_by="bo")
    ctx = store.take()
    assert ctx.mode is Mode.AUDIO and ctx.set_by == "bo"


def test_an_expired_context_is_handed_out_once_marked_expired(store, clock):
    store.put("191212121212", None, 600, set_by="anna")
    clock.now += 600
    assert store.peek().expired is False, "valid up to and including expires_at"
    clock.now += 0.001
    assert store.peek().expired is True
    ctx = store.take()
    assert ctx.expired is True and ctx.patient == "191212121212"
    assert store.take() is None


def test_samordningsnummer_is_accepted(store):
    # day 12 + 60 = 72; the check digit is computed over the 10-digit form
    from bildsluss_common.identity.numbers import luhn_check_digit

    payload = "121272121"
    number = "19" + payload + luhn_check_digit(payload)
    assert store.put(number, None, 60, set_by="anna").patient == number


@pytest.mark.parametrize("bad", ["191212121213", "19121312-1212", "abc", "", "991981000010"])
def test_invalid_numbers_are_refused_before_anything_is_stored(store, bad):
    with pytest.raises(ValueError):
        store.put(bad, None, 600, set_by="anna")
    assert store.peek() is None


def test_reserve_numbers_need_their_format_enabled(clock):
    store = ContextStore(reserve_formats({"reserve_formats": ["sll"]}), clock=clock)
    assert store.put("99198100-0010", None, 60, set_by="anna").patient == "991981000010"


@pytest.mark.parametrize("ttl", [0, -1, math.inf, math.nan, MAX_TTL_S + 1, True, "600"])
def test_ttl_must_be_a_sensible_number_of_seconds(store, ttl):
    with pytest.raises(ValueError):
        store.put("191212121212", None, ttl, set_by="anna")


def test_mode_must_be_a_mode(store):
    with pytest.raises(ValueError):
        store.put("191212121212", "ultrasound", 60, set_by="anna")


def test_clear_forgets(store):
    store.put("191212121212", None, 60, set_by="anna")
    assert store.clear().patient == "191212121212"
    assert store.take() is None
