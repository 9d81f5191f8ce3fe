"""The test tree's own rule: pytest imports each test module by its file name alone (its default
"prepend" import mode, and no ``__init__.py`` in tests/), so two files of one name in different
directories stop the whole run at collection ("import file mismatch")."""
from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_file_name_is_unique():
    places = defaultdict(list)
    for path in TESTS.rglob("test_*.py"):
        places[path.name].append(str(path.relative_to(TESTS)))
    assert not {name: where for name, where in places.items() if len(where) > 1}
