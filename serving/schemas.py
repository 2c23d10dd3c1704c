"""Request and response bodies of the API; request records are derived from the data set description.

A record is a ``msgspec.Struct`` built at start-up with :func:`msgspec.defstruct` from
``DatasetSpec.features``: numeric columns are ``int``/``float`` bounded by the spec's range,
categorical columns the spec's allowed values, nullable columns accept ``null``. Bodies are
decoded strictly (no strings for numbers, no unknown or missing fields), and every failure
becomes an :class:`InvalidInput` naming the record and the field.

An integer column takes any JSON number without a fraction, ``3`` or ``3.0``: JSON Schema's
``integer`` (what the OpenAPI document says) means exactly that. The decoder reads it as ``int``
or as an integral ``float``; the documented record (:attr:`RequestSchemas.documented`) has the
plain ``int`` field. A categorical declared ``codes: integer`` is an integer (or its decimal text)
on the wire and its text (``"3"``) inside, as ingestion stores it.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec

from price_platform.datasets import CategoricalColumn, DatasetSpec, integer_code

#: Text fields refuse the NUL character, which PostgreSQL cannot store.
NO_NUL = "^[^\\x00]*$"
#: The text form of an integer category code the decoder also accepts.
CODE_TEXT = "^[+-]?[0-9]+$"
_LOCATION = re.compile(r" - at `\$(?:\[(?P<record>\d+)\])?(?:\.(?P<field>[A-Za-z_][A-Za-z0-9_]*))?[^`]*`$")
_UNKNOWN_FIELD = re.compile(r"`(?P<field>[^`]+)`")


class InvalidInput(ValueError):
    """A request body the API cannot accept, with the record (batch index) and field it is about.

    Answered with 400 by the app's exception handler (:func:`serving.app.invalid_input`; the v2
    routes answer in their protocol's body), with :attr:`extra` as the answer's ``extra``.
    """

    def __init__(self, message: str, *, record: int | None = None, field: str | None = None) -> None:
        where = ", ".join(part for part in (f"record {record}" if record is not None else "", f"field `{field}`" if field else "") if part)
        super().__init__(f"{where}: {message}" if where else message)
        self.record = record
        self.field = field
        #: Where the body is at fault: the record (None: a single one) and the field.
        self.extra: dict[str, Any] = {"record": record, "field": field}


# --- responses ---------------------------------------------------------------------------


class Prediction(msgspec.Struct, kw_only=True, gc=False):
    """One price with its 90% interval, the model version that made it and its id for feedback."""

    prediction_id: uuid.UUID
    price: float
    lower: float
    upper: float
    model_version: str
    #: The price is an edge of the model's band (learned from the training prices): the record lies
    #: far outside what the model was trained on, so its price is a bound, not an estimate.
    capped: bool = False


class PredictResponse(msgspec.Struct, kw_only=True):
    """Predictions in the order of the records sent."""

    model_version: str
    predictions: list[Prediction]


class Explanation(msgspec.Struct, kw_only=True):
    """Per-feature contributions of one record: log-space SHAP values that add up to the prediction."""

    model_version: str
    price: float
    log_price: float
    base_value: float
    contributions: dict[str, float]
    model_feature_contributions: dict[str, float]
    how_to_read: str


class Feedback(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The actual price a predicted record sold for."""

    prediction_id: uuid.UUID
    actual: Annotated[float, msgspec.Meta(gt=0.0, le=1e15)]


class FeedbackAccepted(msgspec.Struct, kw_only=True):
    prediction_id: uuid.UUID
    status: str


class ArtifactRefusal(msgspec.Struct, kw_only=True):
    """A registered version the API refused before loading it: its artifact failed a check."""

    version: str
    reason: str  # "integrity": files differ from the digests recorded at registration; "format": a pickle or unknown format
    detail: str
    at: str


class ModelInfo(msgspec.Struct, kw_only=True):
    """What is serving: registry version and alias, training metrics, data version, request schema."""

    name: str
    version: str
    alias: str
    run_id: str | None
    data_version: str | None
    interval_log_halfwidth: float
    metrics: dict[str, float]
    fast_path: bool
    loaded_at: str
    feature_schema: dict[str, Any]
    artifact_verified: bool = False  # the serving artifact matched its registration digests
    artifact_refusals: list[ArtifactRefusal] = []


class ErrorBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Every 4xx and 5xx answer: the status code, what went wrong, and (some answers) where."""

    status_code: int
    detail: str
    extra: dict[str, Any] | list[Any] | None = None


class Status(msgspec.Struct, kw_only=True):
    status: str
    model_version: str | None = None
    #: Why the model registry could not be read at the last poll (the loaded model, if any, keeps serving).
    detail: str | None = None


class AdminRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Why an admin action is taken (written to the audit log)."""

    reason: Annotated[str, msgspec.Meta(max_length=500, pattern=NO_NUL)] = ""


class AdminResult(msgspec.Struct, kw_only=True):
    action: str
    from_version: str | None
    to_version: str
    actor: str


# --- requests derived from the data set ---------------------------------------------------


@dataclass(frozen=True)
class RequestSchemas:
    """The record type of one data set and the decoders of the bodies that carry records."""

    record: type[msgspec.Struct]
    documented: type[msgspec.Struct]
    predict_decoder: msgspec.json.Decoder
    explain_decoder: msgspec.json.Decoder
    feedback_decoder: msgspec.json.Decoder
    admin_decoder: msgspec.json.Decoder
    max_batch_size: int

    def record_json_schema(self) -> dict[str, Any]:
        """JSON schema of one record (for ``/model-info``)."""
        return msgspec.json.schema(self.documented)

    def openapi_components(self) -> dict[str, dict[str, Any]]:
        """JSON schemas of the request bodies, named for ``#/components/schemas/<name>``."""
        record = self.documented
        batch = Annotated[list[record], msgspec.Meta(min_length=1, max_length=self.max_batch_size)]  # type: ignore[valid-type]
        _, components = msgspec.json.schema_components(
            [record, batch, Feedback, AdminRequest, ErrorBody], ref_template="#/components/schemas/{name}"
        )
        components["PredictRequest"] = {
            "description": f"One record, or a batch of 1 to {self.max_batch_size} records.",
            "oneOf": [
                {"$ref": f"#/components/schemas/{record.__name__}"},
                {"type": "array", "items": {"$ref": f"#/components/schemas/{record.__name__}"},
                 "minItems": 1, "maxItems": self.max_batch_size},
            ],
        }
        components["ExplainRequest"] = {"$ref": f"#/components/schemas/{record.__name__}"}
        return components


def _numeric_type(column: Any, *, documented: bool = False) -> Any:
    """The field type of a numeric column; an integer column also takes integral floats unless ``documented``."""
    bounds = {key: value for key, value in (("ge", column.min), ("le", column.max)) if value is not None}
    if column.integer:
        bounds = {key: math.ceil(value) if key == "ge" else math.floor(value) for key, value in bounds.items()}
        annotated: Any = Annotated[int, msgspec.Meta(**bounds)] if bounds else int
        if not documented:
            annotated = annotated | Annotated[float, msgspec.Meta(multiple_of=1, **bounds)]
    else:
        annotated = Annotated[float, msgspec.Meta(**bounds)] if bounds else float
    return annotated | None if column.nullable else annotated


def _categorical_type(column: CategoricalColumn, *, documented: bool = False) -> Any:
    """The field type of a categorical column; an integer-coded one (``codes: integer``) is a JSON integer.

    The decoder also takes a code's decimal text (``"3"``, what clients had to send before) and,
    like integer numeric fields, an integral float; the documented record says ``integer`` only.
    """
    if column.codes == "integer":
        if column.allowed:
            codes: Any = Literal[tuple(int(value) for value in column.allowed)]
            if documented:
                annotated: Any = Annotated[codes, msgspec.Meta(extra_json_schema={"type": "integer"})]
            else:
                annotated = codes | Literal[tuple(column.allowed)]
        else:
            annotated = int
            if not documented:
                annotated = annotated | Annotated[float, msgspec.Meta(multiple_of=1)] | Annotated[str, msgspec.Meta(pattern=CODE_TEXT)]
    elif column.allowed:
        annotated = Literal[tuple(column.allowed)]
    else:
        annotated = Annotated[str, msgspec.Meta(max_length=200, pattern=NO_NUL)]
    return annotated | None if column.nullable else annotated


