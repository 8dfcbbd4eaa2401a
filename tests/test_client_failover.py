"""Client failover over a list of server URLs: the rotation alone, then real servers."""

from __future__ import annotations

import pytest

from client.servers import Servers, split_urls

A, B, C = "ws://a/ws", "ws://b/ws", "ws://c/ws"


# ---- the rotation, without sockets ----------------------------------------------------------


def test_split_urls_takes_lists_and_commas_in_order_once_each() -> None:
    assert split_urls(A) == (A,)
    assert split_urls(f"{A}, {B},,") == (A, B)
    assert split_urls([f"{A},{B}", C, A]) == (A, B, C)
    with pytest.raises(ValueError):
        split_urls(" , ")
    with pytest.raises(ValueError):
        split_urls([])


def test_rotation_starts_at_the_first_and_moves_on_past_the_lost_one() -> None:
    servers = Servers([A, B, C])
    assert servers.current == A and len(servers) == 3
    assert servers.round(move_on=False) == [A, B, C]  # the first connect
    assert servers.round(move_on=True) == [B, C, A]  # A was lost: it is tried last
    servers.use(B)
    assert servers.current == B
    assert servers.round(move_on=True) == [C, A, B]
    servers.use(A)
    assert servers.round(move_on=True) == [B, C, A]


def test_one_url_is_a_round_of_one() -> None:
    servers = Servers(A)
    assert servers.round(move_on=False) == servers.round(move_on=True) == [A]
