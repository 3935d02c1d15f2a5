"""``segsam predict``: the per-plane loop over a scan and its outputs.

:func:`predict` plans the scans (:mod:`segsam.predict.scans`) and reads every
prompt file before any model runs; per scan, :func:`prepare_scan` reads and
prepares it (:mod:`segsam.predict.volume`) and places its prompts on the axial
planes, the method is built once, after the first scan passed these checks
(:mod:`segsam.predict.model`), and :func:`segment_scan` encodes each prompted
plane once, decodes all its prompts, applies the overlap rule
(:mod:`segsam.predict.labels`) and writes the label volume on the input's grid,
the probability volumes if asked, and the JSON sidecar, all atomically: a failing
scan writes nothing.

Box refinement (``refine_boxes``, as MedSAM's 3D inference): a 3D box's middle
plane is prompted with the box; going up, then down, each further plane's box is
the previous plane's predicted mask's box, grown by :data:`REFINE_MARGIN_MM` and
kept inside the given box (so it can only tighten it); an empty mask falls back
to the given box. A plane that two sweeps need is still encoded once (its
embedding is kept between the sweeps).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from tqdm import tqdm

from segsam.atomic import atomic_path, write_json
from segsam.config import config_hash
from segsam.data.prompts import mask_box
from segsam.data.vocabulary import Vocabulary
from segsam.errors import DataError
from segsam.hashing import sha256_of
from segsam.methods import MethodSpec, get_method
from segsam.models.preprocess import ResizeInfo
from segsam.predict.labels import PROMPT_FREE_RULE, LabelBuilder, prompted_rule
from segsam.predict.model import Predictor, build_predictor, config_path, find_checkpoint
from segsam.predict.prompts import PlacedBox, PlacedPoint, PromptFile, place_prompts, read_prompt_file
from segsam.predict.scans import ScanJob, plan_jobs, probability_path, sidecar_path
from segsam.predict.volume import Scan, read_scan, to_input_grid

log = logging.getLogger(__name__)

#: How far (mm) a refined box reaches beyond the previous plane's mask (organs grow between planes).
REFINE_MARGIN_MM = 10.0

Placed = PlacedBox | PlacedPoint


@dataclass(frozen=True)
class PredictOptions:
    """How scans are segmented.

    Attributes:
        probabilities: Also write one float32 probability volume per class.
        refine_boxes: Tighten each plane's box from the neighbouring plane's mask.
        modality: ``auto``, ``ct`` or ``mr`` (:func:`segsam.predict.volume.decide_modality`).
    """

    probabilities: bool = False
    refine_boxes: bool = False
    modality: str = "auto"


@dataclass
class PlanePrompts:
    """The prompts decoded on one plane, in working-plane pixel coordinates.

    Attributes:
        keys: N indices of the placed prompts they come from.
        class_ids: N vocabulary class ids.
        is_point: N bool.
        boxes: N x 4 (x0, y0, x1, y1) (zeros for points).
        points: N x 2 (x, y) (zeros for boxes).
    """

    keys: list[int] = field(default_factory=list)
    class_ids: list[int] = field(default_factory=list)
    is_point: list[bool] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    points: list[np.ndarray] = field(default_factory=list)

    def add(self, key: int, class_id: int, *, box: np.ndarray | None = None, point: np.ndarray | None = None) -> None:
        """One box or one point."""
        self.keys.append(key)
        self.class_ids.append(class_id)
        self.is_point.append(point is not None)
        self.boxes.append(np.zeros(4, np.float32) if box is None else np.asarray(box, np.float32))
        self.points.append(np.zeros(2, np.float32) if point is None else np.asarray(point, np.float32))


def check_prompting(spec: MethodSpec, prompts: str | Path | None, prompt_free: bool, refine: bool) -> None:
    """Refuse prompts for a prompt-free network, and a promptable method without them.

    Raises:
        DataError: One line saying which option to use.
    """
    if not spec.prompted and prompts is not None:
        raise DataError(f"method {spec.name!r} is prompt-free: it takes no --prompts ({prompts})")
    if not spec.prompted and refine:
        raise DataError(f"method {spec.name!r} is prompt-free: --refine-boxes needs boxes")
    if spec.prompted and (prompts is None or prompt_free):
        raise DataError(
            f"method {spec.name!r} is promptable: pass --prompts with a prompt file (docs/predict.md); "
            "prompt-free methods are unet, unetr and PG-SAM"
        )


def _plane_prompts(placed: list[Placed], scan: Scan) -> dict[int, PlanePrompts]:
    """Every plane's prompts, each 3D box as the same 2D box on every plane it spans."""
    planes: dict[int, PlanePrompts] = {}
    for key, prompt in enumerate(placed):
        if isinstance(prompt, PlacedPoint):
            point = scan.plane_grid.to_working(np.array([prompt.x, prompt.y]))
            planes.setdefault(prompt.z, PlanePrompts()).add(key, prompt.entry.class_id, point=point)
            continue
        box = scan.plane_grid.box_to_working(prompt.box)
        for z in prompt.planes:
            planes.setdefault(z, PlanePrompts()).add(key, prompt.entry.class_id, box=box)
    return planes


