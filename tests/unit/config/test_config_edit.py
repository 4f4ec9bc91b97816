"""mdriver.config.edit on a real file: validated read-modify-write with compare-and-swap."""
import os

import pytest

from mdriver.config import ConfigError, FileSource, load_config
from mdriver.config.edit import remove_migration, set_migration, update_document
from mdriver.config.publish import set_migration_phase

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "sharding.yaml"
    path.write_text(open(os.path.join(ROOT, "config", "sharding.yaml")).read())
    return str(path)


def test_migration_block_lifecycle(config_file):
    snap = set_migration(config_file, "app", "user_relation",
                         {"source": {"datasource": "ds0", "database": "app", "table": "user_relation"}})
    rule = load_config(config_file).schemas["app"].tables["user_relation"]
    assert (rule.migration.reads, rule.migration.writes) == ("source", "source")
    assert snap.revision == FileSource(config_file).read().revision
    set_migration_phase(config_file, "app", "user_relation", reads="shadow")
    set_migration_phase(config_file, "app", "user_relation", writes="fenced")
    m = load_config(config_file).schemas["app"].tables["user_relation"].migration
    assert (m.reads, m.writes) == ("shadow", "fenced")
    remove_migration(config_file, "app", "user_relation")
    assert load_config(config_file).schemas["app"].tables["user_relation"].migration is None


def test_invalid_results_are_refused_and_nothing_is_written(config_file):
    before = open(config_file).read()
    with pytest.raises(ConfigError) as e:
        set_migration(config_file, "app", "user_relation",
                      {"source": {"datasource": "nope", "database": "app", "table": "user_relation"}})
    assert "datasource 'nope' is not defined" in str(e.value)
    with pytest.raises(ConfigError):
        set_migration_phase(config_file, "app", "user_relation", reads="shadow")  # no migration block
    with pytest.raises(ValueError):
        set_migration_phase(config_file, "app", "user_relation", reads="sideways")
    assert open(config_file).read() == before


def test_a_concurrent_writer_causes_a_retry_not_a_lost_update(config_file):
    calls = []

    def mutate(doc):
        calls.append(1)
        if len(calls) == 1:  # another operator changes the file between our read and our write
            text = open(config_file).read().replace("max_offset: 100000", "max_offset: 5000")
            with open(config_file, "w") as f:
                f.write(text)
        doc["router"]["allow_scatter_dml"] = True

    update_document(config_file, mutate)
    config = load_config(config_file)
    assert len(calls) == 2
    assert config.router.allow_scatter_dml is True and config.router.max_offset == 5000
