"""`serve`: an HTTP inference server for a checkpoint, built on LitServe (pip install -e ".[serve]").

    python -m PACKAGE serve --config configs/default.yaml --config configs/toy.yaml --ckpt_path best [--port 8000]

POST /predict takes one sample as a JSON object keyed by the columns of a predict CSV (practices/serve_requests.py),
or as a multipart form whose image field is the uploaded file; the answer is that sample's row of predictions.csv
(the task's columns, e.g. the predicted class and every class's probability) as JSON, plus `mask_png` (the
predicted mask as base64 PNG, pixel value = class index) for segmentation. GET /health answers "ok" once the
model is loaded. The sample is read by the data's own readers and decoded by the prediction writer's function,
so served and `predict`ed outputs are the same. A bad request gets a 4xx with {"error": one line naming the
field}; the other requests of its batch are answered as usual.

LitServe runs `ModelAPI` in worker processes (`workers_per_device` per device): `setup` loads the checkpoint's
weights there, `decode_request` reads a request into a sample, `predict` runs the samples LitServe batched
(up to `max_batch_size` requests arriving within `batch_timeout` seconds) through the model's `predict_step`,
and `encode_response` answers. `RequestBody` runs before, in the HTTP processes: it turns a multipart form into
the same JSON object and answers a body that is no JSON object.
"""

# No `from __future__ import annotations`: LitServe reads decode_request's and encode_response's annotations as
# classes (Request: parse the body; Response: answer as returned).
import base64
import io
import json
import signal
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import default_collate

from ..errors import ProjectError
from .callbacks.diagnosis import load_weights
from .callbacks.prediction_writer import decode_outputs, mask_image
from .serve_requests import RequestError, RequestReader

try:
    import litserve
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
except ModuleNotFoundError as error:  # the serve extra is not installed
    raise ProjectError(f'serve needs LitServe ({error.name} is missing): pip install -e ".[serve]"') from None

API_PATH = "/predict"
HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # the hosts LitServer.run accepts


