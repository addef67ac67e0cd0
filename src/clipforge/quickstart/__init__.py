"""The main job: `run_quickstart` trains `plain` and `hardneg` models on synthetic scenes and reports both."""

from clipforge.quickstart.pipeline import QuickstartConfig, run_quickstart

__all__ = ["QuickstartConfig", "run_quickstart"]
