"""Probing suites: does a model rank the true sentence above near-miss false ones (spatial relations first)?

In memory::

    items, bad = items_from_synthetic(synthetic_probe_items(config, "test", 200))  # or load_suite(spec).items
    result = run_probe(items, ClipEncoder.load("tiny-vit"))
    summary = summarize(result)                         # {"accuracy", "n", "ci95", "per_tag", ...}
"""

from clipforge.probe.formats import items_from_records, items_from_synthetic
from clipforge.probe.items import BadItem, ProbeItem, Suite
from clipforge.probe.pipeline import ProbeConfig, parse_model_option, probe
from clipforge.probe.run import ClipEncoder, Encoder, ProbeResult, run_probe
from clipforge.probe.scorers import SCORERS, relation_clauses
from clipforge.probe.stats import bootstrap_ci, summarize, wilson_ci
from clipforge.probe.suites import load_suite

__all__ = [
    "SCORERS",
    "BadItem",
    "ClipEncoder",
    "Encoder",
    "ProbeConfig",
    "ProbeItem",
    "ProbeResult",
    "Suite",
    "bootstrap_ci",
    "items_from_records",
    "items_from_synthetic",
    "load_suite",
    "parse_model_option",
    "probe",
    "relation_clauses",
    "run_probe",
    "summarize",
    "wilson_ci",
]
