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
- A command whose features are fixed (``predict`` by its checkpoint, ``rerun`` by its study) uses
  those, and refuses options that disagree (``fixed_features``).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from study import builtin
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


def default_settings(builtin_data: bool) -> FeatureSettings:
    return builtin.builtin_settings() if builtin_data else FeatureSettings()


def data_root(
    data: Path | None,
    splits: tuple[str, ...],
    images: bool = True,
    split_option: bool = False,
    data_option: str = "--data",
) -> tuple[Path, bool]:
    """The checked data folder, and whether it is the built-in dataset (generated if missing)."""
    if data is None:
        root = builtin.default_data_dir()
        if not root.exists():
            write_synthetic(root, seed=builtin.SYNTHETIC_SEED)
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
    cache = (cache or builtin.default_cache_dir()).absolute()
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
    cache = (cache or builtin.default_cache_dir()).absolute()
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