def _decode(predictor: Predictor, embedding: tuple[torch.Tensor, ResizeInfo], prompts: PlanePrompts) -> np.ndarray:
    """N x h x w working-plane probabilities of a plane's prompts."""
    return predictor.decode(
        embedding[0], embedding[1], np.array(prompts.is_point), np.stack(prompts.boxes), np.stack(prompts.points)
    )


def _record(builder: LabelBuilder, scan: Scan, z: int, prompts: PlanePrompts, probabilities: np.ndarray) -> None:
    """Add a plane's probabilities, mapped back onto the LPS plane, to the label."""
    for class_id, plane in zip(prompts.class_ids, scan.plane_grid.to_lps(probabilities)):
        builder.add(z, class_id, plane)


def _progress(scan: Scan, total: int) -> tqdm:
    return tqdm(total=total, desc=f"predict {scan.path.name}", unit="plane", mininterval=2.0)


def segment_with_prompts(predictor: Predictor, scan: Scan, placed: list[Placed], builder: LabelBuilder) -> None:
    """Encode each prompted plane once and decode its prompts (every 3D box the same on each plane)."""
    planes = _plane_prompts(placed, scan)
    with _progress(scan, len(planes)) as bar:
        for z in sorted(planes):
            probabilities = _decode(predictor, predictor.embed(scan.planes[z]), planes[z])
            _record(builder, scan, z, planes[z], probabilities)
            bar.update()


def refined_box(given: np.ndarray, mask: np.ndarray | None, margin: float) -> np.ndarray:
    """A plane's box from the neighbouring plane's mask: its tight box grown by ``margin`` px, inside ``given``.

    Args:
        given: (x0, y0, x1, y1) the 3D box's box on every plane.
        mask: h x w bool, the neighbouring plane's predicted mask, or None.
        margin: Pixels added on each side of the mask's box.

    Returns:
        float32 (x0, y0, x1, y1): ``given`` when the mask is missing or empty, or
        when the grown box misses ``given``.
    """
    if mask is None or not mask.any():
        return np.asarray(given, np.float32)
    grown = mask_box(mask) + np.array([-margin, -margin, margin, margin], np.float32)
    box = np.concatenate([np.maximum(grown[:2], given[:2]), np.minimum(grown[2:], given[2:])])
    return box.astype(np.float32) if (box[:2] <= box[2:]).all() else np.asarray(given, np.float32)


@dataclass
class RefineSweeps:
    """Which prompts each plane decodes when boxes are refined.

    Attributes:
        up: {plane: keys}, ascending: every box from its middle plane to its last,
            and every point on its plane.
        down: {plane: keys}, descending: every box from below its middle to its first plane.
    """

    up: dict[int, list[int]]
    down: dict[int, list[int]]

    @classmethod
    def plan(cls, placed: list[Placed]) -> RefineSweeps:
        up: dict[int, list[int]] = {}
        down: dict[int, list[int]] = {}
        for key, prompt in enumerate(placed):
            if isinstance(prompt, PlacedPoint):
                up.setdefault(prompt.z, []).append(key)
                continue
            for z in range(prompt.middle, prompt.z1 + 1):
                up.setdefault(z, []).append(key)
            for z in range(prompt.z0, prompt.middle):
                down.setdefault(z, []).append(key)
        return cls(dict(sorted(up.items())), dict(sorted(down.items(), reverse=True)))


