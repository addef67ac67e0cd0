"""Classification data specs: parse ``KIND:...`` and open a `ClassificationData`.

Kinds:
    ``imagefolder:DIR[:split]``          one sub-folder of images per class (torchvision's ImageFolder
                                         convention: classes are the sorted folder names); with a split,
                                         images come from ``DIR/split/``. Optional ``classnames.txt`` (one
                                         prompt name per line, in sorted folder order) and ``templates.txt``
                                         (one template with "{}" per line), looked up in the image folder
                                         first, then in ``DIR``.
    ``synth:TASK[:SIZE][:split]``        a synthetic scene task rendered in memory: shape, color, count or
                                         relation, at SIZE pixels (default 64), split train/val/test
                                         (see `clipforge.synthetic.tasks`).
    ``flickr8k-tags:ROOT[:split]``       10 classes mined from Flickr8k captions, on the standard
                                         train/dev(=val)/test splits (see `clipforge.data.flickr8k_tags`).
    ``corrupt:KIND:SEVERITY:SPEC``       SPEC with every image corrupted: KIND is gaussian_noise, blur, jpeg
                                         or greyscale, SEVERITY 1-5 (see `clipforge.data.corrupt`).
"""

from __future__ import annotations

from pathlib import Path

from clipforge.data.corrupt import corrupted
from clipforge.data.flickr8k_tags import flickr8k_tags
from clipforge.data.labelled import ClassificationData, LabelledImage, read_lines
from clipforge.data.readers import IMAGE_EXTENSIONS
from clipforge.data.specs import SPLITS
from clipforge.errors import DataError
from clipforge.synthetic.tasks import DEFAULT_SIZE, TASKS, SceneTask

KINDS = ("imagefolder", "synth", "flickr8k-tags", "corrupt")
_ALIASES = {"colour": "color"}


def is_classification_spec(spec: str) -> bool:
    """Whether `spec` names one of the classification kinds (it may still be malformed)."""
    return spec.partition(":")[0] in KINDS


def open_classification(spec: str) -> ClassificationData:
    """Opens the labelled images a spec names (see the module docstring).

    Raises:
        DataError: unknown kind, malformed spec, missing folder or file, fewer than two classes.
    """
    kind, colon, rest = spec.partition(":")
    if not colon or not rest:
        raise DataError(f"classification spec '{spec}' must look like KIND:... (kinds: {', '.join(KINDS)})")
    if kind == "corrupt":
        return _open_corrupt(spec, rest)
    if kind == "synth":
        return _open_synth(spec, rest)
    location, split = _split_suffix(rest)
    if kind == "flickr8k-tags":
        return flickr8k_tags(spec, Path(location).expanduser(), split)
    if kind == "imagefolder":
        return image_folder(spec, Path(location).expanduser(), split)
    raise DataError(f"unknown classification data kind '{kind}' in '{spec}' (kinds: {', '.join(KINDS)})")


def _split_suffix(rest: str) -> tuple[str, str | None]:
    head, _, tail = rest.rpartition(":")
    return (head, tail) if head and tail in SPLITS else (rest, None)


def _open_corrupt(spec: str, rest: str) -> ClassificationData:
    parts = rest.split(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        raise DataError(f"corrupt spec '{spec}' must look like corrupt:KIND:SEVERITY:SPEC")
    kind, severity, inner = parts
    return corrupted(open_classification(inner), kind, int(severity), spec)


def _open_synth(spec: str, rest: str) -> ClassificationData:
    task, *options = rest.split(":")
    task = _ALIASES.get(task, task)
    if task not in TASKS:
        raise DataError(f"unknown synthetic task '{task}' in '{spec}' (tasks: {', '.join(TASKS)})")
    size, split = DEFAULT_SIZE, "test"
    for option in options:
        if option.isdigit():
            size = int(option)
        elif option in SPLITS:
            split = option
        else:
            raise DataError(f"'{option}' in '{spec}' is not a size or split: synth:TASK[:SIZE][:split]")
    return SceneTask(spec, task, size, split)


def image_folder(spec: str, root: Path, split: str | None) -> ClassificationData:
    """An ImageFolder tree: ``root[/split]/CLASS/**/image``, classes in sorted folder order."""
    folder = root / split if split else root
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    items = [LabelledImage(str(path.relative_to(folder)), label, str(path))
             for label, name in enumerate(classes) for path in _images(folder / name)]
    names = read_lines(folder / "classnames.txt") or read_lines(root / "classnames.txt")
    if names and len(names) != len(classes):
        raise DataError(f"{folder}: classnames.txt has {len(names)} names for {len(classes)} class folders")
    templates = read_lines(folder / "templates.txt") or read_lines(root / "templates.txt")
    return ClassificationData(spec, names or [c.replace("_", " ") for c in classes], items, templates)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
