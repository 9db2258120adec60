"""Schemathesis hooks for tests/test_service_openapi.py (SCHEMATHESIS_HOOKS).

An item id at most once per list is the one enforced constraint JSON Schema cannot say
(uniqueItems compares whole items, not their ids); the OpenAPI document says it in words,
and generated bodies that break it are left out here rather than counted as conformance
failures of a rule the document cannot express."""

import schemathesis


def _ids_repeat(body) -> bool:
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list):
        return False
    ids = [item["id"] for item in items if isinstance(item, dict) and "id" in item]
    return len(ids) != len(set(map(repr, ids)))


@schemathesis.hook
def filter_case(ctx, case) -> bool:  # every phase (filter_body skips the coverage phase)
    return not _ids_repeat(case.body)
