"""`serve`: the HTTP server answers what `predict` writes, refuses bad requests in one line, and keeps serving.

In-process: a request is read into the very sample `predict` reads from the same row. Then one server per module
(a subprocess on 127.0.0.1, as a user starts it; `pytest -m slow`) for a one-epoch checkpoint, with real HTTP
requests from the standard library's client. The server needs the serve extra (pip install -e ".[serve]").
"""

from __future__ import annotations

import base64
import contextlib
import csv
import importlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import cli_args, project_datamodule
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.data.datamodule import RowDataset
from {{ cookiecutter.package_name }}.data.table import Row
from {{ cookiecutter.package_name }}.errors import ProjectError
from {{ cookiecutter.package_name }}.module import Model
from {{ cookiecutter.package_name }}.practices.serve_requests import RequestError, RequestReader, request_fields

PACKAGE = Model.__module__.split(".")[0]
FEW_BATCHES = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2"]
# predictions.csv rounds probabilities to 6 decimals (regression: 7 significant digits); a sample computed in
# another batch differs by float32 rounding on top.
ATOL = 1e-5
STARTUP_SECONDS = 240  # a loaded CI machine: the CLI, the data's checks, a spawned worker loading the weights


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
    """(status, JSON answer) of a POST; a 4xx / 5xx is returned, not raised."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def post_json(url: str, fields: object) -> tuple[int, dict[str, Any]]:
    return post(url, json.dumps(fields).encode())


def multipart(fields: dict[str, str], files: dict[str, bytes]) -> tuple[bytes, str]:
    """A multipart/form-data body (as `curl -F` sends) and its content type."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    for k, data in files.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{k}.png"\r\n'
        parts.append(f"{head}Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def request_of(row: Row, fields: dict[str, str]) -> dict[str, Any]:
    """The JSON a client sends for a data row: the image file as base64, numbers as JSON numbers, a numeric series
    as a list, other cells as the CSV's text."""
    request: dict[str, Any] = {}
    for name, kind in fields.items():
        value = row.values[name]
        if kind == "image":
            request[name] = base64.b64encode(row.path(name).read_bytes()).decode()
        elif kind == "number" and value.strip():
            request[name] = float(value)
        elif kind == "series":
            request[name] = [float(v) for v in value.split()]
        else:
            request[name] = value
    return request


def same_tensors(served: dict[str, Any], read: dict[str, Any]) -> None:
    for key, value in served.items():
        if isinstance(value, dict):
            same_tensors(value, read[key])
        else:
            assert isinstance(value, torch.Tensor) and torch.equal(value, read[key]), key


def test_a_request_is_read_into_the_sample_predict_reads_from_the_same_row(tiny_data: Path, tmp_path: Path) -> None:
    data = project_datamodule(tiny_data)
    requests = RequestReader(dict(data.inputs))
    for row in data.splits["test"][:4]:
        served = requests.sample(request_of(row, requests.fields), tmp_path)
        read = RowDataset([row], list(data.inputs.values()))[0]  # what predict_dataloader yields for the row
        assert set(served) == set(read) - {"target"} and served["id"] == "request"  # a test row has its mask
        same_tensors({k: v for k, v in served.items() if k != "id"}, read)
    assert not list(tmp_path.iterdir())  # uploaded images are removed once read


def test_a_bad_request_is_one_line_naming_the_field(tiny_data: Path, tmp_path: Path) -> None:
    data = project_datamodule(tiny_data)
    requests = RequestReader(dict(data.inputs))
    good = request_of(data.splits["test"][0], requests.fields)
    for name, kind in requests.fields.items():
        bad = {
            "image": [(base64.b64encode(b"not an image").decode(), "the uploaded file cannot be read"), ("%", "64")],
            "number": [("twelve", "'twelve' is not a number"), ([1], "expected a number")],
            "category": [({"a": 1}, "expected a string")],
            "text": [(5, "expected a string")],
            "series": [("1 x 3", "'x' is not a number"), ([1, "2"], "a list of numbers")],
        }[kind]
        for value, message in [*bad, (None, "")] if kind == "number" else bad:
            if value is None:  # null: a missing value, as an empty CSV cell
                requests.sample({**good, name: None}, tmp_path)
                continue
            with pytest.raises(RequestError, match=rf"{re.escape(name)}.*{re.escape(message)}"):
                requests.sample({**good, name: value}, tmp_path)
        with pytest.raises(RequestError, match=f"field {name!r} is missing"):
            requests.sample({k: v for k, v in good.items() if k != name}, tmp_path)
    assert not list(tmp_path.iterdir())


def test_a_numeric_series_is_a_list_of_numbers_or_the_csv_text(tmp_path: Path) -> None:
    sequence = pytest.importorskip(f"{PACKAGE}.data.sequence", reason="the project has no sequence input")
    reader = sequence.SequenceReader("series", kind="numeric", max_length=4)
    reader.fit([Row({"series": "1 2 3 4 5"}, Path("train.csv"), 2)])
    requests = RequestReader({"sequence": reader})
    from_csv = RowDataset([Row({"series": "2.5 3 -1e-07"}, Path("new.csv"), 2)], [reader])[0]
    for series in ([2.5, 3, -1e-7], "2.5 3 -1e-07"):
        same_tensors({"sequence": requests.sample({"series": series}, tmp_path)["sequence"]}, from_csv)


def test_without_the_serve_extra_serve_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "litserve", None)  # as if not installed: importing it fails
    monkeypatch.delitem(sys.modules, f"{PACKAGE}.practices.serve", raising=False)
    with pytest.raises(ProjectError, match=r'serve needs LitServe .*pip install -e "\.\[serve\]"'):
        importlib.import_module(f"{PACKAGE}.practices.serve")


