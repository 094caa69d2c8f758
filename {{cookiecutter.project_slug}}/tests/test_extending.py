"""The README's "Extending the model" recipes, run as written.

Each test reads one recipe from README.md (the code blocks after its `<!-- recipe: name -->` marker), writes its
Python file into the package and its config lines into a temporary config file, runs `fit`, `test` and
`predict` through the CLI with that config added last, and checks that the change took effect. The files are
removed again afterwards, so the recipes in the README and the code they run on cannot drift apart.
"""

from __future__ import annotations

import csv
import importlib
import json
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

import {{ cookiecutter.package_name }}
from conftest import MONITOR, PROJECT, cli_args
from {{ cookiecutter.package_name }}.answers import MODALITIES, TASK_TYPE
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.contract import ProjectModule
from {{ cookiecutter.package_name }}.models import registry

PACKAGE = {{ cookiecutter.package_name }}.__name__
PACKAGE_DIR = Path({{ cookiecutter.package_name }}.__file__).parent
# A recipe: its marker, then one or more fenced blocks, each starting with a comment naming the file it is.
RECIPE = re.compile(r"<!-- recipe: (?P<name>[\w-]+) -->\n(?P<blocks>(?:```\w+\n.*?\n```\n)+)", re.DOTALL)
BLOCK = re.compile(r"```\w+\n# (?P<path>\S+)\n(?P<text>.*?\n)```\n", re.DOTALL)
# Two training steps and one validation batch: enough for a checkpoint, the logged losses and the metrics.
SHORT_FIT = [
    "--trainer.max_epochs", "1",
    "--trainer.limit_train_batches", "2",
    "--trainer.limit_val_batches", "1",
    "--trainer.log_every_n_steps", "1",
]  # fmt: skip
Install = Callable[[str], list[str]]


def readme_recipes() -> dict[str, list[tuple[str, str]]]:
    """Recipe name -> [(path the README names, file text)], in README order."""
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    recipes = {}
    for match in RECIPE.finditer(readme):
        recipes[match["name"]] = [(block["path"], block["text"]) for block in BLOCK.finditer(match["blocks"])]
    return recipes


def test_the_readme_has_a_recipe_for_each_extension_this_project_supports() -> None:
    expected = {"aux_loss", "metric", "my_module"}
    if TASK_TYPE != "segmentation":  # a segmentation network has no registered head or encoders
        expected.add("mlp_head")
        if "image" in MODALITIES:
            expected.add("tiny_cnn")
    recipes = readme_recipes()
    assert set(recipes) == expected
    for name, blocks in recipes.items():
        paths = [path for path, _ in blocks]
        assert [p.split("/")[0] for p in paths] == ["src", "configs"], f"{name}: one Python file, one config: {paths}"
        assert paths[0].startswith(f"src/{PACKAGE}/") and paths[0].endswith(".py"), paths[0]


