"""Boolean params take --name, --name=true and --name=false (Flex Templates pass name=value)."""

from __future__ import annotations

import pytest

from retail_backbone.pipelines.inventory import InventoryOptions
from retail_backbone.pipelines.params import parse_bool


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], False),
        (["--dead_letters_to_kafka"], True),
        (["--dead_letters_to_kafka=true"], True),
        (["--dead_letters_to_kafka=False"], False),
        (["--dead_letters_to_kafka", "--mode=batch"], True),
    ],
)
def test_boolean_param_forms(argv, expected):
    opts = InventoryOptions(argv)
    assert opts.dead_letters_to_kafka is expected
    # Beam round-trips options through a dict when it ships them to workers.
    again = InventoryOptions.from_dictionary(opts.get_all_options())
    assert again.dead_letters_to_kafka is expected


def test_parse_bool_rejects_other_words():
    assert parse_bool("YES") is True and parse_bool("0") is False
    with pytest.raises(ValueError, match="not a boolean"):
        parse_bool("maybe")


def test_help_texts_with_percent_signs_render():
    # argparse formats help strings with %; a literal "95%" must not break --help.
    import argparse

    from retail_backbone.pipelines.params import Param, add_params

    parser = argparse.ArgumentParser()
    add_params(parser, [Param("z", "Service level (1.65 is about 95%).", type=float, default=1.65)])
    assert "about 95%" in parser.format_help()
