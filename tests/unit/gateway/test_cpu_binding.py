"""Local mode's CPU shares: several vLLM CPU servers must not all pin core 0."""

from __future__ import annotations

import pytest

from modelplane.local.cpu_binding import OMP_BIND_ENV, server_envs, split_cpus


def test_one_server_keeps_vllms_own_choice() -> None:
    assert split_cpus(1, [0, 1]) == [None]


def test_two_servers_on_two_cores_get_one_each() -> None:
    assert split_cpus(2, [0, 1]) == ["0", "1"]


def test_shares_are_disjoint_contiguous_and_cover_every_cpu() -> None:
    shares = split_cpus(3, [7, 0, 1, 2, 3, 4, 5, 6])
    assert shares == ["0,1,2", "3,4,5", "6,7"]
    cpus = [int(c) for share in shares if share for c in share.split(",")]
    assert sorted(cpus) == list(range(8)) and len(set(cpus)) == 8


def test_more_servers_than_cpus_take_cpus_in_turn() -> None:
    assert split_cpus(3, [0, 1]) == ["0", "1", "0"]


def test_a_bind_the_user_set_is_left_alone() -> None:
    assert server_envs(2, {OMP_BIND_ENV: "nobind"}) == [{}, {}]


@pytest.mark.parametrize("servers", [2, 3])
def test_every_server_gets_a_bind_when_there_are_several(servers: int) -> None:
    envs = server_envs(servers, {})
    assert len(envs) == servers
    assert all(env.get(OMP_BIND_ENV) for env in envs)
