"""Smoke test with Node's ``@alicloud/pop-core`` (the JavaScript RPC client, signature 1.0): GET with the
parameters in the query, POST with them in a form body, repeat lists, and a wrong secret.

Skipped, saying why, where node or npm is missing or the package cannot be installed. The package is
installed once into a cache outside the checkout (``$FLANNEL_ALIVPC_NODE_CACHE``, default
``~/.cache/flannel-alivpc/pop-core``) and reused, so the test costs one node start after that.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from flannel_alivpc.emulator.server import Emulator, Topology
from tests.conftest import EMULATOR_AK, EMULATOR_SECRET

POP_CORE = "@alicloud/pop-core@1.8.0"

SCRIPT = r"""
const RPCClient = require('@alicloud/pop-core').RPCClient;
const [endpoint, table, hop] = process.argv.slice(2);
const client = (secret) => new RPCClient({
  accessKeyId: process.env.EMULATOR_AK, accessKeySecret: secret, endpoint, apiVersion: '2016-04-28'});
const good = client(process.env.EMULATOR_SECRET);
(async () => {
  const out = {};
  out.vpcs = await good.request('DescribeVpcs', {RegionId: 'cn-hangzhou'}, {method: 'GET'});
  out.created = await good.request('CreateRouteEntries', {RegionId: 'cn-hangzhou', RouteEntries: [
    {RouteTableId: table, DstCidrBlock: '10.60.0.0/24', NextHop: hop, NextHopType: 'Instance'},
    {RouteTableId: table, DstCidrBlock: '10.61.0.0/24', NextHop: hop, NextHopType: 'Instance'}]},
    {method: 'POST'});
  out.entries = await good.request('DescribeRouteEntryList', {RegionId: 'cn-hangzhou', RouteTableId: table,
    RouteEntryType: 'Custom'}, {method: 'POST'});
  try {
    await client('wrong').request('DescribeVpcs', {RegionId: 'cn-hangzhou'}, {method: 'POST'});
    out.wrong = 'accepted';
  } catch (err) {
    out.wrong = {code: err.code, hostId: err.data && err.data.HostId};
  }
  console.log(JSON.stringify(out));
})().catch((err) => { console.error(String(err)); process.exit(1); });
"""


def _pop_core_dir() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed; the @alicloud/pop-core smoke test needs both")
    cache = Path(os.environ.get("FLANNEL_ALIVPC_NODE_CACHE", Path.home() / ".cache" / "flannel-alivpc" / "pop-core"))
    if not (cache / "node_modules" / "@alicloud" / "pop-core" / "package.json").exists():
        cache.mkdir(parents=True, exist_ok=True)
        try:
            result = subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix", str(cache), POP_CORE],
                capture_output=True, text=True, timeout=300, check=False)
        except subprocess.TimeoutExpired:
            pytest.skip(f"npm install {POP_CORE} took longer than 300 s")
        if result.returncode != 0:
            pytest.skip(f"npm install {POP_CORE} failed: {result.stderr.strip()[-300:]}")
    return cache


def test_pop_core_rpc_client(emulator: Emulator, topology: Topology, tmp_path: Path) -> None:
    cache = _pop_core_dir()
    script = tmp_path / "smoke.js"
    script.write_text(SCRIPT)
    # Credentials travel in the environment, never in argv.
    env = {**os.environ, "NODE_PATH": str(cache / "node_modules"), "EMULATOR_AK": EMULATOR_AK,
           "EMULATOR_SECRET": EMULATOR_SECRET}
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env.pop(name, None)
    result = subprocess.run(["node", str(script), emulator.endpoint, topology.route_table_id,
                             topology.instance_ids[0]], capture_output=True, text=True, timeout=60, env=env,
                            check=False)
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout)
    assert [v["VpcId"] for v in out["vpcs"]["Vpcs"]["Vpc"]] == [topology.vpc_id]
    assert (out["created"]["SuccessCount"], out["created"]["FailedCount"]) == (2, 0)
    assert sorted(e["DestinationCidrBlock"] for e in out["entries"]["RouteEntrys"]["RouteEntry"]) == [
        "10.60.0.0/24", "10.61.0.0/24"]
    assert out["wrong"] == {"code": "SignatureDoesNotMatch", "hostId": "vpc.aliyuncs.com"}
