"""The main job: `run_quickstart` trains `plain` and `hardneg` models on synthetic scenes and reports both."""

from clipforge.quickstart.config import QuickstartConfig
from clipforge.quickstart.pipeline import resume_quickstart, run_quickstart

__all__ = ["QuickstartConfig", "resume_quickstart", "run_quickstart"]