@pytest.fixture
def install_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Install]:
    """`install(name)` writes the recipe's Python file into the package and returns the `--config` flags of its
    config lines; at teardown the file (and its module) is removed again."""
    written: list[Path] = []
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # no __pycache__ files left behind in src/
    # The project's own parts first, into the registry itself: a module first imported while the copies below are
    # in place would register into a copy, and Python never runs a module twice to register it again.
    registry._discover()
    # The registry imports the modules under models/ once per process: let it look again for the new file.
    monkeypatch.setattr(registry, "_discovered", False)
    # Parts the recipe registers leave the registry with its file, so later tests in this process see the project's.
    for kind, parts in registry._REGISTRY.items():
        monkeypatch.setitem(registry._REGISTRY, kind, dict(parts))

    def install(name: str) -> list[str]:
        recipes = readme_recipes()
        if name not in recipes:
            pytest.skip(f"this project's README has no {name} recipe")
        flags = []
        for path, text in recipes[name]:
            if path.startswith("configs/"):
                config = tmp_path / Path(path).name
                config.write_text(text, encoding="utf-8")
                flags += ["--config", str(config)]
                continue
            target = PACKAGE_DIR / Path(path).relative_to(f"src/{PACKAGE}")
            if target.exists():
                pytest.skip(f"{target} exists already: the recipe test would overwrite it")
            target.write_text(text, encoding="utf-8")
            written.append(target)
        importlib.invalidate_caches()  # the import system's folder listings predate the new file
        return flags

    yield install
    for target in written:
        target.unlink()
        module = ".".join(target.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        sys.modules.pop(module, None)


def fit_test_predict(data: Path, runs: Path, config: list[str]) -> tuple:
    """A two-step fit, then test and predict on its last checkpoint, every command with the recipe's config."""
    fit = main(cli_args("fit", data, runs, *SHORT_FIT, *config))
    checkpoint = fit.run_dir / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    test = main(cli_args("test", data, runs, "--ckpt_path", str(checkpoint), *config))
    predict = main(cli_args("predict", data, runs, "--ckpt_path", str(checkpoint), *config))
    assert (predict.run_dir / "predictions.csv").is_file()
    return fit, test, predict


def written_metrics(test) -> dict[str, float]:  # noqa: ANN001
    """What `test` wrote to <run>/test_metrics.json."""
    return json.loads((test.run_dir / "test_metrics.json").read_text(encoding="utf-8"))


def test_aux_loss_recipe(install_recipe: Install, tiny_data: Path, tmp_path: Path) -> None:
    fit, test, predict = fit_test_predict(tiny_data, tmp_path / "runs", install_recipe("aux_loss"))
    assert {type(cli.model).__name__ for cli in (fit, test, predict)} == {"AuxLossModel"}
    with next(fit.run_dir.rglob("metrics.csv")).open(encoding="utf-8") as file:
        logged = [float(row["train/aux_loss"]) for row in csv.DictReader(file) if row.get("train/aux_loss")]
    assert len(logged) == 2 and all(torch.isfinite(torch.tensor(logged))), logged  # one per training step
    assert f"test/{MONITOR}" in written_metrics(test)


SEGMENTATION_NETWORK = pytest.mark.skipif(
    TASK_TYPE == "segmentation", reason="the segmentation network has no registered head or encoders"
)


@SEGMENTATION_NETWORK
def test_custom_head_recipe(install_recipe: Install, tiny_data: Path, tmp_path: Path) -> None:
    fit, test, predict = fit_test_predict(tiny_data, tmp_path / "runs", install_recipe("mlp_head"))
    for cli in (fit, test, predict):  # test and predict rebuild the network from the config, then load weights
        assert any(type(module).__name__ == "MLPHead" for module in cli.model.network.modules())
    assert f"test/{MONITOR}" in written_metrics(test)


def test_new_metric_recipe(install_recipe: Install, tiny_data: Path, tmp_path: Path) -> None:
    fit, test, _ = fit_test_predict(tiny_data, tmp_path / "runs", install_recipe("metric"))
    task = test.model.task
    assert type(task).__name__ == "MyTask"
    added = set(task.metrics()) - set(super(type(task), task).metrics())
    assert added, "the recipe's task adds no metric"
    assert {f"val/{name}" for name in added} <= set(fit.trainer.callback_metrics)
    assert {f"test/{name}" for name in added} | {f"test/{MONITOR}"} <= set(written_metrics(test))


@SEGMENTATION_NETWORK
@pytest.mark.skipif("image" not in MODALITIES, reason="the recipe replaces the image encoder")
def test_non_timm_backbone_recipe(install_recipe: Install, tiny_data: Path, tmp_path: Path) -> None:
    from {{ cookiecutter.package_name }}.data.image import IMAGENET_MEAN, IMAGENET_STD

    fit, test, _ = fit_test_predict(tiny_data, tmp_path / "runs", install_recipe("tiny_cnn"))
    for cli in (fit, test):
        assert type(cli.model.network.encoders["image"]).__name__ == "TinyCNN"
        assert cli.model.network.backbone is None  # no timm backbone: discriminative LRs and fine-tuning stay off
        data_config = cli.datamodule.data_config  # no data_config of its own: ImageNet statistics, the set size
        assert (data_config.mean, data_config.std) == (IMAGENET_MEAN, IMAGENET_STD)
        assert data_config.image_size == 64
    assert f"test/{MONITOR}" in written_metrics(test)


def test_own_lightning_module_recipe(install_recipe: Install, tiny_data: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    config = install_recipe("my_module")
    fit, test, predict = fit_test_predict(tiny_data, runs, config)
    for cli in (fit, test, predict):
        assert type(cli.model).__name__ == "MyModule" and isinstance(cli.model, ProjectModule)
    checkpoint = fit.run_dir / "checkpoints" / "last.ckpt"
    hparams = torch.load(checkpoint, map_location="cpu", weights_only=False)["hyper_parameters"]
    assert hparams["_class_path"] == f"{PACKAGE}.my_module.MyModule" and hparams["lr"] == 1e-3
    assert f"test/{MONITOR}" in written_metrics(test)
    # The project's own commands run it too.
    diagnose = main(cli_args("diagnose", tiny_data, runs, "--ckpt_path", str(checkpoint), *config))
    assert (diagnose.run_dir / "diagnosis.json").is_file()
    export = main(
        cli_args("export", tiny_data, runs, "--ckpt_path", str(checkpoint), "--formats", "torchscript", *config)
    )
    assert (export.run_dir / "export" / "model.torchscript.pt").is_file()
    lr_find = main(cli_args("lr-find", tiny_data, runs, "--num_training", "5", *config))
    assert (lr_find.run_dir / "lr_find.json").is_file()
