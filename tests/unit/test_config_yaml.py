"""What runbook.yaml's YAML may not do (issue 15, item 6): give a key twice, expand aliases
without bound; and what it still may: anchors, aliases and `<<` merges of modest size."""

from __future__ import annotations

import pytest

from runbook.config import parse_config
from runbook.errors import ConfigError


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return str(caught.value)


def test_a_nested_key_given_twice_names_its_place_and_both_lines():
    message = error_of(
        "catalog: sqlite:///c.db\n"
        "targets:\n"
        "  files:\n"
        "    - name: conf\n"
        "      paths: [.]\n"
        "      name: other\n"
    )
    assert "targets.files[0]: 'name' is given twice, at line 4 and line 6" in message


def test_a_key_given_twice_on_one_line_is_refused_too():
    message = error_of("catalog: sqlite:///c.db\nretention: {keep_last: 3, keep_last: 4}\n")
    assert "retention: 'keep_last' is given twice, at line 2 and line 2" in message


def test_anchors_aliases_and_merges_still_work():
    config = parse_config(
        "catalog: sqlite:///c.db\n"
        "targets:\n"
        "  postgres:\n"
        "    - &pg {name: app, dsn: 'postgresql://u@h/app', connect_timeout: 9s}\n"
        "    - {<<: *pg, name: app2, dsn: 'postgresql://u@h/app2'}\n"
    )
    first, second = config.targets.postgres
    assert second.name == "app2" and second.connect_timeout == first.connect_timeout


@pytest.mark.parametrize(
    "text",
    [
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{chr(98 + n)}: &{chr(98 + n)} [{', '.join([f'*{chr(97 + n)}'] * 10)}]\n"
            for n in range(5)
        ),
        "a: &a [1, *a]\n",  # an alias inside its own anchor: endless once expanded
    ],
    ids=["bomb", "self"],
)
def test_aliases_that_expand_without_bound_are_refused(text):
    assert "aliases (*name) would expand to more than 100,000 values" in error_of(text)
