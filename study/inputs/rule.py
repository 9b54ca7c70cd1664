"""Which features a command reads: the one rule, for every command that reads features.

- The data: ``--data`` (checked before anything else: the folder and the split files the command
  reads), or the built-in synthetic dataset, generated once.
- The settings, from the feature options the user gave (a ``FeatureChoice``, any subset):
  1. the settings already extracted in the cache for this data and these splits that agree with
     every option given: exactly one -> use it (and say which); several -> ask for the options;
  2. none -> the options given over the one set already extracted for this data (several, or
     none: over the data's default: the built-in data's canvas and offline encoder, or R2C's
     canvas for other data), extracted once (and say so). On data other than the built-in set
     with nothing extracted, a default that is the offline MiniLM encoder or a random ResNet is
     named in a one-line warning with the option to pass instead (the random ResNet's warning
     comes from ``vcrnet.features.image``, where it is built).
- A command whose features are fixed (``predict`` by its checkpoint: ``from_checkpoint``;
  ``rerun`` by its study: ``for_study``) uses those, and refuses options that disagree
  (``fixed_features``).
- A study's features are resolved by the rule when it starts and recorded in its options
  (``for_study``); a checkpoint records its own (``Features.extra()``, read by
  ``from_checkpoint``).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from study import store
from study.store import LaunchOptions
from vcrnet.data import require_splits, write_synthetic
from vcrnet.errors import InputError
from vcrnet.features import (
    FeatureChoice,
    FeatureSettings,
    SplitFeatures,
    cached_settings,
    entry_paths,
    extract_splits,
)
from vcrnet.features import cache as cache_entry
from vcrnet.features.extract import RunShards
from vcrnet.features.text import DEFAULT_TEXT_ENCODER

Echo = Callable[[str], None]
SYNTHETIC_IMAGE_SIZE = (384, 192)  # the synthetic JPEGs are ~420x225: R2C's 768x384 only upscales


@dataclass(frozen=True)
class Features:
    """The features a command reads: the data folder, the settings, each split's entries."""

    data: Path
    settings: FeatureSettings
    splits: dict[str, SplitFeatures]

    def extra(self) -> dict:
        """What a checkpoint stores about its features (``predict`` reads it back)."""
        return {"data": str(self.data), "features": self.settings.to_dict()}

    def paths(self) -> dict[str, tuple[str, str]]:
        """``{split: (text entry, objects entry)}``, for Ray trials (strings, picklable)."""
        return {s: (str(f.text), str(f.objects)) for s, f in self.splits.items()}


REAL_DATA_PRESET = "r2c"  # the model on data other than the built-in set, unless a preset is given


def model_values(values: dict, builtin_data: bool) -> tuple[dict, str | None]:
    """A run's ``TrainConfig`` values with the model's preset this rule gives, and the line to
    say when it gave one: on data other than the built-in set with no ``preset`` given, R2C's
    model (``small`` is tuned for the built-in data: hidden 64, no dropout). The caller says the
    line once nothing can refuse any more (a refusal stays one line)."""
    if builtin_data or "preset" in values:
        return values, None
    note = (
        f"no preset given for data other than the built-in set: training R2C's model (preset "
        f"{REAL_DATA_PRESET}); pass --set preset=small for the small one"
    )
    return {**values, "preset": REAL_DATA_PRESET}, note


def default_settings(builtin_data: bool) -> FeatureSettings:
    """The settings of data with nothing extracted: the built-in data's canvas, else R2C's."""
    return FeatureSettings(image_size=SYNTHETIC_IMAGE_SIZE) if builtin_data else FeatureSettings()


def data_root(
    data: Path | None,
    splits: tuple[str, ...],
    images: bool = True,
    split_option: bool = False,
    data_option: str = "--data",
) -> tuple[Path, bool]:
    """The checked data folder, and whether it is the built-in dataset (generated if missing)."""
    if data is None:
        root = store.default_data_dir()
        if not root.exists():
            write_synthetic(root, seed=store.SYNTHETIC_SEED)
        return root, True
    return require_splits(
        data, splits, images=images, option=data_option, split_option=split_option
    ), False


def resolve(
    data: Path | None,
    cache: Path | None,
    choice: FeatureChoice,
    splits: tuple[str, ...],
    echo: Echo = print,
    progress: bool = True,
    split_option: bool = False,
    data_option: str = "--data",
    run: RunShards | None = None,
    extract: bool = True,
) -> Features:
    """The features of ``splits``, by the rule above; extracts what is missing (``run``: where
    the shards are computed, default this process; ``extract=False``: only names what is
    missing, in each split's ``computed``). ``split_option``/``data_option``: how the command
    takes splits and data (for messages)."""
    root, is_builtin = data_root(
        data, splits, images=False, split_option=split_option, data_option=data_option
    )
    cache = (cache or store.default_cache_dir()).absolute()
    extracted = cached_settings(root, splits, cache)
    candidates = [s for s in extracted if choice.matches(s)]
    fallback = None
    if len(candidates) == 1:
        settings = candidates[0]
        if not is_builtin or choice.given():
            echo(f"using the features already extracted in {cache}: {settings.describe()}")
    elif candidates:
        listed = "; ".join(f"[{i + 1}] {s.describe()}" for i, s in enumerate(candidates))
        raise InputError(
            f"{cache}: {len(candidates)} feature sets are extracted for {root} "
            f"({listed}): pass --text-encoder, --text-layer, --image-weights or "
            "--image-size to choose one"
        )
    else:  # the options given, the rest from the one set extracted (else the data's default)
        base = extracted[0] if len(extracted) == 1 else default_settings(is_builtin)
        settings = choice.apply(base)
        if not is_builtin and not extracted:
            fallback = functools.partial(_warn_offline_defaults, choice, settings)
    return Features(
        root,
        settings,
        _extract(
            root,
            cache,
            settings,
            splits,
            progress,
            echo,
            split_option,
            data_option,
            fallback,
            run,
            extract,
        ),
    )


