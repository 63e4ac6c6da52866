"""flannel's iptables chains (FLANNEL-POSTRTG, FLANNEL-FWD) and the iptables-restore input that keeps them."""

from __future__ import annotations

from ipaddress import IPv4Network

from flannel_alivpc.core.masq import FlannelChain, forward_chain, masq_chain, restore_input

NETWORK = IPv4Network("10.244.0.0/16")
SUBNET = IPv4Network("10.244.1.0/24")
MASQ = masq_chain(NETWORK, SUBNET, random_fully=True)
FORWARD = forward_chain(NETWORK)


def save(chain: FlannelChain, rules: tuple[str, ...] | list[str], jumps: int = 1, *, declared: bool = True,
         parent_rules: tuple[str, ...] = ()) -> str:
    """An iptables-save listing of ``chain``'s table holding ``rules`` in the chain and ``jumps`` jumps to it."""
    lines = [f"*{chain.table}", f":{chain.parent} ACCEPT [0:0]"]
    if declared:
        lines.append(f":{chain.chain} - [0:0]")
    lines += [f"-A {chain.parent} {rule}" for rule in parent_rules]
    lines += [f"-A {chain.parent} {chain.jump}"] * jumps
    lines += [f"-A {chain.chain} {rule}" for rule in rules]
    return "\n".join([*lines, "COMMIT"]) + "\n"


def test_masq_rules_are_flannels_in_order() -> None:
    assert (MASQ.table, MASQ.chain, MASQ.parent) == ("nat", "FLANNEL-POSTRTG", "POSTROUTING")
    assert MASQ.jump == '-m comment --comment "flanneld masq" -j FLANNEL-POSTRTG'
    assert MASQ.rules == (
        '-m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN',
        '-s 10.244.1.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN',
        '-s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN',
        '! -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN',
        '-s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully',
        '! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully',
    )
    plain = masq_chain(NETWORK, SUBNET, random_fully=False).rules
    assert [rule.endswith("-j MASQUERADE") for rule in plain[-2:]] == [True, True]


def test_forward_rules_are_flannels_in_order() -> None:
    assert (FORWARD.table, FORWARD.chain, FORWARD.parent) == ("filter", "FLANNEL-FWD", "FORWARD")
    assert FORWARD.jump == '-m comment --comment "flanneld forward" -j FLANNEL-FWD'
    assert FORWARD.rules == ('-s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
                             '-d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT')


def test_fresh_table_gets_chain_and_one_jump_appended() -> None:
    text = restore_input("filter", save(FORWARD, [], jumps=0, declared=False,
                                        parent_rules=("-j DOCKER-USER",)), [FORWARD])
    assert text is not None
    assert text.splitlines() == [
        "*filter",
        ":FLANNEL-FWD - [0:0]",
        *(f"-A FLANNEL-FWD {rule}" for rule in FORWARD.rules),
        f"-A FORWARD {FORWARD.jump}",  # appended after what FORWARD already has, as flannel's -A does
        "COMMIT",
    ]


def test_matching_table_needs_nothing() -> None:
    assert restore_input("nat", save(MASQ, MASQ.rules), [MASQ]) is None
    assert restore_input("filter", save(FORWARD, FORWARD.rules), [FORWARD]) is None


def test_drifted_chain_is_rewritten_whole_and_jump_not_duplicated() -> None:
    old_subnet = masq_chain(NETWORK, IPv4Network("10.244.7.0/24"), random_fully=True).rules
    text = restore_input("nat", save(MASQ, old_subnet), [MASQ])
    assert text is not None
    assert f"-A POSTROUTING {MASQ.jump}" not in text
    assert [line for line in text.splitlines() if line.startswith("-A FLANNEL-POSTRTG")] == \
        [f"-A FLANNEL-POSTRTG {rule}" for rule in MASQ.rules]
    # One rule deleted by hand (the periodic check's case): the same full rewrite.
    assert restore_input("filter", save(FORWARD, FORWARD.rules[:1]), [FORWARD]) is not None


def test_extra_jumps_are_removed() -> None:
    text = restore_input("nat", save(MASQ, MASQ.rules, jumps=3), [MASQ])
    assert text is not None
    assert text.count(f"-D POSTROUTING {MASQ.jump}") == 2
