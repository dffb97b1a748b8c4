"""Knowledge probes (LAMA-style, after Namburi et al. 2023, *The Cost of Compression*).

Pure parts, re-exported here: the probe file format (:mod:`.facts`), scoring and reports
(:mod:`.scoring`, :mod:`.report`), the live-traffic probe index and schedule (:mod:`.schedule`).
Imported by name only: :mod:`.plots` (matplotlib), :mod:`.live` (the online probing task that runs
inside the gateway) and :mod:`.batch` (the offline runner behind `driftgate probe` and the demo).
"""

from serving.probes.facts import (
    BUILTIN_PROBE_SETS,
    Fact,
    ProbeFileError,
    builtin_probe_path,
    load_builtin,
    load_probes,
    parse_probes,
    resolve_probes,
)
from serving.probes.schedule import ProbeSchedule, build_index, match_probe
from serving.probes.scoring import (
    VariantResult,
    VariantScore,
    build_report,
    candidates_for,
    format_table,
    hit_at_k,
    is_correct,
    normalize,
    rank_of_object,
    score_variant,
    validate_report,
)

__all__ = [
    "BUILTIN_PROBE_SETS",
    "Fact",
    "ProbeFileError",
    "ProbeSchedule",
    "VariantResult",
    "VariantScore",
    "build_index",
    "build_report",
    "builtin_probe_path",
    "candidates_for",
    "format_table",
    "hit_at_k",
    "is_correct",
    "load_builtin",
    "load_probes",
    "match_probe",
    "normalize",
    "parse_probes",
    "rank_of_object",
    "resolve_probes",
    "score_variant",
    "validate_report",
]
