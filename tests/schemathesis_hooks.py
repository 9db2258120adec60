"""Schemathesis hooks for tests/test_service_openapi.py (SCHEMATHESIS_HOOKS).

Two enforced constraints JSON Schema cannot say: an item id at most once per list
(uniqueItems compares whole items, not their ids), and in the columnar form every column as
long as `columns.id`. The OpenAPI document says them in words, and generated bodies that
break them are left out here rather than counted as conformance failures of rules the
document cannot express."""

import schemathesis


def _ids_repeat(body) -> bool:
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list):
        return False
    ids = [item["id"] for item in items if isinstance(item, dict) and "id" in item]
    return len(ids) != len(set(map(repr, ids)))


def _columns_differ(body) -> bool:
    columns = body.get("columns") if isinstance(body, dict) else None
    if not isinstance(columns, dict) or not isinstance(columns.get("id"), list):
        return False
    named = [columns.get("title")]
    for kind in ("features", "categorical"):
        if isinstance(columns.get(kind), dict):
            named += columns[kind].values()
    return any(isinstance(v, list) and len(v) != len(columns["id"]) for v in named)


@schemathesis.hook
def filter_case(ctx, case) -> bool:  # every phase (filter_body skips the coverage phase)
    return not (_ids_repeat(case.body) or _columns_differ(case.body))
