"""The Open Inference Protocol (v2) of KServe, Seldon MLServer and Triton, over REST and JSON.

Routes: ``GET /v2/health/live`` and ``GET /v2/health/ready`` (public, like ``/health`` and
``/ready``); ``GET /v2`` (server metadata), ``GET /v2/models/{name}`` (model metadata),
``GET /v2/models/{name}/ready`` and ``POST /v2/models/{name}/infer``, which need a key of the
``predict`` role like ``/predict``. ``{name}`` is the registered model's name
(``settings.model_name``); the champion answers, so versions are not taken in the path.

An inference request carries one named tensor per feature of the data set, shape ``[n]`` or
``[n, 1]`` (one value per record): numeric features as ``FP64`` (``INT64`` where the data set
says integer; any numeric datatype of the protocol is taken), categorical ones as ``BYTES``
(JSON strings; ``INT64`` for a categorical of integer codes). JSON ``null`` is a missing value, and so is ``NaN`` in a floating-point tensor
of a nullable feature.
The tensors become the same records ``/predict`` decodes (:func:`records_of`): they pass the same
decoder, so a bad value gets the same message naming the record and the feature, and nothing
is priced or logged. Priced records are logged and counted as ``/predict``'s are; the answer's
output tensors are ``price``, ``lower``, ``upper`` (``FP64``), ``prediction_id`` (``BYTES``) and
``capped`` (``BOOL``), all of shape ``[n]``, or the ones the request's ``outputs`` names.

Errors are the protocol's ``{"error": "..."}`` (400 bad request, 404 unknown model, 413 body too
large, 422 records the model cannot price, 503 no model yet, 401/403/429 from the key check).
Tensor data is JSON only: the binary tensor extension (``Inference-Header-Content-Length``) is
refused with 400, and a request for binary outputs (``binary_data_output``) is answered in JSON,
which clients such as ``tritonclient`` read the same way.
"""

from __future__ import annotations

import json
import math
import time
from importlib.metadata import version as package_version
from typing import Annotated, Any

import msgspec
import numpy as np
from litestar import Controller, Litestar, Request, Response, Router, get, post, route
from litestar.enums import MediaType
from litestar.exceptions import HTTPException
from litestar.openapi.spec import (
    OpenAPI,
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Reference,
    Schema,
)
from litestar.openapi.spec.enums import OpenAPIType

from price_platform.datasets import DatasetSpec
from price_platform.settings import Settings
from serving import metrics
from serving.compression import OWN_COMPRESSION, json_answer
from serving.dependencies import DataSet, Draining, Prices, Schemas, ServingSettings, Store
from serving.guards import requires
from serving.model_store import ModelStore
from serving.openapi import DOCUMENT, ERRORS, json_body, to_schema
from serving.pricing import count_refusal, expecting_a_row, serving_model
from serving.schemas import InvalidInput, RequestSchemas, decode
from serving.services import UnpriceableRecords

