"""The OpenAPI document says what the service does: every status code and content type a
route answers, and the constraints the service enforces wherever JSON Schema can say them:
the request models' own limits, the item-count limit of these settings, and the feature names
of the bundles being served (`propertyNames`; with several models, the names any of them
reads), refreshed after a reload.

Constraints JSON Schema cannot say are stated in words: an item id at most once per list, and
in the columnar form every column as long as `columns.id`.
"""

from __future__ import annotations

from fastapi import FastAPI

from service.schemas import ErrorResponse

JSON = "application/json"
ERRORS = {
    400: "malformed JSON",
    401: "bearer token missing or wrong",
    403: "endpoint disabled: no token configured for it",
    404: "no such model or experiment",
    409: "what the request names cannot be served now: a bundle or models file missing, "
    "malformed or not computing, or a model to replace that is an experiment",
    413: "body over the size limit (MOERANK_MAX_BODY_BYTES)",
    415: "body not sent as application/json",
    422: "invalid request: the message names the field",
    503: "the embedding store is unavailable",
}


def json_body(model, required: bool = True) -> dict:
    """openapi_extra for a route that parses its own body (see document_bodies)."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": required, "content": {JSON: {"schema": schema}}}}


def errors(*codes: int) -> dict:
    """`responses=` for a route that can answer these error codes (the service's one shape)."""
    return {code: {"model": ErrorResponse, "description": ERRORS[code]} for code in codes}


def document_bodies(app: FastAPI, models: list, max_items: int) -> None:
    """Put the request models of self-parsing routes into the OpenAPI components, so /docs
    shows them: those routes read raw bytes (POST /v1/rank through msgspec, rank_body.py; the
    others through pydantic's JSON parser, several times faster than json.loads + validation,
    with the max-items context). Built again when the
    served bundle changes, since the feature names are the bundle's."""
    build = app.openapi
    built_for: list = [None]

    def openapi() -> dict:
        runtime = getattr(app.state, "runtime", None)
        served = runtime.registry.current if runtime else None
        if app.openapi_schema is None or built_for[0] is not served:
            app.openapi_schema = None
            schemas = build().setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[model.__name__] = schema
            constrain(schemas, served and list(served.bundles.values()), max_items)
            built_for[0] = served
        return app.openapi_schema

    app.openapi = openapi


def constrain(schemas: dict, bundles: list | None, max_items: int) -> None:
    rank_items = schemas["RankRequest"]["properties"]["items"]["anyOf"][0]  # not the null
    for items in (rank_items, schemas["ItemsUpsert"]["properties"]["items"]):
        items["maxItems"], items["uniqueItems"] = max_items, True
        items["description"] = "each item id at most once (422 otherwise)"
    ids = schemas["Columns"]["properties"]["id"]
    ids["maxItems"], ids["uniqueItems"] = max_items, True
    ids["description"] = "each id once; every other column has as many values (422 otherwise)"
    if bundles:
        numeric = sorted({n for b in bundles for n in b.numeric_names})
        categorical = sorted({f.name for b in bundles for f in b.item_fields})
        for model in ("Item", "Columns"):
            fields = schemas[model]["properties"]
            fields["features"]["propertyNames"] = {"enum": numeric}
            fields["categorical"]["propertyNames"] = {"enum": categorical}