class ModelAPI(litserve.LitAPI):
    """A checkpoint behind LitServe: requests -> samples -> the model's predict_step -> predictions.csv rows.

    Args:
        model: the architecture (the CLI builds it from the config); the checkpoint's weights are loaded in `setup`.
        requests: reads a request with the data's readers (fitted on the train split, like predict's).
        ckpt_path: the checkpoint file.
        tta_mode: the configured test-time augmentation (practices/tta.py), as `predict` applies it; None: off.
        max_batch_size / batch_timeout: LitServe's batching (LitAPI's arguments).
    """

    def __init__(
        self,
        model: pl.LightningModule,
        requests: RequestReader,
        ckpt_path: str,
        tta_mode: str | None = None,
        max_batch_size: int = 1,
        batch_timeout: float = 0.0,
    ):
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path=API_PATH)
        self.model, self.requests, self.ckpt_path, self.tta_mode = model, requests, ckpt_path, tta_mode

    def setup(self, device: str) -> None:
        load_weights(self.model, self.ckpt_path)
        self.model = self.model.to(device).eval()
        self.device_name = device
        # Uploaded images are written here for the image reader to open, one file per request while it is read.
        self._folder = tempfile.TemporaryDirectory(prefix="serve-")

    def decode_request(self, request: Request) -> dict[str, Any] | RequestError:
        # Not raised: LitServe would answer every request of the batch with it.
        try:
            return self.requests.sample(request, Path(self._folder.name))
        except RequestError as error:
            return error

    def predict(self, x: Any) -> Any:
        # Batched: the list of decoded requests (LitAPI.batch keeps a list of dicts); else one of them.
        items = x if isinstance(x, list) else [x]
        samples = [item for item in items if not isinstance(item, RequestError)]
        answers = iter(self._answer(samples) if samples else [])
        results = [item if isinstance(item, RequestError) else next(answers) for item in items]
        return results if isinstance(x, list) else results[0]

    @torch.inference_mode()
    def _answer(self, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The predictions.csv row of each sample (the same collate, predict_step and decoding as `predict`)."""
        model = self.model
        batch = model.transfer_batch_to_device(default_collate(samples), torch.device(self.device_name), 0)
        if self.tta_mode:
            from .tta import tta_activations

            outputs = tta_activations(model, batch, self.tta_mode).float().cpu()
        else:
            outputs = model.predict_step(batch, 0)["outputs"]
        rows, masks = decode_outputs(model.task, outputs)
        if masks is None:
            return rows
        return [{**row, "mask_png": png_base64(mask)} for row, mask in zip(rows, masks, strict=True)]

    def encode_response(self, output: dict[str, Any] | RequestError) -> Response:
        if isinstance(output, RequestError):
            return JSONResponse({"error": str(output)}, status_code=output.status)
        return JSONResponse(output)


def png_base64(mask: Any) -> str:
    """A uint8 [H, W] mask as base64 PNG text: the bytes of the file `predict` writes to predicted_masks/."""
    buffer = io.BytesIO()
    mask_image(mask).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class RequestBody:
    """ASGI middleware for POST /predict: a multipart form becomes the JSON object of its fields,
    each uploaded file as base64 text; a body that is no JSON object is answered 400 here. Unlike LitServe's own
    parsing, whose failures are 500s, and whose form objects cannot reach the worker processes."""

    def __init__(self, app: Callable[..., Awaitable[None]], path: str = API_PATH):
        self.app, self.path = app, path

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            fields = await request_json(request)
        except RequestError as error:
            await JSONResponse({"error": str(error)}, status_code=error.status)(scope, receive, send)
            return
        body = json.dumps(fields).encode()
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:  # after the body: wait for the client to disconnect, as the server would
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app({**scope, "headers": headers}, replay, send)


async def request_json(request: Request) -> dict[str, Any]:
    """The request's fields: a multipart form's, its files as base64 text, else the body's JSON object (whatever the
    content type says: `curl -d '{...}'` sends JSON labelled as a url-encoded form)."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        fields: dict[str, Any] = {}
        for name, value in form.multi_items():
            if isinstance(value, str):
                fields[name] = value
            else:  # an uploaded file
                fields[name] = base64.b64encode(await value.read()).decode("ascii")
        return fields
    try:
        fields = json.loads(await request.body())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RequestError(f"body: not JSON ({error}); send a JSON object of fields or a multipart form") from None
    if not isinstance(fields, dict):
        raise RequestError(f"body: expected a JSON object of fields, got a JSON {type(fields).__name__}")
    return fields


def serve(
    model: pl.LightningModule,
    datamodule: Any,
    ckpt_path: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_batch_size: int = 1,
    batch_timeout: float = 0.0,
    workers_per_device: int = 1,
    accelerator: str = "auto",
    timeout: float = 30.0,
    tta_mode: str | None = None,
) -> None:
    """Serve the checkpoint until interrupted (Ctrl+C, or SIGTERM as a container stop sends)."""
    if max_batch_size < 1 or batch_timeout < 0 or workers_per_device < 1:
        raise ProjectError(
            f"max_batch_size={max_batch_size}, batch_timeout={batch_timeout}, workers_per_device={workers_per_device}:"
            " the batch size and workers must be at least 1, the timeout at least 0"
        )
    if host not in HOSTS or not 1024 <= port <= 65535:
        raise ProjectError(
            f"host={host!r}, port={port}: LitServe listens on {', '.join(HOSTS)} (this machine only, every IPv4 or "
            "IPv6 interface) and a port from 1024 to 65535"
        )
    requests = RequestReader(dict(datamodule.inputs))
    api = ModelAPI(model, requests, str(ckpt_path), tta_mode, max_batch_size, batch_timeout)
    server = litserve.LitServer(
        api,
        accelerator=accelerator,
        workers_per_device=workers_per_device,
        timeout=timeout,
        middlewares=[RequestBody],
        model_metadata={"checkpoint": str(ckpt_path), "fields": requests.fields},
    )
    print(
        f"Serving {ckpt_path} at http://{host}:{port}{API_PATH} (POST a JSON object: {requests.describe()}); "
        f"GET /health answers once the model is loaded",
        flush=True,
    )
    signal.signal(signal.SIGTERM, _interrupt)  # LitServe shuts its workers down on KeyboardInterrupt
    server.run(host=host, port=port, generate_client_file=False, log_level="warning")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