class Refiner:
    """Box refinement over one scan (module docstring): two sweeps, each plane encoded once.

    Args:
        predictor: The method.
        scan: The scan.
        placed: Its placed prompts.
        builder: Where the planes' probabilities go.
    """

    def __init__(self, predictor: Predictor, scan: Scan, placed: list[Placed], builder: LabelBuilder) -> None:
        self.predictor, self.scan, self.placed, self.builder = predictor, scan, placed, builder
        self.sweeps = RefineSweeps.plan(placed)
        self.margin = REFINE_MARGIN_MM / scan.plane_grid.pixel
        self.shared = set(self.sweeps.up) & set(self.sweeps.down)
        self.kept: dict[int, tuple[torch.Tensor, ResizeInfo]] = {}

    def run(self) -> None:
        """Both sweeps; the down sweep starts from each box's middle-plane mask."""
        middle_masks: dict[int, np.ndarray] = {}
        with _progress(self.scan, len(self.sweeps.up) + len(self.sweeps.down)) as bar:
            self._sweep(self.sweeps.up, {}, middle_masks, bar)
            self._sweep(self.sweeps.down, middle_masks, None, bar)

    def _embedding(self, z: int) -> tuple[torch.Tensor, ResizeInfo]:
        if z in self.kept:
            return self.kept.pop(z)
        embedding = self.predictor.embed(self.scan.planes[z])
        if z in self.shared:
            self.kept[z] = embedding
        return embedding

    def _sweep(
        self,
        planes: dict[int, list[int]],
        masks: dict[int, np.ndarray],
        middle: dict[int, np.ndarray] | None,
        bar: tqdm,
    ) -> None:
        """Decode planes in order, each box from its previous mask in ``masks`` (updated as it goes)."""
        grid = self.scan.plane_grid
        for z, keys in planes.items():
            prompts = PlanePrompts()
            for key in keys:
                prompt = self.placed[key]
                if isinstance(prompt, PlacedPoint):
                    prompts.add(key, prompt.entry.class_id, point=grid.to_working(np.array([prompt.x, prompt.y])))
                else:
                    given = grid.box_to_working(prompt.box)
                    box = given if z == prompt.middle else refined_box(given, masks.get(key), self.margin)
                    prompts.add(key, prompt.entry.class_id, box=box)
            probabilities = _decode(self.predictor, self._embedding(z), prompts)
            _record(self.builder, self.scan, z, prompts, probabilities)
            for key, probability in zip(prompts.keys, probabilities):
                masks[key] = probability >= self.builder.threshold
                if middle is not None and isinstance(self.placed[key], PlacedBox) and z == self.placed[key].middle:
                    middle[key] = masks[key]
            bar.update()


def segment_prompt_free(predictor: Predictor, scan: Scan, builder: LabelBuilder) -> None:
    """Label every axial plane with a prompt-free network."""
    ids = predictor.vocabulary.ids
    with _progress(scan, scan.planes.shape[0]) as bar:
        for z, plane in enumerate(scan.planes):
            builder.add_semantic(z, scan.plane_grid.to_lps(predictor.segment(plane)), ids)
            bar.update()


def segsam_version() -> str:
    """The installed ``segsam`` version, or ``unknown``."""
    try:
        return importlib.metadata.version("segsam")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def prompt_record(placed: list[Placed], prompts: PromptFile, predictor: Predictor) -> dict[str, Any]:
    """The prompts used, for the sidecar: the file, its digest, and each entry with its axial planes."""
    entries = []
    for prompt in placed:
        entry = prompt.entry
        planes = [prompt.z0, prompt.z1] if isinstance(prompt, PlacedBox) else [prompt.z, prompt.z]
        entries.append(
            {
                "entry": entry.where,
                "class_id": entry.class_id,
                "class": predictor.vocabulary.name_of(entry.class_id),
                "prompt": entry.kind,
                "frame": entry.frame,
                "coords": list(entry.coords),
                "axial_planes": planes,
            }
        )
    return {"file": str(prompts.path.resolve()), "sha256": sha256_of(prompts.path), "entries": entries}


