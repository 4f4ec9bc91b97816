"""Server option handling, ports and binary lookup of the sandbox (no server started)."""
from __future__ import annotations

import os
import socket

import pytest

from mdriver.sandbox.cluster import (
    MariaDBInstance,
    MariaDBNotInstalled,
    find_binaries,
    free_port,
    merge_options,
    option_args,
    port_in_use,
)


def test_options_merge_and_render():
    merged = merge_options({"log-bin": "mysql-bin", "server-id": 1, "skip-name-resolve": True},
                           {"log_bin": None, "binlog_format": "MIXED", "server_id": 9})
    assert merged == {"log-bin": None, "server-id": 9, "skip-name-resolve": True, "binlog-format": "MIXED"}
    assert option_args(merged) == ["--server-id=9", "--skip-name-resolve", "--binlog-format=MIXED"]


def test_instance_command_line_has_binlog_settings_and_private_paths(tmp_path):
    inst = MariaDBInstance("x", str(tmp_path / "x"), port=4321, server_id=7, options={"sync_binlog": 1})
    argv = inst.argv()
    assert argv[1] == "--no-defaults"  # must come first, or system my.cnf files are read
    for arg in ("--binlog-format=ROW", "--binlog-row-image=FULL", "--binlog-row-metadata=FULL", "--server-id=7",
                "--port=4321", f"--datadir={tmp_path / 'x'}", f"--tmpdir={tmp_path / 'x'}.tmp", "--sync-binlog=1",
                "--bind-address=127.0.0.1", "--table-definition-cache=8192"):
        assert arg in argv
    assert "--sync-binlog=0" not in argv
    assert not inst.is_alive() and inst.pid is None


def test_long_datadir_gets_a_short_socket(tmp_path):
    deep = tmp_path / ("d" * 120)
    inst = MariaDBInstance("x", str(deep), port=1)
    assert len(inst.socket_path) <= 100
    assert inst.socket_path != MariaDBInstance("y", str(deep) + "2", port=1).socket_path


def test_stale_pid_file_is_not_ours(tmp_path):
    inst = MariaDBInstance("x", str(tmp_path / "x"), port=1)
    os.makedirs(inst.datadir)
    with open(inst.pid_path, "w") as f:
        f.write(f"{os.getpid()}\n")  # a live process, but not a mariadbd on this datadir
    assert inst.pid is None and not inst.is_alive()
    inst.stop()  # nothing to stop; must not signal the unrelated pid
    inst.kill()


def test_port_in_use_sees_a_listener():
    port = free_port()
    assert not port_in_use("127.0.0.1", port)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(1)
        assert port_in_use("127.0.0.1", port)


def test_missing_binaries_say_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("MDRIVER_MARIADB_PATH", str(tmp_path))
    with pytest.raises(MariaDBNotInstalled) as info:
        find_binaries()
    assert str(info.value).endswith("install it with: sudo apt-get install mariadb-server mariadb-client")
    for name in ("mariadbd", "mariadb-install-db"):
        exe = tmp_path / name
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    found = find_binaries()
    assert (found.mariadbd, found.install_db) == (str(tmp_path / "mariadbd"), str(tmp_path / "mariadb-install-db"))
