"""Schemathesis hooks for test_schemathesis.py (loaded through $SCHEMATHESIS_HOOKS).

Schemathesis feeds ids it has seen in responses (e.g. from `GET /api/api-keys`) back into
path parameters. Left alone it revokes the very `gate_api_…` key it authenticates with (the
API allows revoking your own key while another active `api` key exists, and the run creates
plenty), after which every request is a 401 that proves nothing; and it deletes every provider
key early on, which revokes every proxy key, so `PATCH /api/proxy-keys/{id}` never gets past
`409`.

$GH_ST_PROTECTED_IDS: a JSON object `{"<METHOD> <path template>": [ids...]}`; a case for that
operation whose `id` path parameter is one of those ids is dropped. Every other id (random
ones, the ones the run creates, the other seeded ones) is still tested.
"""

from __future__ import annotations

import json
import os

import schemathesis

PROTECTED: dict[str, frozenset[str]] = {
    op: frozenset(ids) for op, ids in json.loads(os.environ.get("GH_ST_PROTECTED_IDS") or "{}").items()
}


@schemathesis.hook
def filter_case(context, case) -> bool:
    op = case.operation
    protected = PROTECTED.get(f"{op.method.upper()} {op.path}")
    if protected:
        return (case.path_parameters or {}).get("id") not in protected
    return True