def sidecar(
    job: ScanJob, scan: Scan, predictor: Predictor, builder: LabelBuilder, prompts: dict[str, Any] | None, **extra: Any
) -> dict[str, Any]:
    """The JSON sidecar of one prediction (see docs/predict.md)."""
    present = builder.present()
    if prompts is not None:
        requested = {e["class_id"] for e in prompts["entries"]}
        present = [c for c in present if c in requested]
    return {
        "input": str(job.input.resolve()),
        "output": str(job.output.resolve()),
        "method": predictor.spec.name,
        "classes": {str(c): predictor.vocabulary.name_of(c) for c in present},
        "weights": predictor.weights,
        "checkpoint": predictor.checkpoint,
        "prompts": prompts,
        "rule": PROMPT_FREE_RULE if prompts is None else prompted_rule(builder.threshold),
        "threshold": None if prompts is None else builder.threshold,
        "modality": scan.modality,
        "modality_source": scan.modality_source,
        "input_orientation": scan.orientation,
        "axial_planes": scan.planes.shape[0],
        "working_plane": {"shape": list(scan.plane_grid.shape), "pixel_mm": scan.plane_grid.pixel},
        "segsam_version": segsam_version(),
        **extra,
    }


def write_outputs(
    job: ScanJob, scan: Scan, builder: LabelBuilder, record: dict[str, Any], vocabulary: Vocabulary
) -> None:
    """The label volume, the probability volumes and the sidecar, renamed into place only once all are written."""
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_path(job.output))
        sitk.WriteImage(to_input_grid(builder.label, scan), str(tmp), True)
        files = {}
        for class_id in builder.probability_classes():
            name = vocabulary.name_of(class_id)
            path = probability_path(job.output, name)
            tmp = stack.enter_context(atomic_path(path))
            sitk.WriteImage(to_input_grid(builder.probability(class_id), scan), str(tmp), True)
            files[name] = path.name
        record["probabilities"] = files or None
        tmp = stack.enter_context(atomic_path(sidecar_path(job.output)))
        write_json(tmp, record)


@dataclass
class PreparedScan:
    """A scan read and prepared, with its prompts placed: everything checked before the model runs.

    Attributes:
        job: The scan, its output and its prompt file.
        scan: The prepared scan.
        prompts: The parsed prompt file, or None (prompt-free).
        placed: Its prompts on the LPS grid, in file order.
        start: When preparing began (``time.perf_counter``), for the sidecar's seconds.
    """

    job: ScanJob
    scan: Scan
    prompts: PromptFile | None
    placed: list[Placed]
    start: float


def prepare_scan(
    job: ScanJob, prompts: PromptFile | None, *, config: Mapping[str, Any], options: PredictOptions
) -> PreparedScan:
    """Read and prepare one scan and place its prompts.

    Raises:
        DataError: An output that would overwrite the input, an unreadable scan,
            or a prompt that does not fit it.
    """
    start = time.perf_counter()
    if job.output.resolve() == job.input.resolve():
        raise DataError(f"{job.output}: the output would overwrite the input; choose another path")
    scan = read_scan(job.input, config["slicing"], options.modality)
    placed = [] if prompts is None else place_prompts(prompts, scan.original, scan.lps)
    return PreparedScan(job, scan, prompts, placed, start)


