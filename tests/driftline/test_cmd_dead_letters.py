"""``driftline dead-letters``: replay refused records from the real flow's dead-letter topic
back to a topic, original bytes and key with lineage headers, exactly once across runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from driftline.cli import main
from driftline.config import load_config
from driftline.flows.enrich import build_enrich_flow
from driftline.producer import produce
from driftline.runner import run_flow
from driftline.testing.kafka import consume_all

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def dead_letters(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, list]:
    """A real enrich run over 2,000 events, 8% malformed: the dead-letter topic it filled."""
    import uuid

    tmp = tmp_path_factory.mktemp("dlq")
    topic = f"dlq-src-{uuid.uuid4().hex[:8]}"
    settings = {"kafka": {"bootstrap_servers": kafka_bootstrap, "input_topic": topic, "dead_letter_topic": f"{topic}.dlq", "output_topic": f"{topic}.out"}, "sinks": {"root": str(tmp / "out")}}
    config_file = tmp / "driftline.yaml"
    config_file.write_text(yaml.safe_dump(settings))
    sent = produce(kafka_bootstrap, topic, 2000, seed=3, invalid_rate=0.08, pii_rate=0.0, progress=False)
    run_flow(build_enrich_flow(load_config(str(config_file), env={}), drain=True, state_dir=tmp / "rec"), recovery_dir=tmp / "rec", epoch_interval=2.0)
    return config_file, f"{topic}.dlq", sent


def replay(config_file: Path, capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert main(["--config", str(config_file), "dead-letters", "replay", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_replaying_100_dead_letters_twice_puts_exactly_100_on_the_target(dead_letters, kafka_bootstrap: str, unique_topic, capsys) -> None:
    config_file, dlq_topic, sent = dead_letters
    dlq = consume_all(kafka_bootstrap, dlq_topic)
    assert len(dlq) == sum(1 for e in sent if e.defect) > 120
    target = unique_topic("replayed")
    first = replay(config_file, capsys, "--to", target, "--limit", "100", "--batch", "30")
    second = replay(config_file, capsys, "--to", target, "--limit", "100", "--batch", "30")
    assert (first["sent"], first["already_replayed"]) == (100, 0)
    assert (second["sent"], second["already_replayed"]) == (0, 100)
    out = consume_all(kafka_bootstrap, target)
    assert len(out) == 100
    # original bytes and key, lineage headers pointing back at the dead letter and the source record
    by_coord = {f"{m.topic}+{m.partition}+{m.offset}": m for m in dlq}
    assert len({m.headers["driftline.replay.dlq"] for m in out}) == 100
    for m in out:
        src = by_coord[m.headers["driftline.replay.dlq"].decode()]
        assert (m.value, m.key) == (src.value, src.key)
        assert m.headers["driftline.replay.src"].decode() == "+".join(src.headers[f"driftline.src.{k}"].decode() for k in ("topic", "partition", "offset"))
        assert m.headers["driftline.replay.reason_codes"] == src.headers["driftline.reason_codes"]
        assert m.headers["driftline.replay.id"].decode() == first["replay_id"]
    # without the limit, only the rest is sent; then nothing
    rest = replay(config_file, capsys, "--to", target)
    assert (rest["sent"], rest["already_replayed"]) == (len(dlq) - 100, 100)
    assert replay(config_file, capsys, "--to", target)["sent"] == 0
    assert len(consume_all(kafka_bootstrap, target)) == len(dlq)


def test_reason_and_stage_filters_and_summary(dead_letters, kafka_bootstrap: str, unique_topic, capsys) -> None:
    config_file, dlq_topic, _sent = dead_letters
    dlq = consume_all(kafka_bootstrap, dlq_topic)
    bad_json = [m for m in dlq if "bad_json" in json.loads(m.headers["driftline.reason_codes"])]
    schema = [m for m in dlq if any(c.startswith("schema.") for c in json.loads(m.headers["driftline.reason_codes"]))]
    assert bad_json and schema
    target = unique_topic("bad-json")
    res = replay(config_file, capsys, "--to", target, "--reason", "bad_json")
    assert res["sent"] == len(bad_json)
    assert sorted(m.value for m in consume_all(kafka_bootstrap, target)) == sorted(m.value for m in bad_json)
    assert replay(config_file, capsys, "--to", unique_topic("schema"), "--reason", "schema.*")["sent"] == len(schema)
    assert replay(config_file, capsys, "--to", unique_topic("none"), "--since", "2100-01-01T00:00Z")["sent"] == 0
    capsys.readouterr()
    assert main(["--config", str(config_file), "dead-letters", "summary"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{len(dlq)} dead letters in {dlq_topic}") and "bad_json" in out


def test_unknown_topic_is_a_clear_error(dead_letters, capsys) -> None:
    config_file, _dlq, _sent = dead_letters
    assert main(["--config", str(config_file), "dead-letters", "replay", "--from", "no-such-topic-xyz", "--to", "t"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_replay_killed_mid_way_then_rerun_sends_each_dead_letter_once(dead_letters, kafka_bootstrap: str, unique_topic) -> None:
    """SIGKILL a replay after its first transactions (more are open or pending), run it again:
    read_committed consumers (the flow's default) see every selected dead letter exactly once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from confluent_kafka import Consumer, KafkaException, TopicPartition

    config_file, dlq_topic, _sent = dead_letters
    total = len(consume_all(kafka_bootstrap, dlq_topic))
    target = unique_topic("killed")
    cmd = [sys.executable, "-m", "driftline.cli", "--config", str(config_file), "dead-letters", "replay", "--to", target, "--batch", "3"]
    probe = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "probe"})
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            meta = probe.list_topics(timeout=5).topics.get(target)  # the topic appears with the first message
            parts = sorted(meta.partitions) if meta is not None and meta.error is None else []
            try:
                high = sum(probe.get_watermark_offsets(TopicPartition(target, p), timeout=5)[1] for p in parts)
            except KafkaException:  # a new topic's partitions may have no leader yet
                high = 0
            if high >= 12:  # a few transactions committed
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the replay finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        probe.close()
        if proc.poll() is None:
            proc.kill()
    partial = consume_all(kafka_bootstrap, target)
    assert 0 < len(partial) < total
    rerun = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    res = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert res["already_replayed"] == len(partial) and res["sent"] == total - len(partial)
    out = consume_all(kafka_bootstrap, target)
    assert len(out) == total and len({m.headers["driftline.replay.dlq"] for m in out}) == total
