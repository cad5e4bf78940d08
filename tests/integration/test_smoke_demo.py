import psycopg

from retail_backbone.pipelines import smoke
from retail_backbone.stack.components.postgres import dsn


def test_demo_moves_every_event_from_kafka_through_prism_into_postgres(stack):
    cfg = stack.require("kafka", "postgres", "prism")
    lines: list[str] = []
    summary = smoke.run_demo(events=2000, seed=11, runner="prism", progress=lines.append, bad=4)
    assert summary.problems == []
    assert summary.read == summary.produced == 2003  # 2000 events + 4 corrupt - 1 sent early
    assert summary.decoded + summary.dead_letters == summary.read
    assert summary.dead_letters == summary.stored_dead_letters == summary.produced_bad
    with psycopg.connect(dsn(cfg)) as conn:
        stored = dict(
            conn.execute(
                "select event_type, count from smoke_event_counts where run_id = %s",
                (summary.run_id,),
            ).fetchall()
        )
        reasons = {
            r[0]
            for r in conn.execute(
                "select error_class from smoke_dead_letters where run_id = %s", (summary.run_id,)
            )
        }
    assert stored == summary.produced_by_type
    assert sum(stored.values()) == summary.decoded
    assert reasons == {"JSONDecodeError"}
    assert "OK: every event accounted for" in summary.render()