def segment_scan(
    predictor: Predictor, prepared: PreparedScan, *, config: Mapping[str, Any], options: PredictOptions
) -> Path:
    """Segment a prepared scan and write its outputs (module docstring).

    Returns:
        The label volume written.
    """
    job, scan, placed = prepared.job, prepared.scan, prepared.placed
    shape = (scan.lps.size[2], scan.lps.size[1], scan.lps.size[0])
    builder = LabelBuilder(shape, float(config["evaluate"]["threshold"]), options.probabilities)
    with torch.inference_mode():
        if prepared.prompts is None:
            segment_prompt_free(predictor, scan, builder)
        elif options.refine_boxes:
            Refiner(predictor, scan, placed, builder).run()
        else:
            segment_with_prompts(predictor, scan, placed, builder)
    record = sidecar(
        job,
        scan,
        predictor,
        builder,
        None if prepared.prompts is None else prompt_record(placed, prepared.prompts, predictor),
        refine_boxes=options.refine_boxes,
        refine_margin_mm=REFINE_MARGIN_MM if options.refine_boxes else None,
        config_hash=config_hash(config),
        input_grid={k: list(v) for k, v in asdict(scan.original).items()},
        seconds=round(time.perf_counter() - prepared.start, 3),
    )
    write_outputs(job, scan, builder, record, predictor.vocabulary)
    log.info("%s -> %s: classes %s in %.1f s", job.input, job.output, record["classes"], record["seconds"])
    return job.output


def predict_scan(
    predictor: Predictor,
    job: ScanJob,
    prompts: PromptFile | None,
    *,
    config: Mapping[str, Any],
    options: PredictOptions,
) -> Path:
    """Segment one scan with a built method and write its outputs (:func:`prepare_scan`, :func:`segment_scan`).

    Args:
        predictor: The method (:func:`segsam.predict.model.build_predictor`).
        job: The scan, its output and its prompt file.
        prompts: The parsed prompt file, or None (prompt-free).
        config: The whole validated config (``slicing``, ``evaluate.threshold``).
        options: What to write and how.

    Returns:
        The label volume written.

    Raises:
        DataError: An unreadable scan, or a prompt that does not fit it (nothing is written).
    """
    prepared = prepare_scan(job, prompts, config=config, options=options)
    return segment_scan(predictor, prepared, config=config, options=options)


def predict(
    input: str | Path,
    output: str | Path,
    *,
    method: str,
    config: Mapping[str, Any],
    model: str | None = None,
    prompts: str | Path | None = None,
    prompt_free: bool = False,
    options: PredictOptions | None = None,
    text: str | Path | None = None,
    threads: int | None = None,
    device: str = "cpu",
) -> list[Path]:
    """Segment a scan, or each scan of a folder (``segsam predict``).

    Every prompt file is read and checked before the model is built; the model
    is built once for all scans. A scan that fails stops the run; the scans
    before it keep their outputs, and it writes none.

    Args:
        input: A volume file, a DICOM series folder, or a folder of scans.
        output: The label volume (or a folder; see :func:`segsam.predict.scans.plan_jobs`).
        method: A registry method.
        config: The whole validated config.
        model: ``--model`` (:func:`segsam.predict.model.find_checkpoint`).
        prompts: A prompt file (or a folder of ``<scan>.json`` / ``.csv``).
        prompt_free: ``--prompt-free``: no prompts (prompt-free methods only).
        options: What to write and how.
        text: Class text embeddings for methods with T2VSE.
        threads: torch intra-op threads (None: torch's default).
        device: ``cpu``, ``cuda`` or ``auto``.

    Returns:
        The label volumes written, in scan order.

    Raises:
        DataError: Bad options, inputs, prompts or weights (one line).
        segsam.errors.ConfigError: An unknown method.
    """
    options = options or PredictOptions()
    spec = get_method(method)
    check_prompting(spec, prompts, prompt_free, options.refine_boxes)
    jobs = plan_jobs(input, output, prompts)
    vocabulary = Vocabulary.read(config_path(config["vocabulary"]))
    parsed = {job.name: None if job.prompts is None else read_prompt_file(job.prompts, vocabulary) for job in jobs}
    if threads:
        torch.set_num_threads(max(1, int(threads)))
    outputs = []
    predictor = None
    with find_checkpoint(spec, model, config) as checkpoint:
        for job in jobs:
            prepared = prepare_scan(job, parsed[job.name], config=config, options=options)
            if predictor is None:  # built once, after the first scan and its prompts passed their checks
                predictor = build_predictor(spec, config, checkpoint, text=text, device=device)
            outputs.append(segment_scan(predictor, prepared, config=config, options=options))
    return outputs
