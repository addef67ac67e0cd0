"""`QuickstartConfig`: the data, training budget and evaluation sizes of the main job."""

from __future__ import annotations

from dataclasses import dataclass

from clipforge.device import DEVICES
from clipforge.errors import ConfigError
from clipforge.models.registry import get_model_config
from clipforge.quickstart.generation import GenerationConfig
from clipforge.synthetic.dataset import SceneConfig
from clipforge.synthetic.style import StyleConfig
from clipforge.synthetic.text import NEGATIVE_KINDS

MODELS = ("plain", "hardneg")
# Report name -> scene split of the test scenes: the training style, and the held-out style.
STYLE_SPLITS = {"in-style": "test", "held-out style": "test_style"}
# Report name -> split of the test scenes that show held-out (colour, shape) or (shape, relation)
# combinations, which no training scene shows (drawn in the training style, or plain without a style).
HELDOUT_SPLITS = {"held-out combinations": "test_heldout"}
# report.json key of each test split's numbers but the first one's (those are the model's own keys).
SPLIT_KEYS = {"test_style": "heldout_style", "test_heldout": "heldout_combinations"}
# The quickstart architecture (registry JSON): ConvNet-64px shrunk for a CPU budget, with 48-px scenes and a
# 2-layer, 64-wide text tower with a 24-token context (the longest scene caption takes 21). The text tower
# runs on every hard negative, so it dominates the cost of a step; the scenes' small vocabulary needs little
# width. The image tower also feeds its MLP each feature's maximum over positions (`ConvNet-48px-pooled`):
# under randomized styles that raised validation object-swap accuracy from 0.693/0.713 to 0.805/0.797 (in
# style / held-out style, 900-step schedule) for +3% step CPU (benchmarks/RESULTS.md, quickstart-style3).
QUICKSTART_MODEL = "ConvNet-48px-pooled"


@dataclass(frozen=True)
class QuickstartConfig:
    """The data, training budget and evaluation sizes of the quickstart; both models share all of it.

    Attributes:
        model: registry architecture trained from scratch (its input size sets the scene size).
        steps: optimizer steps per model.
        batch_size: scenes per step.
        lr: peak learning rate (cosine schedule after `warmup_steps`).
        warmup_steps: linear warm-up steps.
        n_train: distinct training scenes (rendered on the fly).
        n_val: validation scenes for the training curves.
        n_test: held-out test scenes for retrieval and probes, in each test split (`test_splits`).
        n_zeroshot: held-out single-object scenes for zero-shot accuracy, in each test split.
        negative_kinds: hard-negative captions per scene for `hardneg`, one per kind.
        negative_images: share of `hardneg`'s training scenes with a spatial caption that also get a
            hard-negative image: the scene with the two related objects in each other's places
            (`LossSection.negative_images`).
        eval_every: steps between points of the validation curve.
        seed: seed of the data and of the training runs.
        n_examples: example scenes shown in report.html.
        device: where both models train (``cpu``, ``cuda`` or ``auto``); the small evaluation runs on the CPU.
        threads: torch threads of each of the two training processes (0: torch's default).
        style: randomized rendering of the training and test scenes (None: plain scenes); the test
            scenes are drawn in style, in the held-out style and with held-out combinations.
        generation: the text-to-image stage (`clipforge.quickstart.generation`); None skips it.
    """

    model: str = QUICKSTART_MODEL
    steps: int = 2100
    batch_size: int = 128
    lr: float = 2e-3
    warmup_steps: int = 50
    n_train: int = 60_000
    n_val: int = 256
    n_test: int = 1000
    n_zeroshot: int = 300
    negative_kinds: tuple[str, ...] = ("relation_swap", "attribute_swap")
    # Chosen on validation scenes by a rule written first: relation pair-balanced +3.4 points, object
    # swap -0.4, attribute swap +2.3 over none, for 1.11x the step cost (benchmarks/RESULTS.md,
    # quickstart-negimages).
    negative_images: float = 0.25
    eval_every: int = 150
    seed: int = 0
    n_examples: int = 8
    device: str = "cpu"
    threads: int = 1
    style: StyleConfig | None = StyleConfig()
    generation: GenerationConfig | None = GenerationConfig()

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "n_train", "n_val", "n_test", "n_zeroshot", "eval_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"quickstart: {name} must be >= 1, got {getattr(self, name)}")
        if self.threads < 0:
            raise ConfigError(f"quickstart: threads must be >= 0, got {self.threads}")
        if self.device.partition(":")[0] not in DEVICES:
            raise ConfigError(f"quickstart: device must be one of {', '.join(DEVICES)}, got '{self.device}'")
        if not 0.0 <= self.negative_images <= 1.0:
            raise ConfigError(f"quickstart: negative_images must be in [0, 1], got {self.negative_images}")
        unknown = [k for k in self.negative_kinds if k not in NEGATIVE_KINDS]
        if unknown or not self.negative_kinds:
            raise ConfigError(f"quickstart: negative_kinds must be a non-empty subset of {NEGATIVE_KINDS}, "
                              f"got {self.negative_kinds}")

    @property
    def test_splits(self) -> dict[str, str]:
        """The test scenes written and evaluated (report name -> split): `STYLE_SPLITS` with a style, else
        the plain ``test``, then `HELDOUT_SPLITS`."""
        return {**(STYLE_SPLITS if self.style is not None else {"plain": "test"}), **HELDOUT_SPLITS}

    @classmethod
    def quick(cls) -> QuickstartConfig:
        """A smoke-test budget (`--quick`): same pipeline, a fraction of the steps and scenes."""
        return cls(steps=300, n_train=20_000, n_val=128, n_test=300, n_zeroshot=120, eval_every=100,
                   generation=GenerationConfig.quick())


def negative_images_phrase(share: float) -> str:
    """How progress lines and reports name `hardneg`'s hard-negative images ("" when there are none)."""
    if not share:
        return ""
    return (f"for a {share:.0%} draw of its scenes, a negative image: the scene with the two objects its "
            "caption relates in each other's places")


def scene_config(config: QuickstartConfig) -> SceneConfig:
    """The scenes the training engine renders for the quickstart model (same defaults, same size)."""
    return SceneConfig(image_size=get_model_config(config.model).preprocess.image_size, style=config.style)
