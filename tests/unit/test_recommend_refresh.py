"""Streaming lists are computed when a profile fires and once more when its day has closed."""

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window
from apache_beam.utils.timestamp import Timestamp

from retail_backbone.testing import customer_profile
from retail_backbone.transforms.personalization.recommend import (
    DAY_MS,
    _RefreshAtWindowCloseFn,
    recommendation_revision,
)

DAY0 = 1_764_028_800_000  # 2025-11-25T00:00Z
LATENESS_MS = 3_600_000


def _at(ms: int) -> Timestamp:
    return Timestamp(micros=ms * 1000)


def _profile(key: str, version: int, revision: int):
    return customer_profile(customer_key=key, version=version, revision=revision)


class _Tag(beam.DoFn):
    """(key, version, revision, final, output time in ms): what left the step, and when."""

    def process(self, element, ts=beam.DoFn.TimestampParam):
        profile, final = element
        yield (profile.customer_key, profile.version, profile.revision, final, ts.micros // 1000)


def test_the_newest_profile_of_a_day_is_refreshed_once_when_the_day_has_closed():
    closes = DAY0 + DAY_MS + LATENESS_MS
    first, refined = _profile("a", DAY0 + 10, 5), _profile("a", DAY0 + 10, 7)
    stale, other = _profile("a", DAY0 + 5, 9), _profile("b", DAY0 + 20, 1)
    stream = (
        TestStream()
        .advance_watermark_to(_at(DAY0))
        .add_elements([window.TimestampedValue(("a", first), (DAY0 + 10) / 1000)])
        .add_elements([window.TimestampedValue(("a", refined), (DAY0 + 11) / 1000)])
        .add_elements([window.TimestampedValue(("a", stale), (DAY0 + 12) / 1000)])
        .add_elements([window.TimestampedValue(("b", other), (DAY0 + 20) / 1000)])
        .advance_watermark_to(_at(closes - 1))  # not yet: the day is still open to late data
        .advance_watermark_to(_at(closes))
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as p:
        out = p | stream | beam.ParDo(_RefreshAtWindowCloseFn(LATENESS_MS)) | beam.ParDo(_Tag())
        assert_that(
            out,
            equal_to(
                [
                    # every profile goes on at once, the stale one too (the sinks drop its list)
                    ("a", DAY0 + 10, 5, False, DAY0 + 10),
                    ("a", DAY0 + 10, 7, False, DAY0 + 11),
                    ("a", DAY0 + 5, 9, False, DAY0 + 12),
                    ("b", DAY0 + 20, 1, False, DAY0 + 20),
                    # then once per customer, the newest profile, when its day has closed
                    ("a", DAY0 + 10, 7, True, closes),
                    ("b", DAY0 + 20, 1, True, closes),
                ]
            ),
        )


def test_a_profile_after_its_day_has_closed_is_refreshed_at_once():
    closes = DAY0 + DAY_MS + LATENESS_MS
    late = _profile("a", DAY0 + 30, 3)
    stream = (
        TestStream()
        .advance_watermark_to(_at(closes + 60_000))
        .add_elements([window.TimestampedValue(("a", late), (closes + 60_000) / 1000)])
        .advance_watermark_to(_at(closes + 120_000))
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as p:
        out = p | stream | beam.ParDo(_RefreshAtWindowCloseFn(LATENESS_MS)) | beam.ParDo(_Tag())
        keys = out | beam.Map(lambda t: t[:4])
        assert_that(keys, equal_to([("a", DAY0 + 30, 3, False), ("a", DAY0 + 30, 3, True)]))


def test_a_final_list_outranks_the_first_list_of_its_profile_and_a_newer_profile_both():
    assert recommendation_revision(7, True) > recommendation_revision(7, False)
    assert recommendation_revision(8, False) > recommendation_revision(7, True)
