"""Evaluates flags through the OpenFeature Python SDK and its OFREP provider.

    python ofrep_evaluate.py OFREP_URL TOKEN_OR_DASH < EVALUATIONS.json

EVALUATIONS is a JSON list of {"flag", "type" (boolean, string, integer, float or
object), "default", "context"}; the context's targetingKey becomes the SDK's
targeting key. Prints a JSON list with what the SDK returned for each: value,
variant, reason, error_code and flag_metadata.
"""

import json
import sys

from openfeature import api as openfeature
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext


def main() -> int:
    url, token = sys.argv[1], sys.argv[2]
    headers = {} if token == "-" else {"Authorization": f"Bearer {token}"}
    openfeature.set_provider(OFREPProvider(url, headers_factory=lambda: headers))
    client = openfeature.get_client()
    results = []
    for evaluation in json.load(sys.stdin):
        attributes = dict(evaluation["context"])
        context = EvaluationContext(attributes.pop("targetingKey", None), attributes)
        resolve = getattr(client, f"get_{evaluation['type']}_details")
        details = resolve(evaluation["flag"], evaluation["default"], context)
        results.append(
            {
                "value": details.value,
                "variant": details.variant,
                "reason": str(details.reason.value if hasattr(details.reason, "value") else details.reason),
                "error_code": details.error_code.value if details.error_code else None,
                "flag_metadata": dict(details.flag_metadata or {}),
            }
        )
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