def same_prediction(served: dict[str, Any], written: dict[str, str], folder: Path) -> None:
    """A served answer holds predictions.csv's row: equal texts, numbers within ATOL, the same mask."""
    for column, value in written.items():
        if column == "id":
            continue
        if column == "mask_file":
            mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(served["mask_png"]))))
            expected = np.asarray(Image.open(folder / value))
            assert mask.shape == expected.shape
            # Pixels whose top two classes tie to float32 rounding may flip between batches.
            assert (mask == expected).mean() > 0.99
            continue
        try:
            assert abs(float(served[column]) - float(value)) <= ATOL, column
        except ValueError:  # a class name
            assert str(served[column]) == value, column


@pytest.fixture(scope="module")
def server(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """A one-epoch checkpoint, `predict` on its test split, and `serve` of it (batches of up to 4 requests)."""
    pytest.importorskip("litserve", reason='serving needs the serve extra: pip install -e ".[serve]"')
    folder = tmp_path_factory.mktemp("serve")
    runs = folder / "runs"
    main(cli_args("fit", tiny_data, runs, *FEW_BATCHES, "--trainer.max_epochs", "1"))
    predict = main(cli_args("predict", tiny_data, runs, "--ckpt_path", "best"))
    with open(predict.run_dir / "predictions.csv", newline="") as file:
        written = {row["id"]: row for row in csv.DictReader(file)}
    rows = {row.id: row for row in predict.datamodule.splits["test"]}
    port = free_port()
    args = ["--ckpt_path", "best", "--port", str(port), "--max_batch_size", "4", "--batch_timeout", "0.05"]
    args += ["--trainer.logger", "false"]
    # This module's fixture starts before the per-test environment (conftest): the same settings, given here.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    log = (folder / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", PACKAGE, *cli_args("serve", tiny_data, runs, *args, logger=None)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the workers go with it at the end
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"serve exited ({process.returncode}):\n{(folder / 'serve.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                    if response.read() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"serve did not answer /health in time:\n{(folder / 'serve.log').read_text()[-3000:]}")
            time.sleep(0.5)
        fields = request_fields(dict(predict.datamodule.inputs))
        yield SimpleNamespace(url=url, rows=rows, written=written, fields=fields, folder=predict.run_dir)
    finally:
        process.send_signal(signal.SIGTERM)  # LitServe's graceful shutdown
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        with contextlib.suppress(ProcessLookupError):  # any process of its group left behind goes too
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


@pytest.mark.slow  # a server of several processes
def test_served_answers_are_the_predictions_even_in_a_batch_with_a_bad_request(server: SimpleNamespace) -> None:
    ids = list(server.written)
    bodies = [request_of(server.rows[sample], server.fields) for sample in ids]
    # Concurrent requests, so LitServe batches them, one of them malformed: the others are answered as usual.
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda body: post_json(f"{server.url}/predict", body), [*bodies, {}]))
    *answers, (bad_status, _) = answers
    assert bad_status == 422
    for sample, (status, answer) in zip(ids, answers, strict=True):
        assert status == 200, answer
        same_prediction(answer, server.written[sample], server.folder)


@pytest.mark.slow
def test_a_multipart_upload_is_answered_like_its_json(server: SimpleNamespace) -> None:
    sample = next(iter(server.written))
    request = request_of(server.rows[sample], server.fields)
    files = {name: base64.b64decode(request.pop(name)) for name, kind in server.fields.items() if kind == "image"}
    series = [name for name, kind in server.fields.items() if kind == "series"]
    fields = {k: (" ".join(map(str, v)) if k in series else str(v)) for k, v in request.items()}
    status, answer = post(f"{server.url}/predict", *multipart(fields, files))
    assert status == 200, answer
    same_prediction(answer, server.written[sample], server.folder)


@pytest.mark.slow
def test_bad_requests_get_one_line_naming_the_field_and_the_server_keeps_serving(server: SimpleNamespace) -> None:
    url = f"{server.url}/predict"
    sample = next(iter(server.written))
    good = request_of(server.rows[sample], server.fields)
    name, kind = next(iter(server.fields.items()))
    wrong_type = {"image": 3, "number": [1, 2], "category": {"a": 1}, "text": 5, "series": {"a": 1}}[kind]
    bad = [
        ({k: v for k, v in good.items() if k != name}, f"field {name!r} is missing"),
        ({**good, name: wrong_type}, f"field {name!r}: expected"),
    ]
    if kind == "image":
        bad.append(({**good, name: base64.b64encode(b"not an image").decode()}, f"field {name!r}: the uploaded file"))
        bad.append(({**good, name: "%%%"}, f"field {name!r}: not base64"))
    for body, message in bad:
        status, answer = post_json(url, body)
        assert status == 422 and message in answer["error"] and "\n" not in answer["error"], answer
    status, answer = post(url, b"{not json")
    assert status == 400 and answer["error"].startswith("body: not JSON"), answer
    status, answer = post_json(url, [good])
    assert status == 400 and "JSON object" in answer["error"], answer
    # Still serving, and still right.
    status, answer = post_json(url, good)
    assert status == 200
    same_prediction(answer, server.written[sample], server.folder)
