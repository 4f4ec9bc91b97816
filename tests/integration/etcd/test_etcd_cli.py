"""``mdriver-config push/get/diff/history/rollback/clients`` against a real etcd."""
from __future__ import annotations

import json

import pytest

from etcd_helpers import BASE_TEXT, variant
from mdriver.config.cli import EXIT_CONFLICT, EXIT_INVALID, EXIT_OK, main

pytestmark = pytest.mark.etcd


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def files(tmp_path):
    def write(name: str, text: str) -> str:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return str(path)
    return write


def test_push_validates_prints_the_diff_and_publishes(capsys, files, source):
    v1, v2 = files("v1.yaml", BASE_TEXT), files("v2.yaml", variant(5000))
    code, out, err = run(capsys, "push", v1, "--source", source.url, "-m", "first")
    assert code == EXIT_OK, err
    r1 = source.read().revision
    assert f"published revision {r1} to {source.url} (was empty)" in out
    assert f"--- {source.url} (empty)" in out and "+version: 1" in out

    code, out, err = run(capsys, "push", v2, "--source", source.url)
    assert code == EXIT_OK, err
    r2 = source.read().revision
    assert "-  max_offset: 100000\n+  max_offset: 5000\n" in out
    assert f"published revision {r2} to {source.url} (was {r1})" in out

    code, out, _ = run(capsys, "push", files("v3.yaml", variant(3)), "--source", source.url, "--dry-run")
    assert code == EXIT_OK and "+  max_offset: 3\n" in out and "dry run: " in out and "nothing was written" in out
    assert source.read().revision == r2

    code, out, _ = run(capsys, "push", v2, "--source", source.url)
    assert code == EXIT_OK and "already holds this config" in out and source.read().revision == r2
    assert [e.message for e in source.history()] == ["push v2.yaml", "first"]


def test_an_invalid_push_is_refused_and_nothing_is_written(capsys, files, source):
    run(capsys, "push", files("ok.yaml", BASE_TEXT), "--source", source.url)
    before = source.read().revision
    bad = files("bad.yaml", BASE_TEXT.replace("    port: 13307", "    prot: 13307"))
    code, out, err = run(capsys, "push", bad, "--source", source.url)
    assert code == EXIT_INVALID
    assert f"error: datasources.ds1.prot: unknown key (did you mean 'port'?)" in err
    assert "error: datasources.ds1.port: required key is missing" in err
    assert "Traceback" not in err and out == ""
    assert source.read().revision == before and len(source.history()) == 1


def test_two_operators_pushing_from_the_same_revision_one_gets_a_conflict(capsys, files, source, monkeypatch):
    monkeypatch.setenv("MDRIVER_CONFIG", source.url)  # the default source
    run(capsys, "push", files("base.yaml", BASE_TEXT))
    reviewed = source.read().revision
    code, out, err = run(capsys, "diff", files("alice.yaml", variant(1)))
    assert code == EXIT_OK and f"--expect {reviewed}" in err

    code, out, err = run(capsys, "push", files("alice.yaml", variant(1)), "--expect", reviewed, "-m", "alice's change")
    assert code == EXIT_OK, err
    won = source.read().revision
    code, out, err = run(capsys, "push", files("bob.yaml", variant(2)), "--expect", reviewed, "-m", "bob's change")
    assert code == EXIT_CONFLICT
    assert f"error: conflict: the config at {source.url} is at revision {won}, not {reviewed}; nothing was written" in err
    assert source.read().revision == won and "max_offset: 1\n" in source.read().text


