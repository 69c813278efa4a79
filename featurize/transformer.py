"""``CNNFeaturizer``: pretrained-CNN activations at named cut points as a scikit-learn transformer."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from numbers import Integral
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from featurize.backbones import get_backbone_spec, load_model, penultimate_cut, resolve_weights, spatial_sizes
from featurize.cache import FeatureCache
from featurize.devices import precision_of, resolve_device
from featurize.multicut import iter_features, pooled_dim, pooling_label, pooling_of
from featurize.images import MAX_PIXELS, UnreadableImagesWarning, as_items, content_key, describe
from featurize.weights import warn_if_random
from featurize.writer import BackgroundWriter

__all__ = ["CNNFeaturizer"]

log = logging.getLogger(__name__)

_MAX_ROUNDS = 3
"""Forward rounds of one cached transform; a further round runs only for images rewritten while being read."""


class CNNFeaturizer(TransformerMixin, BaseEstimator):
    """Pooled activations of a torchvision CNN at one or more cut points.

    One forward pass captures every requested cut point and stops after the deepest.  With a ``cache``, one pass
    stores every standard cut point of the backbone (pooled), keyed by image content, so later transforms with
    other ``layers`` are lookups, not forwards; a fully cached transform neither builds nor runs the model.

    Parameters
    ----------
    backbone : str, default="resnet18"
        A name from :func:`featurize.list_backbones`.
    layers : str or list of str, default="layer4"
        Cut point name(s) (see :func:`featurize.list_cut_points`; ``"penultimate"`` is the one before the
        classifier), or ``"all"``; features are concatenated in this order.
    pooling : str, default="avg"
        ``avg``, ``max``, ``avgmax``, ``flatten`` or ``grid:k``; vector cut points (fc layers) are not pooled.
    weights : str, WeightsEnum, path or None, default="DEFAULT"
        ``"DEFAULT"``/enum name (torchvision cache or download), a local ``.pth`` file, or ``None`` (random init,
        flagged in ``weights_.label``).
    image_size : int, None or "auto", default="auto"
        Crop side; ``"auto"`` follows the weights' own transforms (224), ``None`` keeps the full image.
    cache : path or None, default=None
        A directory (one HDF5 file per key inside) or an explicit ``.h5`` file.
    batch_size : int, default=32
    device : str, default="auto"
        ``"auto"`` picks CUDA when present.
    num_workers : int or "auto", default="auto"
        DataLoader workers decoding images while the model runs; ``"auto"`` uses the CPUs but one (at most 8), and
        none for inputs that fit in one batch (see :func:`featurize.images.resolve_workers`).
    on_error : {"raise", "skip"}, default="raise"
        Unreadable images raise a ``ValueError`` naming the file, or give NaN rows, listed (position and reason)
        by an :class:`~featurize.images.UnreadableImagesWarning` (its ``images`` attribute).
    random_state : int, default=0
        Seed of the random initialisation when ``weights=None``.
    amp : bool, default=True
        bfloat16 autocast on CUDA (no effect on CPU); part of the cache key.
    max_pixels : int or None, default=64_000_000
        Image files with more pixels are unreadable (an error naming the file, or a NaN row with ``on_error="skip"``)
        and are never decoded: a small PNG can hold a huge image (3 bytes per pixel per worker once decoded).
        ``None`` lifts the limit.  Not part of the cache key.
    verbose : bool, default=False
        Progress bar.

    Attributes
    ----------
    spec_ : BackboneSpec
    weights_ : ResolvedWeights
        Identity and ``pretrained`` flag of the weights.
    layers_ : list of str
    preprocessing_ : Preprocessing
    device_ : torch.device
    feature_dims_ : dict
        Cut point → pooled dimension.

    Warns
    -----
    UnreadableImagesWarning
        From ``transform`` with ``on_error="skip"``, listing every unreadable image (duplicates included).

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     X = CNNFeaturizer("resnet18", on_error="skip").fit().transform(paths)
    >>> skipped = [w.message.images for w in caught if issubclass(w.category, UnreadableImagesWarning)]
    """

    _parameter_constraints: dict = {
        "backbone": [str],
        "layers": [str, list, tuple],
        "pooling": [str],
        "weights": [str, Path, None, object],
        "image_size": [Interval(Integral, 16, None, closed="left"), StrOptions({"auto"}), None],
        "cache": [str, Path, None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str, object],
        "num_workers": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "on_error": [StrOptions({"raise", "skip"})],
        "random_state": [Interval(Integral, 0, None, closed="left"), None],
        "amp": ["boolean"],
        "max_pixels": [Interval(Integral, 1, None, closed="left"), None],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        backbone: str = "resnet18",
        *,
        layers: str | Sequence[str] = "layer4",
        pooling: str = "avg",
        weights: object = "DEFAULT",
        image_size: int | str | None = "auto",
        cache: str | Path | None = None,
        batch_size: int = 32,
        device: str = "auto",
        num_workers: int | str = "auto",
        on_error: str = "raise",
        random_state: int | None = 0,
        amp: bool = True,
        max_pixels: int | None = MAX_PIXELS,
        verbose: bool = False,
    ):
        self.backbone = backbone
        self.layers = layers
        self.pooling = pooling
        self.weights = weights
        self.image_size = image_size
        self.cache = cache
        self.batch_size = batch_size
        self.device = device
        self.num_workers = num_workers
        self.on_error = on_error
        self.random_state = random_state
        self.amp = amp
        self.max_pixels = max_pixels
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X=None, y=None):
        """Validate the parameters and resolve backbone, cut points and weights (no model is built).

        Parameters
        ----------
        X : images or None
            Only checked to be an image collection (see ``transform``); None is accepted.
        y : ignored

        Returns
        -------
        self
        """
        if X is not None and len(as_items(X)) == 0:
            raise ValueError("X is empty: CNNFeaturizer.fit needs at least one image (or X=None)")
        spec = get_backbone_spec(self.backbone)
        layers = [self.layers] if isinstance(self.layers, str) else list(self.layers)
        if layers == ["all"]:
            layers = spec.cut_names
        if not layers:
            raise ValueError(f"layers is empty; choose among {', '.join(spec.cut_names)}")
        self.layers_ = [penultimate_cut(spec) if name == "penultimate" else spec.cut(name).name for name in layers]
        pooling = pooling_of(self.pooling)
        self.weights_ = resolve_weights(spec, self.weights, self.random_state)
        base = self.weights_.preprocessing
        self.preprocessing_ = base if self.image_size == "auto" else base.with_size(self.image_size)
        if self.preprocessing_.crop is None and pooling.size_dependent:
            raise ValueError(f"pooling={self.pooling!r} needs a fixed image_size "
                             "(got image_size=None: image sizes vary)")
        self.device_ = resolve_device(self.device)
        self.spec_ = spec
        sizes = spatial_sizes(spec.name, self.preprocessing_.crop or 224)
        self.feature_dims_ = {name: pooled_dim(spec.cut(name), self.pooling, sizes[name]) for name in self.layers_}
        warn_if_random(spec.name, self.weights_)
        return self

    def _stored_cuts(self) -> list[str]:
        """Cut points one cached pass stores: every standard one the pooling applies to (class-token poolings skip
        feature maps without a class token), or only the requested ones for size-dependent poolings (``flatten``)."""
        pooling = pooling_of(self.pooling)
        if pooling.size_dependent:
            return list(self.layers_)
        cuts = [self.spec_.cut(name) for name in self.spec_.cut_names]
        return [c.name for c in cuts if pooling.with_cls is None or not c.is_spatial or c.cls_token]

    def cache_key(self) -> dict[str, object]:
        """What the cached features depend on (also stored in the HDF5 file)."""
        check_is_fitted(self, "spec_")
        return {
            "backbone": self.spec_.name,
            "weights": self.weights_.identity,
            "preprocessing": self.preprocessing_.identity(),
            "pooling": pooling_label(self.pooling),
            "cuts": self._stored_cuts(),
            "precision": precision_of(self.device_, self.amp),
        }

    def cache_file(self) -> FeatureCache | None:
        """The :class:`FeatureCache` this featurizer reads and writes, or None without ``cache``."""
        if self.cache is None:
            return None
        path = Path(self.cache)
        key = self.cache_key()
        if path.suffix in (".h5", ".hdf5"):
            path.parent.mkdir(parents=True, exist_ok=True)
            return FeatureCache(path, key)
        stem = f"{self.spec_.name}-{pooling_label(self.pooling)}".replace(":", "_")
        return FeatureCache.in_directory(path, key, stem)

    def transform(self, X) -> np.ndarray:
        """Featurize images.

        Parameters
        ----------
        X : sequence of paths / PIL images, or uint8 array (N, H, W, 3)

        Returns
        -------
        ndarray of shape (n_images, sum of feature_dims_), float32
            NaN rows for images skipped with ``on_error="skip"``.

        Warns
        -----
        UnreadableImagesWarning
            With ``on_error="skip"``, when some images cannot be read (``.images``: (position, reason) pairs).

        Raises
        ------
        ValueError
            For an unreadable image with ``on_error="raise"`` (rows computed before it stay cached).
        """
        check_is_fitted(self, "spec_")
        items = as_items(X)
        errors: dict[int, str] = {}
        if self.cache is None:
            blocks = self._forward(items, range(len(items)), self.layers_, errors)
        else:
            blocks = self._cached(items, errors)
        if errors:
            warnings.warn(UnreadableImagesWarning(sorted(errors.items())), stacklevel=2)
        return np.concatenate([blocks[name] for name in self.layers_], axis=1)

    def _forward(self, items, indices, cuts, errors, sink=None) -> dict[str, np.ndarray]:
        """Run the backbone on ``indices``; fill rows of a (len(items), D) array per cut, or hand batches to sink."""
        out = {} if sink is not None else {
            c: np.full((len(items), self.feature_dims_.get(c, 0)), np.nan, np.float32) for c in cuts}
        indices = list(indices)
        if not indices:
            return out
        for batch in iter_features(
            items,
            lambda: load_model(self.spec_, self.weights_),
            [self.spec_.cut(c) for c in cuts],
            self.pooling,
            self.preprocessing_.geometry,
            batch_transform=self.preprocessing_.normalize,
            indices=indices,
            batch_size=self.batch_size,
            device=self.device_,
            amp=self.amp,
            num_workers=self.num_workers,
            max_pixels=self.max_pixels,
            verbose=self.verbose,
        ):
            if sink is not None:
                sink(batch)
            elif batch.indices:
                for c in cuts:
                    out[c][batch.indices] = batch.features[c]
            self._record(batch.errors, errors)
        return out

    def _record(self, new: list[tuple[int, str]], errors: dict[int, str]) -> None:
        errors.update(new)
        if new and self.on_error == "raise":
            raise ValueError(
                f"cannot read image {new[0][1]} (pass on_error='skip' to give it a NaN row instead)"
            )

    def _cached(self, items, errors: dict[int, str]) -> dict[str, np.ndarray]:
        """Look every image up by content key; forward only the missing ones (one per key) and store them.

        Keys are computed here by hashing only (no decode), so a fully cached transform builds no model.  Rows are
        stored under the key of the bytes the workers actually decoded: an image rewritten after the lookup is
        stored (and returned) as what was decoded, never under its former content's key.  Batches are written on a
        background thread while the next one is computed; a failure (or Ctrl-C) still stores every batch computed.
        """
        cache = self.cache_file()
        keys: list[str | None] = []
        for i, item in enumerate(items):
            try:
                keys.append(content_key(item))
            except OSError as exc:
                keys.append(None)
                self._record([(i, f"{describe(item, i)}: {type(exc).__name__}: {exc}")], errors)
        rows = cache.lookup([k or "" for k in keys])
        pending = [i for i, (k, r) in enumerate(zip(keys, rows)) if k is not None and r < 0]
        for _ in range(_MAX_ROUNDS):
            if not pending:
                break
            first_of: dict[str, int] = {}
            for i in pending:
                first_of.setdefault(keys[i], i)
            log.info("cache %s: %d hit(s), %d to compute", cache.path, int((rows >= 0).sum()), len(first_of))
            decoded: dict[int, str] = {}
            meta = {"backbone": self.spec_.name, "weights_label": self.weights_.label,
                    "pretrained": self.weights_.pretrained}

            def store(batch):
                cache.append(batch.keys, [describe(items[i], i) for i in batch.indices], batch.features, meta=meta)

            def sink(batch):
                decoded.update(zip(batch.indices, batch.keys))
                writer.put(batch)

            failed: dict[int, str] = {}
            with BackgroundWriter(store) as writer:
                self._forward(items, sorted(first_of.values()), self._stored_cuts(), failed, sink=sink)
            for k, i in first_of.items():
                if i in failed:
                    reason = failed[i].removeprefix(f"{describe(items[i], i)}: ")
                    errors.update({j: f"{describe(items[j], j)}: {reason}" for j in pending if keys[j] == k})
            for i, k in decoded.items():
                keys[i] = k
            rows = cache.lookup([k or "" for k in keys])
            pending = [i for i in pending if i not in errors and rows[i] < 0]
        self._record([(i, f"{describe(items[i], i)}: changed on disk while being read; retry") for i in pending],
                     errors)
        found = np.flatnonzero(rows >= 0)
        features = cache.read(rows[found], self.layers_)
        out = {}
        for c in self.layers_:
            block = np.full((len(items), self.feature_dims_[c]), np.nan, np.float32)
            block[found] = features[c]
            out[c] = block
        return out

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Names ``<cut>.<pooling>.<j>``; the cut point of a feature is ``name.split(".")[0]``."""
        check_is_fitted(self, "spec_")
        label = pooling_label(self.pooling)
        return np.array([f"{c}.{label}.{j}" for c in self.layers_ for j in range(self.feature_dims_[c])], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.requires_fit = True
        return tags