def _codes_as_text(names: tuple[str, ...]) -> Callable[[msgspec.Struct], None]:
    """A record's ``__post_init__`` turning its integer-coded categories into their text (``3`` -> ``"3"``).

    Ingestion stores a code as that text (:mod:`price_platform.ingestion.records`), so training
    and serving see the same category.
    """

    def post_init(record: msgspec.Struct) -> None:
        for name in names:
            value = getattr(record, name)
            if value is not None:
                setattr(record, name, str(integer_code(value)))

    return post_init


def _record(spec: DatasetSpec, *, documented: bool) -> type[msgspec.Struct]:
    fields = [(name, _numeric_type(column, documented=documented)) for name, column in spec.numeric.items()]
    fields += [(name, _categorical_type(column, documented=documented)) for name, column in spec.categorical.items()]
    name = "".join(part.capitalize() for part in spec.name.split("_")) + "Record"
    codes = tuple(column for column, rule in spec.categorical.items() if rule.codes == "integer")
    namespace = {"__post_init__": _codes_as_text(codes)} if codes and not documented else None
    # gc=False: records hold only numbers, strings and None (no cycles), so the garbage collector
    # need not track the thousands a batch makes
    return msgspec.defstruct(
        name, fields, kw_only=True, forbid_unknown_fields=True, gc=False, module=__name__, namespace=namespace
    )


def build_schemas(spec: DatasetSpec, max_batch_size: int) -> RequestSchemas:
    """The record struct of ``spec`` (fields in ``spec.features`` order) and the body decoders."""
    record = _record(spec, documented=False)
    batch = Annotated[list[record], msgspec.Meta(min_length=1, max_length=max_batch_size)]  # type: ignore[valid-type]
    return RequestSchemas(
        record=record,
        documented=_record(spec, documented=True),
        predict_decoder=msgspec.json.Decoder(record | batch),  # type: ignore[arg-type]
        explain_decoder=msgspec.json.Decoder(record),
        feedback_decoder=msgspec.json.Decoder(Feedback),
        admin_decoder=msgspec.json.Decoder(AdminRequest),
        max_batch_size=max_batch_size,
    )


def decode(decoder: msgspec.json.Decoder, body: bytes) -> Any:
    """Decode ``body`` strictly; raise :class:`InvalidInput` naming the record and field at fault."""
    if not body:
        raise InvalidInput("the request body is empty; send a JSON record or a JSON array of records")
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as error:
        raise _located(str(error)) from None
    except msgspec.DecodeError as error:
        raise _not_json(body, str(error)) from None


def decode_admin_request(decoder: msgspec.json.Decoder, body: bytes) -> AdminRequest:
    """The admin request in ``body`` (an empty body gives no reason); :class:`InvalidInput` naming the field at fault."""
    if not body:
        return AdminRequest()
    try:
        return decode(decoder, body)
    except InvalidInput as error:
        error.extra = {"field": error.field}  # an admin request holds no records
        raise


def _located(message: str) -> InvalidInput:
    match = _LOCATION.search(message)
    text = message[: match.start()] if match else message
    record = int(match["record"]) if match and match["record"] is not None else None
    field = match["field"] if match else None
    if field is None and text.startswith(("Object missing required field", "Object contains unknown field")):
        found = _UNKNOWN_FIELD.search(text)
        field = found["field"] if found else None
    text = text.replace(f"`str` matching regex {CODE_TEXT!r}", "an integer (a category code)")
    text = text.replace("`int | float", "`int").replace("`float` that's a multiple of 1.0", "`int`, got `float` with a fraction")
    if text.startswith("Expected `array` of length"):
        text = text.replace("Expected `array`", "Expected a batch (array of records)")
    return InvalidInput(text, record=record, field=field)


def _not_json(body: bytes, message: str) -> InvalidInput:
    """Name the field when the body is JSON but for NaN/Infinity, which JSON does not allow."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return InvalidInput(f"the body is not valid JSON: {message}")
    records = value if isinstance(value, list) else [value]
    for index, item in enumerate(records):
        if isinstance(item, dict):
            for field, number in item.items():
                if isinstance(number, float) and not math.isfinite(number):
                    return InvalidInput(
                        f"{number} is not a finite number (NaN and Infinity are not allowed)",
                        record=index if isinstance(value, list) else None,
                        field=str(field),
                    )
    return InvalidInput(f"the body is not valid JSON: {message}")