#: ``platform`` of the model metadata (``<project>_<format>``): a scikit-learn pipeline in MLflow's format.
PLATFORM = "sklearn_mlflow"
#: The output tensors of an inference, in answer order, and their datatypes.
OUTPUTS = {"price": "FP64", "lower": "FP64", "upper": "FP64", "prediction_id": "BYTES", "capped": "BOOL"}
FLOATS = ("FP16", "FP32", "FP64")
INTEGERS = {name: np.iinfo(name.lower()) for name in ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")}
DATATYPES = ("BOOL", *INTEGERS, *FLOATS, "BYTES")
#: The header of the protocol's binary tensor extension (JSON header, then raw tensor bytes).
BINARY_HEADER = "Inference-Header-Content-Length"
V2_ERROR = "V2Error"
INFER_LATENCY = metrics.PREDICTION_LATENCY.labels(endpoint="infer")


class BadTensors(ValueError):
    """An inference request whose tensors do not make records; the message names the input at fault (answered 400)."""


# --- the request ---------------------------------------------------------------------------

Parameters = dict[str, str | int | float | bool]
#: A size in a shape: JSON Schema's non-negative integer, ``3`` or ``3.0``.
Size = Annotated[int, msgspec.Meta(ge=0)] | Annotated[float, msgspec.Meta(ge=0, multiple_of=1)]


class RequestInput(msgspec.Struct, forbid_unknown_fields=True):
    """One input tensor: its feature's name, shape, datatype and values (flat or nested, row-major)."""

    name: str
    shape: Annotated[list[Size], msgspec.Meta(min_length=1, max_length=2)]
    datatype: str
    data: list[Any]
    parameters: Parameters | msgspec.UnsetType = msgspec.UNSET


class RequestOutput(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    parameters: Parameters | msgspec.UnsetType = msgspec.UNSET


class InferenceRequest(msgspec.Struct, forbid_unknown_fields=True):
    inputs: list[RequestInput]
    id: str | msgspec.UnsetType = msgspec.UNSET
    parameters: Parameters | msgspec.UnsetType = msgspec.UNSET
    outputs: list[RequestOutput] | msgspec.UnsetType = msgspec.UNSET


_REQUEST = msgspec.json.Decoder(InferenceRequest)


def parse(body: bytes) -> InferenceRequest:
    """The inference request in ``body``; :class:`BadTensors` when it is not one.

    JSON has no NaN, but clients that write tensors with Python's ``json`` (``tritonclient``) send
    ``NaN`` for a missing float: such a body is read with Python's parser and then checked alike.
    """
    if not body:
        raise BadTensors("the request body is empty; send an inference request: {\"inputs\": [...]}")
    try:
        return _REQUEST.decode(body)
    except msgspec.ValidationError as error:
        raise BadTensors(f"not an inference request: {error}") from None
    except msgspec.DecodeError as error:
        try:
            value = json.loads(body)
            msgspec.json.encode(value)  # Python's parser also takes lone surrogates (\ud800), which are no text
        except (ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
            raise BadTensors(f"the body is not valid JSON: {error}") from None
        try:
            return msgspec.convert(value, InferenceRequest)
        except msgspec.ValidationError as invalid:
            raise BadTensors(f"not an inference request: {invalid}") from None


def _flat(tensor: RequestInput) -> tuple[int, list[Any]]:
    """The number of records and the values of one tensor of shape ``[n]`` or ``[n, 1]``."""
    shape = [int(size) for size in tensor.shape]
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 0:
        raise BadTensors(f"input `{tensor.name}`: shape {shape}; a feature's tensor has shape [n] or [n, 1] (one value per record)")
    values: list[Any] = []
    for item in tensor.data:
        if isinstance(item, list):
            if len(shape) != 2 or len(item) != 1 or isinstance(item[0], list | dict):
                raise BadTensors(
                    f"input `{tensor.name}`: data nested as {item!r};"
                    f" give the {shape[0]} values flat, or as [[v], ...] for shape [n, 1]"
                )
            values.append(item[0])
        else:
            values.append(item)
    if len(values) != shape[0]:
        raise BadTensors(f"input `{tensor.name}`: shape {shape} holds {shape[0]} values, but its data has {len(values)}")
    return shape[0], values


def _element_error(tensor: RequestInput, index: int, value: Any) -> BadTensors:
    return BadTensors(f"input `{tensor.name}`: element {index} is {value!r}, not a value of datatype {tensor.datatype}")


def _checked(tensor: RequestInput, values: list[Any], *, numeric: bool, codes: bool, nullable: bool) -> list[Any]:
    """The values of one feature's tensor, each of its datatype (``None`` for missing); NaN is missing where allowed.

    ``codes``: a categorical of integer codes (``codes: integer``), sent as INT64 (or as BYTES).
    """
    datatype = tensor.datatype
    if datatype not in DATATYPES:
        raise BadTensors(f"input `{tensor.name}`: datatype {datatype!r} is none of the protocol's ({', '.join(DATATYPES)})")
    if numeric:
        allowed, kind, wanted = datatype in INTEGERS or datatype in FLOATS, "a numeric", "FP64 (or INT64 for an integer feature)"
    elif codes:
        allowed, kind, wanted = datatype in INTEGERS or datatype == "BYTES", "an integer-coded categorical", "INT64"
    else:
        allowed, kind, wanted = datatype == "BYTES", "a categorical", "BYTES"
    if not allowed:
        raise BadTensors(f"input `{tensor.name}`: datatype {datatype}, but `{tensor.name}` is {kind} feature: send {wanted}")
    out = list(values)
    for index, value in enumerate(values):
        if value is None:
            continue
        if datatype == "BYTES":
            if not isinstance(value, str):
                raise _element_error(tensor, index, value)
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise _element_error(tensor, index, value)
        elif datatype in INTEGERS:
            limits = INTEGERS[datatype]
            if not isinstance(value, int) or not limits.min <= value <= limits.max:
                raise _element_error(tensor, index, value)
        elif isinstance(value, int):  # a float tensor may hold JSON integers
            continue
        elif math.isnan(value):
            if not nullable:
                raise BadTensors(f"input `{tensor.name}`: element {index} is NaN (a missing value), but `{tensor.name}` takes none")
            out[index] = None
        elif math.isinf(value):
            raise BadTensors(f"input `{tensor.name}`: element {index} is {value}, not a finite number")
    return out


def columns_of(request: InferenceRequest, spec: DatasetSpec, settings: Settings) -> dict[str, list[Any]]:
    """Each feature's values (one per record), from one tensor per feature; :class:`BadTensors` if not."""
    columns: dict[str, list[Any]] = {}
    sizes: dict[str, int] = {}
    for tensor in request.inputs:
        if tensor.name not in spec.numeric and tensor.name not in spec.categorical:
            raise BadTensors(f"input `{tensor.name}` is no feature of this model; it takes one tensor per feature "
                             f"(GET /v2/models/{settings.model_name} lists them)")
        if tensor.name in columns:
            raise BadTensors(f"input `{tensor.name}` is sent twice; send one tensor per feature")
        if tensor.parameters is not msgspec.UNSET and "binary_data_size" in tensor.parameters:
            raise BadTensors(f"input `{tensor.name}`: binary tensor data is not supported; send its values as JSON `data`")
        size, values = _flat(tensor)
        column = spec.numeric.get(tensor.name) or spec.categorical[tensor.name]
        numeric = tensor.name in spec.numeric
        codes = not numeric and spec.categorical[tensor.name].codes == "integer"
        columns[tensor.name] = _checked(tensor, values, numeric=numeric, codes=codes, nullable=column.nullable)
        sizes[tensor.name] = size
    missing = [name for name in spec.features if name not in columns]
    if missing:
        listed = ", ".join(f"`{name}`" for name in missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise BadTensors(f"missing input tensors: {listed}; the model takes one tensor per feature "
                         f"(GET /v2/models/{settings.model_name} lists them)")
    first = spec.features[0]
    for name, size in sizes.items():
        if size != sizes[first]:
            raise BadTensors(f"input `{name}` holds {size} values and input `{first}` {sizes[first]}; "
                             "every input tensor holds one value per record")
    count = sizes[first]
    if count == 0:
        raise BadTensors("the input tensors hold no records (shape [0])")
    if count > settings.max_batch_size:
        raise BadTensors(f"the input tensors hold {count} records; at most {settings.max_batch_size} per request")
    return columns


def records_of(
    request: InferenceRequest, spec: DatasetSpec, schemas: RequestSchemas, settings: Settings
) -> list[msgspec.Struct]:
    """The data set's records from the request's tensors, decoded and validated as ``/predict`` decodes its body.

    Raises :class:`BadTensors` for tensors that make no records and
    :class:`~serving.schemas.InvalidInput` (the same message ``/predict`` gives) for a bad value.
    """
    columns = columns_of(request, spec, settings)
    names = spec.features
    ordered = [columns[name] for name in names]
    rows = [dict(zip(names, values, strict=True)) for values in zip(*ordered, strict=True)]
    return decode(schemas.predict_decoder, msgspec.json.encode(rows))


def requested_outputs(request: InferenceRequest) -> list[str]:
    """The output tensors to answer with, in :data:`OUTPUTS` order; :class:`BadTensors` for an unknown one."""
    if request.outputs is msgspec.UNSET:
        return list(OUTPUTS)
    asked = {output.name for output in request.outputs}
    unknown = sorted(asked - set(OUTPUTS))
    if unknown:
        raise BadTensors(f"unknown output `{unknown[0]}`; the outputs are {', '.join(OUTPUTS)}")
    return [name for name in OUTPUTS if name in asked]


# --- answers ----------------------------------------------------------------------------------


def _json(value: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(msgspec.json.encode(value), status_code=status_code, media_type=MediaType.JSON, headers=headers)


def protocol_error(request: Request, error: HTTPException) -> Response[bytes]:
    """Every error of the v2 routes as the protocol's ``{"error": "..."}``, with the status and headers it had."""
    return _json({"error": error.detail}, error.status_code, error.headers)


def unpriceable(request: Request, error: UnpriceableRecords) -> Response[bytes]:
    """422: records the model gives no finite positive price for, or that break the data set's rules."""
    return _json({"error": str(error)}, 422)


def bad_request(request: Request, error: BadTensors | InvalidInput) -> Response[bytes]:
    """400: not an inference request, tensors that make no records, or a value the record schema refuses (counted
    as an error of the model that was to answer)."""
    count_refusal(request)
    return _json({"error": str(error)}, 400)


def _fail(status_code: int, message: str, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(detail=message, status_code=status_code, headers=headers)


def _served(settings: Settings, name: str) -> None:
    if name != settings.model_name:
        raise _fail(404, f"unknown model {name!r}; this server serves {settings.model_name!r}")


def _ready(store: ModelStore, draining: bool) -> bool:
    return store.current is not None and not draining


def _tensor_metadata(name: str, datatype: str) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": [-1]}


def input_metadata(spec: DatasetSpec) -> list[dict[str, Any]]:
    """One tensor per feature, as :func:`columns_of` takes them: numeric FP64 (INT64 if integer), categorical
    BYTES (INT64 for integer codes)."""

    def datatype(name: str) -> str:
        if name in spec.numeric:
            return "INT64" if spec.numeric[name].integer else "FP64"
        return "INT64" if spec.categorical[name].codes == "integer" else "BYTES"

    return [_tensor_metadata(name, datatype(name)) for name in spec.features]


# --- the OpenAPI document -------------------------------------------------------------------

_PARAMETERS = {"type": "object", "description": "Key/value pairs: this server acts on none"
               " (an input's binary_data_size is refused: tensors are JSON).",
               "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}}
_SCALAR = [{"type": "number"}, {"type": "string"}, {"type": "boolean"}, {"type": "null"}]
_TENSOR_DATA = {"type": "array", "description": "Row-major values, flat or nested; null (or NaN) is a missing value.",
                "items": {"anyOf": [*_SCALAR, {"type": "array", "items": {"anyOf": _SCALAR}}]}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _components(spec: DatasetSpec) -> dict[str, dict[str, Any]]:
    """The JSON schemas of the v2 bodies, named for ``#/components/schemas``."""
    tensor = {"type": "object", "required": ["name", "datatype", "shape"],
              "properties": {"name": {"type": "string"}, "datatype": {"type": "string"},
                             "shape": {"type": "array", "items": {"type": "integer"}}}}
    return {
        V2_ERROR: {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "V2Parameters": _PARAMETERS,
        "V2TensorData": _TENSOR_DATA,
        "V2RequestInput": {
            "type": "object", "required": ["name", "shape", "datatype", "data"], "additionalProperties": False,
            "properties": {
                "name": {"enum": list(spec.features), "description": "A feature's name."},
                "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1, "maxItems": 2,
                          "description": "[n] or [n, 1]: one value per record."},
                "datatype": {"enum": list(DATATYPES), "description": "GET /v2/models/{name} lists each feature's."},
                "parameters": _ref("V2Parameters"),
                "data": _ref("V2TensorData"),
            },
        },
        "V2RequestOutput": {"type": "object", "required": ["name"], "additionalProperties": False,
                            "properties": {"name": {"enum": list(OUTPUTS)}, "parameters": _ref("V2Parameters")}},
        "V2InferenceRequest": {
            "type": "object", "required": ["inputs"], "additionalProperties": False,
            "properties": {
                "id": {"type": "string", "description": "Returned in the answer."},
                "parameters": _ref("V2Parameters"),
                "inputs": {"type": "array", "minItems": 1, "items": _ref("V2RequestInput"),
                           "description": "One tensor per feature of the data set, each holding the same number of records."},
                "outputs": {"type": "array", "items": _ref("V2RequestOutput"),
                            "description": "The output tensors wanted (default: all)."},
            },
        },
        "V2ResponseOutput": {"type": "object", "required": ["name", "shape", "datatype", "data"],
                             "properties": {"name": {"type": "string"}, "shape": tensor["properties"]["shape"],
                                            "datatype": {"type": "string"}, "data": _ref("V2TensorData")}},
        "V2InferenceResponse": {
            "type": "object", "required": ["model_name", "model_version", "outputs"],
            "properties": {"model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
                           "outputs": {"type": "array", "items": _ref("V2ResponseOutput")}},
        },
        "V2MetadataTensor": tensor,
        "V2ModelMetadata": {
            "type": "object", "required": ["name", "versions", "platform", "inputs", "outputs"],
            "properties": {"name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}},
                           "platform": {"type": "string"},
                           "inputs": {"type": "array", "items": _ref("V2MetadataTensor")},
                           "outputs": {"type": "array", "items": _ref("V2MetadataTensor")}},
        },
        "V2ServerMetadata": {"type": "object", "required": ["name", "version", "extensions"],
                             "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                                            "extensions": {"type": "array", "items": {"type": "string"}}}},
        "V2ServerLive": {"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}},
        "V2Ready": {"type": "object", "required": ["ready"],
                    "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}}},
    }


def _answers(component: str, *, not_ready: bool = False) -> Any:
    """A :data:`~serving.openapi.DOCUMENT` hook: the v2 components, the 200 body (and 503 ``{"ready": false}``), every
    error with the protocol's body, and the path's ``name`` as the one model this server serves."""

    def document(openapi: OpenAPI, operation: Operation, app: Litestar) -> None:
        services = app.state.services  # the document is made once, from the app
        schemas = openapi.components.schemas if openapi.components.schemas is not None else {}
        for name, schema in _components(services.spec).items():
            schemas.setdefault(name, to_schema(schema))
        openapi.components.schemas = schemas
        body = {"application/json": OpenAPIMediaType(schema=Reference(ref=f"#/components/schemas/{component}"))}
        errors = {"application/json": OpenAPIMediaType(schema=Reference(ref=f"#/components/schemas/{V2_ERROR}"))}
        responses = {status: OpenAPIResponse(description=answer.description, content=errors) if int(status) >= 400 else answer
                     for status, answer in (operation.responses or {}).items()}  # Litestar's own 400 too
        responses["200"] = OpenAPIResponse(description="OK", content=body)
        if not_ready:
            responses["503"] = OpenAPIResponse(description="Not ready: no model loaded yet, or shutting down.", content=body)
        operation.responses = responses
        for parameter in operation.parameters or []:
            if getattr(parameter, "name", None) == "name" and getattr(parameter, "param_in", None) == "path":
                parameter.schema = Schema(type=OpenAPIType.STRING, enum=[services.settings.model_name],
                                          description="The served model's registered name.")

    return document


_NOT_SERVED = "Not this server's model name (`error` says which it serves)."
_NO_MODEL = "No model is loaded yet (`Retry-After` says when to ask again)."


class _ProtocolController(Controller):
    """What the v2 routes share: the protocol's error body."""

    tags = ["open inference protocol (v2)"]
    exception_handlers = {HTTPException: protocol_error, UnpriceableRecords: unpriceable,
                          BadTensors: bad_request, InvalidInput: bad_request}


class InferenceHealthController(_ProtocolController):
    """The protocol's liveness and readiness probes (public)."""

    path = "/v2/health"

    @get("/live", summary="v2 server live: the process answers", opt={DOCUMENT: _answers("V2ServerLive")})
    async def live(self) -> Response[bytes]:
        return _json({"live": True})

    @get("/ready", summary="v2 server ready: 200 when a model is loaded and warm; 503 before that and while shutting down",
         opt={DOCUMENT: _answers("V2Ready", not_ready=True)})
    async def ready(self, store: Store, draining: Draining) -> Response[bytes]:
        ready = _ready(store, draining)
        return _json({"ready": ready}, 200 if ready else 503)


class InferenceController(_ProtocolController):
    """Server and model metadata, model readiness and inference (keys of the ``predict`` role)."""

    path = "/v2"
    before_request = requires("predict")

    @get("/", summary="v2 server metadata", opt={DOCUMENT: _answers("V2ServerMetadata")})
    async def server_metadata(self) -> Response[bytes]:
        return _json({"name": "price-platform", "version": package_version("price-platform"), "extensions": []})

    @get("/models/{name:str}", summary="v2 model metadata: one input tensor per feature, the output tensors",
         opt={DOCUMENT: _answers("V2ModelMetadata"), ERRORS: {404: _NOT_SERVED}})
    async def model_metadata(self, name: str, store: Store, settings: ServingSettings, spec: DataSet) -> Response[bytes]:
        _served(settings, name)
        model = store.current
        return _json({
            "name": name,
            "versions": [model.version] if model is not None else [],
            "platform": PLATFORM,
            "inputs": input_metadata(spec),
            "outputs": [_tensor_metadata(output, datatype) for output, datatype in OUTPUTS.items()],
        })

    @get("/models/{name:str}/ready", summary="v2 model ready: 200 when the model is loaded and warm, else 503",
         opt={DOCUMENT: _answers("V2Ready", not_ready=True), ERRORS: {404: _NOT_SERVED}})
    async def model_ready(self, name: str, store: Store, settings: ServingSettings, draining: Draining) -> Response[bytes]:
        _served(settings, name)
        ready = _ready(store, draining)
        return _json({"name": name, "ready": ready}, 200 if ready else 503)

    @post(
        "/models/{name:str}/infer",
        status_code=200,
        operation_class=json_body("V2InferenceRequest", "One named tensor per feature (GET /v2/models/{name} lists them)."),
        summary="v2 inference: prices with 90% intervals, prediction ids and capped flags, one per record",
        middleware=[expecting_a_row],
        opt={OWN_COMPRESSION: True, DOCUMENT: _answers("V2InferenceResponse"), ERRORS: {
            400: "Not an inference request, tensors that make no records (a feature missing, unknown or sent twice, a "
                 "wrong datatype or shape, lengths that differ), or a value the record schema refuses; `error` names "
                 "the input (and the record) at fault.",
            404: _NOT_SERVED,
            422: "The model gives no finite positive price for some records (values far outside its training data).",
            503: _NO_MODEL,
        }},
    )
    async def infer(
        self, name: str, request: Request, store: Store, settings: ServingSettings, spec: DataSet, schemas: Schemas,
        pricing: Prices,
    ) -> Response[bytes]:
        started = time.perf_counter()
        _served(settings, name)
        model = serving_model(request, store, "no model is loaded yet (Retry-After says when to ask again)")
        if BINARY_HEADER in request.headers:
            raise BadTensors(f"binary tensor data ({BINARY_HEADER}) is not supported; send the tensors as JSON `data`")
        body = await request.body()
        inference = parse(body)
        records = records_of(inference, spec, schemas, settings)
        wanted = requested_outputs(inference)
        # from here on as /predict: the canary's share, the log, the shadow's scores and the metrics
        done = await pricing.answer(model, records, body, request.state.principal.key_id, started, INFER_LATENCY)
        data = {"price": done.prices, "lower": done.lower, "upper": done.upper,
                "prediction_id": [str(i) for i in done.ids], "capped": done.capped}
        answer: dict[str, Any] = {"model_name": name, "model_version": done.version}
        if inference.id is not msgspec.UNSET:
            answer["id"] = inference.id
        answer["outputs"] = [
            {"name": output, "datatype": OUTPUTS[output], "shape": [len(done.prices)], "data": data[output]}
            for output in wanted
        ]
        return json_answer(request, msgspec.json.encode(answer))


class NoSuchEndpoint(_ProtocolController):
    """Any other path under ``/v2`` (a model version in the path, a typo): the protocol's 404 body, not the app's."""

    @route(["/v2/models", "/v2/{rest:path}", "/v2/models/{name:str}/{rest:path}"], http_method=["GET", "POST"],
           include_in_schema=False)
    async def no_such_endpoint(self, request: Request) -> Response[bytes]:
        raise _fail(404, f"no v2 endpoint at {request.url.path}: this server answers /v2, /v2/health/live, "
                         "/v2/health/ready and /v2/models/<name>[/ready|/infer] (the champion answers: no versions in the path)")


def inference_protocol() -> Router:
    """The v2 routes, for the app's route handlers."""
    return Router(path="/", route_handlers=[InferenceHealthController, InferenceController, NoSuchEndpoint])
