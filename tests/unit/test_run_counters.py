"""RunCounters: the counter arithmetic every job summary relies on."""

from retail_backbone.pipelines.run_counters import SINK_COUNTERS, RunCounters


def test_dead_letters_split_by_stage_and_class_and_sinks_only_when_counted():
    counters = RunCounters(
        {
            ("dead_letters", "DecodeEvents"): 3,
            ("dead_letters", "DecodeEvents.BadMagicByte"): 2,
            ("dead_letters", "DecodeEvents.CorruptPayload"): 1,
            ("dead_letters", "files_written"): 3,  # the file sink's own count, not a letter
            ("inv", "WriteStockLevels.written"): 7,
            ("inv", "ReadEventFiles.records_read"): 10,
            ("kafka", "records_read"): 12,
        }
    )
    assert counters.dead_letters_by_stage() == {"DecodeEvents": 3}
    assert counters.dead_letters_by_class() == {"BadMagicByte": 2, "CorruptPayload": 1}
    assert counters.events_in("inv", "batch") == 10 and counters.events_in("inv", "streaming") == 12
    sinks = counters.sinks("inv", ("WriteStockLevels", "ServeStockLevels"))
    assert list(sinks) == ["WriteStockLevels"]
    assert sinks["WriteStockLevels"] == {k: 7 if k == "written" else 0 for k in SINK_COUNTERS}
