"""Value systems: the built-in ones by name, with ValueBench's exact spellings, and the user's own lists."""

import difflib
import json
from functools import cache
from importlib import resources
from pathlib import Path

from ..streaming.errors import GpvError, UsageError
from ..streaming.lists import comma_list

# Built-in systems and the ValueBench inventory each one is (DESIGN.md: PVQ40, VSM13, LVI, NFCC2000).
SYSTEMS = {"schwartz": "PVQ40", "vsm": "VSM13", "lvi": "LVI", "nfcc": "NFCC2000"}

# Schwartz's higher-order values as means of basic values (Schwartz 1992; Hedonism shares Openness to
# Change and Self-Enhancement and is counted in both).
HIGHER_ORDER = {
    "Self-Transcendence": ["Universalism", "Benevolence"],
    "Self-Enhancement": ["Achievement", "Power", "Hedonism"],
    "Openness to Change": ["Self-Direction", "Stimulation", "Hedonism"],
    "Conservation": ["Security", "Conformity", "Tradition"],
}


@cache
def inventories():
    """{inventory: [value, …]} for all ValueBench inventories, from the package's own copy of the names."""
    text = resources.files("gpvtools").joinpath("data/valuebench_values.json").read_text(encoding="utf-8")
    return json.loads(text)["inventories"]


def system(name):
    """The value names of a built-in system ('all': the four, in order, without repeats)."""
    if name == "all":
        seen = {}
        for key in SYSTEMS:
            seen.update(dict.fromkeys(system(key)))
        return list(seen)
    return list(inventories()[SYSTEMS[name]])


def known_values():
    """{lower-cased name: ValueBench spelling} over every inventory."""
    return {v.lower(): v for values in inventories().values() for v in values}


def resolve(spec, warn=None):
    """Value names from --values: a system name, a comma list (systems may appear in it), or @FILE.

    Names ValueBench knows get its exact spelling (the model was trained on those); other names are
    kept as given, since GPV is open-vocabulary, and reported through `warn`.
    """
    if spec.startswith("@"):
        path = Path(spec[1:])
        try:
            items = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        except OSError as e:
            raise GpvError(f"--values {spec}: cannot read {path}: {e.strerror}") from None
        items = [i for i in items if i and not i.startswith("#")]
    else:
        items = comma_list(spec)
    if not items:
        raise UsageError(f"--values '{spec}' names no value")
    known = known_values()
    names = {}
    for item in items:
        if item.lower() in SYSTEMS or item.lower() == "all":
            names.update(dict.fromkeys(system(item.lower())))
            continue
        if item.lower() in known:
            names[known[item.lower()]] = None
            continue
        close = difflib.get_close_matches(item.lower(), [*SYSTEMS, "all"], n=1, cutoff=0.75)
        if close or ("," not in spec and not spec.startswith("@") and item.islower()):
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(f"unknown value system '{item}'{hint}; known: {', '.join([*SYSTEMS, 'all'])}; "
                             f"for values of your own give a comma list or @FILE (see --list-values)")
        if warn:
            warn(f"'{item}' is not a ValueBench value; the model was not trained on it (GPV is open-vocabulary)")
        names[item] = None
    return list(names)


def listing():
    """The text of --list-values."""
    lines = []
    for key, inventory in SYSTEMS.items():
        lines.append(f"{key} ({inventory}):")
        lines += [f"  {v}" for v in system(key)]
    lines.append("Any ValueBench value, or any name of your own, may be given in a comma list or @FILE.")
    return "\n".join(lines)
