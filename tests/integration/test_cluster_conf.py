"""The nats-server cluster configurations shipped in conf/nats-cluster/ (README, Running three)."""

import re
import subprocess
from pathlib import Path

import pytest

from resonate_sync.transport.embedded import nats_server_binary

CONFS = sorted((Path(__file__).resolve().parents[2] / "conf" / "nats-cluster").glob("node-*.conf"))


def test_there_are_three_nodes():
    assert [conf.name for conf in CONFS] == ["node-1.conf", "node-2.conf", "node-3.conf"]


@pytest.mark.parametrize("conf", CONFS, ids=lambda c: c.name)
def test_nats_server_accepts_the_configuration(conf, tmp_path):
    """nats-server itself checks the file (-t: test the configuration and exit)."""
    done = subprocess.run([nats_server_binary(), "-t", "-c", str(conf)], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("conf", CONFS, ids=lambda c: c.name)
def test_each_node_fsyncs_every_write_and_routes_to_all_three(conf):
    """What the README promises of these files: sync_interval always, one cluster of three routes, own store."""
    text = conf.read_text()
    assert re.search(r"^\s*sync_interval:\s*always\s*$", text, re.M)
    assert sorted(re.findall(r"nats-route://127\.0\.0\.1:(\d+)", text)) == ["6222", "6223", "6224"]
    number = conf.stem.split("-")[1]
    assert f'store_dir: "./nats-data/n{number}"' in text and f"server_name: n{number}" in text
