"""Write a small, learnable dataset in the same on-disk format a user brings, for every task and input.

Image classification from images alone (multiclass, binary: a task with class-folder labels) uses class folders:
    <root>/<split>/<class>/<index>.png                                  split in {train, val, test}
Everything else writes one manifest CSV per split, <root>/<split>.csv, with the columns the data config expects
by default (`COLUMNS`, and the task's `toy_target_columns`):
    image       images/<split>/<index>.png                               image input
    mask        masks/<split>/<index>.png: L-mode, pixel = class index    segmentation (0 = background)
    x0 .. x3    numbers: x0 informative; x1..x3 noise at other scales with ~8% empty cells each       tabular
    colour      red | green | blue | yellow                                                           tabular
    sequence    a short sentence of filler words and a keyword                                        sequence
    target      class name (multiclass, binary) | "0 1 0 1" (multilabel) | number (regression)
    target_2    a second number (regression)

How the signal is planted: every sample draws one latent per input, and each input shows only its own latent:
    image       which shape is drawn (regression: its size; target_2: which shape)
    tabular     which bin of x0 in [-2, 2], counted from the other end for warm colours (red, yellow)
                (regression: x0 itself; target_2: the colour)
    sequence    which keyword the sentence holds (regression: an intensity word; target_2: the sentence length)
With one input the target is that latent (a class, the labels present, a value), learnable to near-perfect
accuracy. With several, it needs all of them: multiclass and binary cut the sum of the latents into C bins of about
equal size, multilabel takes the union of every input's labels, regression the sum of every input's contribution,
segmentation the shape's class shifted by the other inputs' latents. A model that sees one input is left well short
(the best single input reaches about 50% accuracy for 4 classes, 83% AUROC for binary), so fusion has to work.
Why a binned sum and not (sum mod C): each input's latent must move the target on its own, or gradient descent gets no
signal to teach an encoder what to extract, and the fused model memorizes noise instead (it did, at chance on val).
Each split has its own seeded generator: the same seed writes byte-identical files.

The task draws its targets (tasks/<type>.py: `toy_classes`, `toy_description`, `toy_row`); this module draws the
inputs that show them (`ToyRows.inputs`) and writes the files.
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
from dataclasses import dataclass
from functools import cached_property
from itertools import product
from pathlib import Path

from ..answers import MODALITIES, TASK_TYPE
from ..tasks import Task, load_task_class
from .toy_shapes import CLASSES, SHAPES, draw_scene, draw_shape

INPUTS = ("image", "tabular", "sequence")  # modality names, in column order
SPLITS = ("train", "val", "test")
DEFAULT_SIZES = {"train": 800, "val": 200, "test": 200}  # samples per split (class folders: split over the classes)

IMAGE_COLUMN = "image"
MASK_COLUMN = "mask"
NUMERIC_COLUMNS = ("x0", "x1", "x2", "x3")
CATEGORICAL_COLUMNS = ("colour",)
SEQUENCE_COLUMN = "sequence"
COLUMNS = {  # data config key -> the toy data's column name(s), which are the config defaults
    "image_column": IMAGE_COLUMN,
    "mask_column": MASK_COLUMN,
    "numeric_columns": list(NUMERIC_COLUMNS),
    "categorical_columns": list(CATEGORICAL_COLUMNS),
    "sequence_column": SEQUENCE_COLUMN,
}

COLOURS = ("red", "green", "blue", "yellow")
WARM = ("red", "yellow")
KEYWORDS = ("apple", "river", "stone", "cloud", "tiger", "piano", "candle", "rocket")
FILLER = (
    "the", "a", "small", "old", "quiet", "bright", "morning", "house", "road", "near", "under", "after",
    "before", "with", "some", "many", "people", "walked", "saw", "found", "today", "again", "slowly", "later",
)  # fmt: skip
NAMES = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")
MISSING_RATE = 0.08  # per noise column: ~5% of all tabular cells are empty
PNG = {"compress_level": 1}  # noisy images hardly compress: save time, not bytes


def task_class(task: type[Task] | str) -> type[Task]:
    """The Task class `task` is, or names (a module of tasks/, e.g. the project's TASK_TYPE, or a class path)."""
    return load_task_class(task) if isinstance(task, str) else task


def uses_class_folders(task: type[Task] | str, modalities: tuple[str, ...]) -> bool:
    """Image classification from images alone keeps the class-folder layout; everything else writes CSVs."""
    return task_class(task).class_folder_labels and tuple(modalities) == ("image",)


def default_classes(task: type[Task] | str, modalities: tuple[str, ...]) -> tuple[str, ...]:
    """Class (or label) names, the task's for these inputs (`toy_classes`): e.g. shapes where the image alone
    decides the target, neutral names otherwise."""
    return task_class(task).toy_classes(tuple(modalities))


def drawn_classes(task: type[Task], classes: tuple[str, ...]) -> tuple[str, ...]:
    """The classes the inputs show (shapes, bins, keywords): all of them, but not a mask's class 0, the
    background."""
    return classes[1:] if task.reads_masks else classes


def columns(task: type[Task] | str, modalities: tuple[str, ...]) -> list[str]:
    """The header of the toy CSVs for `task` and `modalities`."""
    task = task_class(task)
    names = [IMAGE_COLUMN] if "image" in modalities else []
    names += [MASK_COLUMN] if task.reads_masks else []
    names += [*NUMERIC_COLUMNS, *CATEGORICAL_COLUMNS] if "tabular" in modalities else []
    names += [SEQUENCE_COLUMN] if "sequence" in modalities else []
    return names + list(task.toy_target_columns)


def describe(task: type[Task] | str, modalities: tuple[str, ...], classes: tuple[str, ...] | None = None) -> str:
    """One line: the layout, columns and targets the toy data has for these answers."""
    task = task_class(task)
    classes = classes or default_classes(task, modalities)
    head = f"{task.name} from {'+'.join(modalities)}"
    if uses_class_folders(task, modalities):
        return f"{head}: class folders <split>/<class>/<index>.png, {len(classes)} classes ({', '.join(classes)})"
    files = " + images/<split>/" if "image" in modalities else ""
    files += " + masks/<split>/" if task.reads_masks else ""
    targets = task.toy_description(classes)
    return f"{head}: <split>.csv{files} with columns {', '.join(columns(task, modalities))}; {targets}"


def tabular_latent(x0: float, colour: str, k: int) -> int:
    """The latent a tabular row shows (of `k`): the bin of x0, counted from the other end for warm colours."""
    position = min(k - 1, max(0, int((x0 + 2) / 4 * k)))
    return k - 1 - position if colour in WARM else position


def sequence_latent(sentence: str, k: int) -> int:
    """The latent a sentence shows (of `k`): its (first) keyword."""
    return next(KEYWORDS.index(word) for word in sentence.split() if word in KEYWORDS[:k])


def filler_sentence(keywords: list[str], rng: random.Random, length: int | None = None) -> str:
    """Filler words with `keywords` at random places, `length` words in all (6 to 12 when None)."""
    length = length or rng.randint(6, 12)
    words = [rng.choice(FILLER) for _ in range(length - len(keywords))]
    for keyword in keywords:
        words.insert(rng.randint(0, len(words)), keyword)
    return " ".join(words)


def tabular_cells(x0: float, colour: str, rng: random.Random) -> dict[str, str]:
    """x0 and colour as given, plus noise columns at different scales with some empty cells."""
    cells = {"x0": f"{x0:.4f}", "colour": colour}
    noise = (rng.gauss(0, 1), rng.gauss(50, 10), rng.uniform(0, 1000))
    for name, value in zip(NUMERIC_COLUMNS[1:], noise, strict=True):
        cells[name] = "" if rng.random() < MISSING_RATE else f"{value:.4f}"
    return cells


@dataclass(frozen=True)
class ToyRows:
    """Draws the rows of one dataset: the task draws a row's latents and target (`task.toy_row`), and `inputs`
    what each input shows of the latents."""

    root: Path
    task: type[Task]
    modalities: tuple[str, ...]
    classes: tuple[str, ...]
    image_size: int

    @property
    def k(self) -> int:
        """How many values each input's latent takes (classification and segmentation)."""
        return len(drawn_classes(self.task, self.classes))

    @property
    def shapes(self) -> tuple[str, ...]:
        """Latent index -> drawn shape: the class names when they are shapes."""
        names = drawn_classes(self.task, self.classes)
        return names if set(names) <= set(CLASSES) else SHAPES

    def row(self, split: str, index: int, rng: random.Random) -> dict[str, str]:
        return self.task.toy_row(self, split, index, rng)

    @cached_property
    def latents_by_class(self) -> list[list[tuple[int, ...]]]:
        """Classification: class -> every combination of latents (one per input) whose sum falls in its bin.

        The bins cut the sums, in order, into `k` runs holding about equally many combinations (a sum's bin is
        where the middle of its run falls); with one input each class is its own latent.
        """
        by_sum: dict[int, list[tuple[int, ...]]] = {}
        for combination in product(range(self.k), repeat=len(self.modalities)):
            by_sum.setdefault(sum(combination), []).append(combination)
        by_class: list[list[tuple[int, ...]]] = [[] for _ in range(self.k)]
        before, total = 0, self.k ** len(self.modalities)
        for _, run in sorted(by_sum.items()):
            by_class[min(self.k - 1, int((before + len(run) / 2) * self.k / total))] += run
            before += len(run)
        return by_class

    def class_latents(self, index: int, rng: random.Random) -> dict[str, list[int]]:
        """Classification: the latents of sample `index`, of class `index % k` (so every split holds every class
        equally often; a small test split of random labels can miss one): any combination in that class's bin."""
        combination = rng.choice(self.latents_by_class[index % self.k])
        return {modality: [z] for modality, z in zip(self.modalities, combination, strict=True)}

    def class_row(self, split: str, index: int, rng: random.Random) -> dict[str, str]:
        """A single-label classification row: class `index % k` as the target, shown by latents in its bin
        (multiclass and binary toy rows)."""
        latents = self.class_latents(index, rng)
        return {"target": self.classes[index % self.k], **self.inputs(split, index, latents, rng)}

    def inputs(
        self,
        split: str,
        index: int,
        latents: dict[str, list[int]],
        rng: random.Random,
        mask_values: list[int] | None = None,
    ) -> dict[str, str]:
        """The input cells that show `latents` (modality -> the latent values it shows; an image or a sentence may
        show two): the shapes drawn, the bin of x0, the keywords. `mask_values`: each shape's class in the mask."""
        row = {}
        if "image" in latents:
            row |= self.image(split, index, [self.shapes[z] for z in latents["image"]], rng, mask_values=mask_values)
        if "tabular" in latents:
            colour = rng.choice(COLOURS)
            z = latents["tabular"][0]
            position = self.k - 1 - z if colour in WARM else z
            row |= tabular_cells(-2 + 4 * (position + rng.uniform(0.1, 0.9)) / self.k, colour, rng)
        if "sequence" in latents:
            row[SEQUENCE_COLUMN] = filler_sentence([KEYWORDS[z] for z in latents["sequence"]], rng)
        return row

    def image(self, split: str, index: int, shapes: list[str], rng: random.Random, **scene) -> dict[str, str]:
        """Draw the image (and its mask, when the scene has `mask_values`) and save them; returns their cells."""
        image, mask = draw_scene(shapes, self.image_size, rng, **scene)
        cells = {}
        for column, folder, picture in ((IMAGE_COLUMN, "images", image), (MASK_COLUMN, "masks", mask)):
            if picture is not None:
                path = Path(folder, split, f"{index:04d}.png")
                picture.save(self.root / path, **PNG)
                cells[column] = path.as_posix()
        return cells


def _validate(task: type[Task], modalities: tuple[str, ...], classes: tuple[str, ...] | None) -> tuple:
    """The modalities in column order and the class names; ValueError naming what is wrong."""
    unknown = [m for m in modalities if m not in INPUTS]
    if unknown or not modalities or len(set(modalities)) != len(modalities):
        raise ValueError(f"modality {'+'.join(modalities)!r}: expected {', '.join(INPUTS)} joined by '+', each once")
    modalities = tuple(m for m in INPUTS if m in modalities)
    if task.reads_masks and "image" not in modalities:
        raise ValueError(f"{task.name} needs the image input")
    classes = task.toy_classes(modalities, classes)
    shapes = drawn_classes(task, classes)
    if (uses_class_folders(task, modalities) or task.reads_masks) and not set(shapes) <= set(CLASSES):
        raise ValueError(f"classes drawn as shapes must be among {', '.join(CLASSES)}; got {', '.join(shapes)}")
    limit = min(len(SHAPES) if "image" in modalities else len(KEYWORDS), len(KEYWORDS))
    if len(shapes) > limit:
        raise ValueError(f"the toy data draws at most {limit} classes for {'+'.join(modalities)}, got {len(shapes)}")
    return modalities, classes


def write_toy_dataset(
    root: str | Path,
    task: type[Task] | str = TASK_TYPE,
    modalities: tuple[str, ...] = MODALITIES,
    *,
    sizes: dict[str, int] | None = None,
    image_size: int = 64,
    classes: tuple[str, ...] | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write the toy dataset for `task` (a Task class, or its name: the project's task by default) and `modalities`
    under `root` and return it.

    `sizes` maps split -> samples (default `DEFAULT_SIZES`); in the class-folder layout it is images PER CLASS
    (default: `DEFAULT_SIZES` spread over the classes). `classes` overrides `default_classes` (unused for
    regression). Refuses a non-empty `root` (FileExistsError) unless `overwrite`.
    """
    task = task_class(task)
    modalities, classes = _validate(task, tuple(modalities), classes)
    folders = uses_class_folders(task, modalities)
    if sizes is None:
        sizes = {split: n // len(classes) if folders else n for split, n in DEFAULT_SIZES.items()}
    if not set(sizes) <= set(SPLITS):
        raise ValueError(f"sizes: splits must be among {', '.join(SPLITS)}, got {', '.join(sizes)}")
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{root} already exists and is not empty; pass --overwrite to replace it")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    toy = ToyRows(root, task, modalities, classes, image_size)
    for split, count in sizes.items():
        rng = random.Random(f"{seed}/{split}")  # one generator per split: resizing one split leaves the others
        if folders:
            for shape in classes:
                (root / split / shape).mkdir(parents=True, exist_ok=True)
                for index in range(count):
                    draw_shape(shape, image_size, rng).save(root / split / shape / f"{index:04d}.png", **PNG)
            continue
        header = columns(task, modalities)
        for column, folder in ((IMAGE_COLUMN, "images"), (MASK_COLUMN, "masks")):
            if column in header:
                (root / folder / split).mkdir(parents=True, exist_ok=True)
        with (root / f"{split}.csv").open("w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=header, lineterminator="\n")
            writer.writeheader()
            writer.writerows(toy.row(split, index, rng) for index in range(count))
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="toy-data",
        description="Write a small learnable dataset in the on-disk format this project reads "
        f"(default: {describe(TASK_TYPE, MODALITIES)}).",
    )
    parser.add_argument("--root", default="data/toy", help="output folder (default: data/toy)")
    parser.add_argument(
        "--task", default=TASK_TYPE, help=f"task: a module of tasks/ or a Task class path (default: {TASK_TYPE})"
    )
    default_modality = "+".join(MODALITIES)
    parser.add_argument("--modality", default=default_modality, help=f"inputs, e.g. image+tabular ({default_modality})")
    parser.add_argument("--image-size", type=int, default=64, help="image side in pixels (default: 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    args = parser.parse_args(argv)
    modalities = tuple(args.modality.split("+"))
    try:
        task = task_class(args.task)
        root = write_toy_dataset(
            args.root, task, modalities, image_size=args.image_size, seed=args.seed, overwrite=args.overwrite
        )
    except FileExistsError as error:
        parser.exit(2, f"toy-data: {error}\n")
    except ValueError as error:
        parser.error(str(error))
    modalities = tuple(m for m in INPUTS if m in modalities)
    unit = "images per split" if uses_class_folders(task, modalities) else "rows per split"
    counts = ", ".join(f"{split} {_count(root, split)}" for split in SPLITS)
    print(f"Wrote {describe(task, modalities)}")
    print(f"  to {root} ({unit}: {counts})")


def _count(root: Path, split: str) -> int:
    """Samples written for a split: rows of its CSV, or images in its class folders."""
    if (root / f"{split}.csv").exists():
        with (root / f"{split}.csv").open(encoding="utf-8") as file:
            return sum(1 for _ in file) - 1
    return sum(1 for _ in (root / split).glob("*/*.png"))
