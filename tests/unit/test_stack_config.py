from pathlib import Path

from retail_backbone.stack.config import DEFAULT_HEAPS, DEFAULT_PORTS, StackConfig


def test_defaults_when_nothing_is_set(tmp_path: Path):
    cfg = StackConfig.load(path=tmp_path / "absent.toml", env={"HOME": str(tmp_path), "USER": "u"})
    assert cfg.port("kafka") == DEFAULT_PORTS["kafka"] == 9092
    assert cfg.heap("flink_taskmanager") == DEFAULT_HEAPS["flink_taskmanager"]
    assert cfg.cache_dir == (tmp_path / ".cache" / "retail-backbone").resolve()
    assert cfg.run_dir == Path("/var/tmp/retail-backbone-u").resolve()


def test_file_then_environment_override(tmp_path: Path):
    conf = tmp_path / "stack.toml"
    conf.write_text(
        'cache_dir = "/c"\nrun_dir = "/r"\n[ports]\nkafka = 19092\npostgres = 15432\n'
        '[heaps]\nkafka = "1g"\n'
    )
    env = {"BACKBONE_KAFKA_PORT": "29092", "BACKBONE_NEO4J_HEAP": "256m", "USER": "u"}
    cfg = StackConfig.load(path=conf, env=env)
    assert cfg.port("kafka") == 29092  # env beats file
    assert cfg.port("postgres") == 15432  # file beats default
    assert cfg.heap("kafka") == "1g"
    assert cfg.heap("neo4j") == "256m"
    assert cfg.cache_dir == Path("/c") and cfg.run_dir == Path("/r")


def test_config_file_named_by_environment(tmp_path: Path):
    conf = tmp_path / "other.toml"
    conf.write_text("[ports]\nmongo = 27999\n")
    cfg = StackConfig.load(env={"BACKBONE_STACK_CONFIG": str(conf), "USER": "u"})
    assert cfg.port("mongo") == 27999
