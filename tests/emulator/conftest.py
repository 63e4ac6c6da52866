"""Fixtures for the emulator tests: an SDK client bound to the running emulator."""

from __future__ import annotations

import pytest

from flannel_alivpc.emulator.server import Emulator
from tests.emulator.sdk import Cloud


@pytest.fixture
def cloud(emulator: Emulator) -> Cloud:
    return Cloud(emulator)
