"""Annotations nothing reads (typos, CCM settings not implemented): one Warning Event each, nothing else changes."""

from __future__ import annotations

import logging
import time

import pytest

from flannel_alivpc.slb.annotations import LEGACY_PREFIX, PREFIX, review_annotations
from tests.slb.conftest import LEGACY, P, SlbBed, wait_for


@pytest.mark.parametrize("key, reason, says", [
    (PREFIX + "adress-type", "UnknownAnnotation", f"did you mean {PREFIX}address-type?"),
    (LEGACY_PREFIX + "HealthCheckUri", "UnknownAnnotation", f"did you mean {LEGACY_PREFIX}HealthCheckURI?"),
    (LEGACY_PREFIX + "Bandwith", "UnknownAnnotation", f"did you mean {LEGACY_PREFIX}Bandwidth?"),
    ("service.beta.kubernetes.io/alibaba-cloud-loadbalancr-address-type", "UnknownAnnotation",
     f"did you mean {PREFIX}address-type?"),
    (PREFIX + "nmae", "UnknownAnnotation", f"did you mean {PREFIX}name? (not implemented either)"),
    (PREFIX + "frobnicate", "UnknownAnnotation", "not an SLB setting flannel-alivpc knows (docs/slb-controller.md"),
    (PREFIX + "delete-protection", "UnsupportedAnnotation", "does not implement 'delete-protection'"),
    (LEGACY_PREFIX + "name", "UnsupportedAnnotation", "does not implement 'name'"),
    ("service.beta.kubernetes.io/backend-type", "UnsupportedAnnotation", "does not implement it"),
])
def test_unread_annotations_are_named_with_the_closest_known_one(key: str, reason: str, says: str) -> None:
    (notice,) = review_annotations({key: "on"})
    assert (notice.annotation, notice.reason) == (key, reason)
    assert notice.message.startswith(f"annotation {key} has no effect: ")
    assert says in notice.message


def test_read_and_foreign_annotations_draw_no_notice() -> None:
    assert review_annotations({
        PREFIX + "address-type": "intranet", PREFIX + "ProtocolPort": "http:80", LEGACY_PREFIX + "AddressType": "x",
        LEGACY_PREFIX + "health-check-flag": "on", PREFIX + "network-type": "vpc",
        "service.beta.kubernetes.io/class": "other", "example.com/anything": "1", "kubectl.kubernetes.io/x": "y",
    }) == []


def _events(bed: SlbBed, reason: str) -> list[tuple[str, int]]:
    return [(e["message"], e.get("count", 1)) for e in bed.events("web", reason)]


def test_a_typo_and_an_unsupported_annotation_get_one_event_each(bed: SlbBed,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    bed.add_instance_nodes(1)
    bed.create_service("web", annotations={P + "adress-type": "intranet", P + "delete-protection": "off",
                                           LEGACY + "Bandwidth": "60"})
    with caplog.at_level(logging.WARNING, logger="flannel_alivpc.slb.controller"):
        bed.start_controller(resync_interval=0.2)
        wait_for(lambda: bed.converged("web", backends=1))
        wait_for(lambda: bed.events("web", "UnknownAnnotation") and bed.events("web", "UnsupportedAnnotation"))
        passes = bed.controllers[0].stats.passes
        wait_for(lambda: bed.controllers[0].stats.passes >= passes + 5, what="five more resync passes")
    lb = bed.lb_for("web")
    assert lb is not None
    assert (lb.address_type, lb.bandwidth) == ("internet", 60)  # the typo changed nothing; the rest was read
    assert _events(bed, "UnknownAnnotation") == [
        (f"annotation {P}adress-type has no effect: it is not an SLB setting flannel-alivpc knows; "
         f"did you mean {P}address-type?", 1)]
    assert _events(bed, "UnsupportedAnnotation") == [
        (f"annotation {P}delete-protection has no effect: flannel-alivpc's SLB controller does not implement "
         f"'delete-protection'", 1)]
    unread = [r.getMessage() for r in caplog.records if "has no effect" in r.getMessage()]
    assert len(unread) == 2 and all(m.startswith("service default/web: annotation ") for m in unread)

    # A new unread annotation is reported once; the ones already reported are not repeated.
    bed.patch_annotations("web", {P + "forward-port": "80:443"})
    wait_for(lambda: len(bed.events("web", "UnsupportedAnnotation")) == 2)
    time.sleep(0.6)  # a few more resyncs
    assert [count for _, count in _events(bed, "UnsupportedAnnotation")] == [1, 1]
    assert len(_events(bed, "UnknownAnnotation")) == 1