def fixed_features(
    data: Path | None,
    cache: Path | None,
    settings: FeatureSettings,
    choice: FeatureChoice,
    splits: tuple[str, ...],
    where: str,
    echo: Echo = print,
    run: RunShards | None = None,
    extract: bool = True,
) -> Features:
    """The features of a checkpoint or a study (``where``): options may only agree with them."""
    choice.check_agrees(settings, where)
    root, _ = data_root(data, splits, images=False)
    cache = (cache or store.default_cache_dir()).absolute()
    return Features(
        root,
        settings,
        _extract(root, cache, settings, splits, True, echo, run=run, extract=extract),
    )


def _extract(
    root: Path,
    cache: Path,
    settings: FeatureSettings,
    splits: tuple[str, ...],
    progress: bool,
    echo: Echo,
    split_option: bool = False,
    data_option: str = "--data",
    warn: Callable[[], None] | None = None,
    run: RunShards | None = None,
    extract: bool = True,
) -> dict[str, SplitFeatures]:
    """Each split's entries; the missing ones extracted (the images checked first, then
    ``warn`` about the settings, then said), or with ``extract=False`` only named."""
    missing = [
        s
        for s in splits
        if not all(cache_entry.is_complete(p) for p in entry_paths(root, s, cache, settings))
    ]
    if missing:
        require_splits(root, splits, images=True, option=data_option, split_option=split_option)
        if warn is not None:
            warn()
        if not extract:
            return {s: _named(*entry_paths(root, s, cache, settings)) for s in splits}
        echo(
            f"extracting features once for {', '.join(missing)} into {cache}: {settings.describe()}"
        )
    return extract_splits(root, splits, cache, settings, progress, run)


def _named(text: Path, objects: Path) -> SplitFeatures:
    """A split's entries, those still to extract named in ``computed``."""
    return SplitFeatures(
        text,
        objects,
        [
            kind
            for kind, entry in (("text", text), ("objects", objects))
            if not cache_entry.is_complete(entry)
        ],
    )


def _warn_offline_defaults(choice: FeatureChoice, settings: FeatureSettings) -> None:
    """(A random ResNet is warned about where it is built: ``vcrnet.features.image``.)"""
    given = choice.given()
    if "text_encoder" not in given and settings.text_encoder == DEFAULT_TEXT_ENCODER:
        warnings.warn(
            "no --text-encoder given and no features extracted for this data: using "
            "the offline MiniLM "
            "encoder; for R2C's text features pass --text-encoder bert-base-uncased",
            stacklevel=2,
        )


def for_study(
    options: LaunchOptions,
    splits: tuple[str, ...],
    choice: FeatureChoice = FeatureChoice(),
    where: str = "the study",
    echo: Echo = print,
    run: RunShards | None = None,
    extract: bool = True,
) -> Features:
    """The study's features of ``splits``: resolved from ``choice`` when the study starts (and
    recorded in ``options.features``), the recorded ones afterwards (options may only agree);
    those missing extracted by ``run`` (default: in this process)."""
    data = Path(options.data).absolute() if options.data else None
    cache = Path(options.cache).absolute() if options.cache else None
    if options.features is None:
        found = resolve(data, cache, choice, splits, echo=echo, run=run, extract=extract)
        options.features = found.settings.to_dict()
        return found
    settings = FeatureSettings.from_dict(options.features, where=where)
    return fixed_features(
        data, cache, settings, choice, splits, where, echo=echo, run=run, extract=extract
    )


def from_checkpoint(
    checkpoint: Path,
    saved: dict,
    data: Path | None,
    cache: Path | None,
    choice: FeatureChoice,
    splits: tuple[str, ...],
    echo: Echo = print,
) -> Features:
    """The features a checkpoint (``saved``, as ``vcrnet.train.load_checkpoint`` reads it) was
    trained on, from what ``Features.extra()`` recorded in it (its data folder unless ``data`` is
    given); feature options may only agree with them. A checkpoint that records none: the rule."""
    stored = saved.get("extra", {})
    if not stored.get("features"):
        return resolve(data, cache, choice, splits, echo=echo)
    trained_on = Path(stored["data"]) if stored.get("data") else None
    settings = FeatureSettings.from_dict(stored["features"], where=str(checkpoint))
    return fixed_features(
        data or trained_on, cache, settings, choice, splits, where=str(checkpoint), echo=echo
    )
