"""Helpers of the driver tests: config variants of the shared cluster, direct backend reads."""
import yaml


def variant(cluster, tmp_path, name, edit):
    """Write the cluster config changed by ``edit(doc)`` to ``tmp_path/name.yaml``; returns its path."""
    with open(cluster.config_path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    edit(doc)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def rewrite(path, edit):
    """Change a config file in place (what an operator does); returns the new content."""
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    edit(doc)
    text = yaml.safe_dump(doc, sort_keys=False)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return text


def table(doc, name):
    return doc["schemas"]["app"]["tables"][name]


def direct_rows(cluster, ds, sql, args=None, database=None):
    """Rows straight from a backend, bypassing mdriver (to check where data really went)."""
    conn = cluster.connect(ds, database)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


def freeze(inst, timeout=5.0):
    """SIGSTOP a server and wait until the kernel reports it stopped (delivery is asynchronous)."""
    import signal
    import time

    inst.kill(signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{inst.pid}/stat", encoding="ascii") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        time.sleep(0.01)
    raise AssertionError(f"{inst!r} did not stop")