def test_get_diff_history_and_rollback(capsys, files, source):
    v1 = files("v1.yaml", BASE_TEXT)
    run(capsys, "push", v1, "--source", source.url, "-m", "v1")
    r1 = source.read().revision
    run(capsys, "push", files("v2.yaml", variant(2000)), "--source", source.url, "-m", "v2")
    r2 = source.read().revision

    code, out, err = run(capsys, "get", "--source", source.url)
    assert code == EXIT_OK and out == variant(2000) and f"# revision {r2} of {source.url}" in err
    code, out, _ = run(capsys, "get", "--source", source.url, "--revision", r1)
    assert code == EXIT_OK and out == BASE_TEXT

    code, out, _ = run(capsys, "diff", v1, "--source", source.url)
    assert code == EXIT_OK and "-  max_offset: 2000\n+  max_offset: 100000\n" in out
    code, out, _ = run(capsys, "diff", files("same.yaml", variant(2000)), "--source", source.url)
    assert code == EXIT_OK and "no differences" in out

    code, out, _ = run(capsys, "rollback", r1, "--source", source.url, "-m", "bad offset")
    assert code == EXIT_OK, out
    r3 = source.read().revision
    assert source.read().text == BASE_TEXT and int(r3) > int(r2)
    assert f"published revision {r3}" in out and "+  max_offset: 100000" in out

    code, out, _ = run(capsys, "history", "--source", source.url)
    lines = out.splitlines()
    assert code == EXIT_OK and "REVISION" in lines[0]
    assert lines[1].startswith(f"* {r3:>9}") and lines[1].endswith(f"rollback to revision {r1}: bad offset")
    assert lines[2].startswith(f"  {r2:>9}") and lines[2].endswith("v2")
    assert lines[3].startswith(f"  {r1:>9}") and lines[3].endswith("v1")

    code, _, err = run(capsys, "rollback", "999999", "--source", source.url)
    assert code == EXIT_INVALID and "revision 999999 is not a config version" in err


def test_get_flags_a_corrupted_key_and_history_notes_outside_writes(capsys, files, source):
    run(capsys, "push", files("v1.yaml", BASE_TEXT), "--source", source.url)
    rev = source.put(source.config_key, "version: 2\n")
    code, out, err = run(capsys, "get", "--source", source.url)
    assert code == EXIT_INVALID and out == "version: 2\n"
    assert f"warning: revision {rev} is invalid; running processes ignore it" in err
    assert "unsupported config version 2" in err
    code, out, _ = run(capsys, "history", "--source", source.url)
    assert f"current revision {rev} was written outside mdriver-config" in out


def test_clients_lists_live_processes(capsys, source, make_registration):
    run(capsys, "clients", "--source", source.url)
    code, out, _ = run(capsys, "clients", "--source", source.url)
    assert code == EXIT_OK and "no live clients" in out
    source.write(BASE_TEXT, None)
    rev = source.read().revision
    a = make_registration(source.url, "driver", revision=rev)
    b = make_registration(source.url, "proxy", revision="1")
    assert a.wait_registered(2) and b.wait_registered(2)
    code, out, _ = run(capsys, "clients", "--source", source.url)
    rows = {line.split()[0]: line for line in out.splitlines()[1:-1]}
    assert rows[a.id].split()[1:2] == ["driver"] and rows[a.id].endswith("current")
    assert rows[b.id].endswith("behind")
    assert out.splitlines()[-1] == f"2 live client(s); config revision {rev}"
    code, out, _ = run(capsys, "clients", "--source", source.url, "--json")
    data = {c["id"]: c for c in json.loads(out)}
    assert data[a.id]["current"] is True and data[b.id]["revision"] == "1" and data[b.id]["kind"] == "proxy"


def test_check_reads_an_etcd_url(capsys, source):
    source.write(BASE_TEXT, None)
    code, out, _ = run(capsys, "check", source.url)
    assert code == EXIT_OK and f"revision {source.read().revision}" in out and out.rstrip().endswith("OK")


def test_source_errors_are_one_line_messages(capsys, files, monkeypatch, tmp_path):
    monkeypatch.delenv("MDRIVER_CONFIG", raising=False)
    code, _, err = run(capsys, "get")
    assert code == EXIT_INVALID and err.strip() == "error: no config source: pass --source etcd://host:port/prefix or set MDRIVER_CONFIG"
    code, _, err = run(capsys, "history", "--source", files("c.yaml", BASE_TEXT))
    assert code == EXIT_INVALID and "'history' needs an etcd source" in err
    code, _, err = run(capsys, "get", "--source", "etcd://127.0.0.1:9/mdriver?timeout=1")
    assert code == EXIT_INVALID and err.startswith("error: etcd unreachable (127.0.0.1:9 connection refused)")
    code, _, err = run(capsys, "push", str(tmp_path / "missing.yaml"), "--source", "etcd://127.0.0.1:9/x")
    assert code == EXIT_INVALID and "missing.yaml: cannot read config: No such file or directory" in err
