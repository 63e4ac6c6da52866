"""flannel's --ip-masq rules and the iptables-restore input that installs them idempotently."""

from __future__ import annotations

from ipaddress import IPv4Network

from flannel_alivpc.core.masq import JUMP_RULE, MASQ_CHAIN, masq_restore_input, masq_rules

NETWORK = IPv4Network("10.244.0.0/16")
SUBNET = IPv4Network("10.244.1.0/24")
RULES = masq_rules(NETWORK, SUBNET, random_fully=True)


def save(chain: list[str], jumps: int = 1, *, declared: bool = True) -> str:
    lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]"]
    if declared:
        lines.append(f":{MASQ_CHAIN} - [0:0]")
    lines += [f"-A POSTROUTING {JUMP_RULE}"] * jumps
    lines += [f"-A {MASQ_CHAIN} {rule}" for rule in chain]
    return "\n".join([*lines, "COMMIT"]) + "\n"


def test_rules_are_flannels_in_order() -> None:
    assert RULES == [
        '-m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN',
        '-s 10.244.1.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN',
        '-s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN',
        '! -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN',
        '-s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully',
        '! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully',
    ]
    assert masq_rules(NETWORK, SUBNET, random_fully=False)[-1].endswith("-j MASQUERADE")


def test_fresh_table_gets_chain_and_one_jump() -> None:
    text = masq_restore_input(save([], jumps=0, declared=False), RULES)
    assert text is not None
    lines = text.splitlines()
    assert lines[0] == "*nat" and lines[-1] == "COMMIT"
    assert lines[1] == f":{MASQ_CHAIN} - [0:0]"
    assert lines[2:8] == [f"-A {MASQ_CHAIN} {rule}" for rule in RULES]
    assert lines[8] == f"-A POSTROUTING {JUMP_RULE}"


def test_matching_table_needs_nothing() -> None:
    assert masq_restore_input(save(RULES), RULES) is None


def test_drifted_chain_is_rewritten_whole_and_jump_not_duplicated() -> None:
    old_subnet = masq_rules(NETWORK, IPv4Network("10.244.7.0/24"), random_fully=True)
    text = masq_restore_input(save(old_subnet), RULES)
    assert text is not None
    assert f"-A POSTROUTING {JUMP_RULE}" not in text
    assert [line for line in text.splitlines() if line.startswith(f"-A {MASQ_CHAIN}")] == \
        [f"-A {MASQ_CHAIN} {rule}" for rule in RULES]


def test_extra_jumps_are_removed() -> None:
    text = masq_restore_input(save(RULES, jumps=3), RULES)
    assert text is not None
    assert text.count(f"-D POSTROUTING {JUMP_RULE}") == 2
