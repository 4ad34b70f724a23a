"""Send credit applications through the platform's gateway (v2 REST), as a client would.

    python examples/credit/send_traffic.py 500                 # like the training data
    python examples/credit/send_traffic.py 500 --income-shift 30   # incomes up: drift

Each request is one applicant; the payload logger stores each with the model's answer.
"""

from __future__ import annotations

import argparse
import json
import urllib.request

from make_credit_model import applicants


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("count", type=int)
    parser.add_argument("--income-shift", type=float, default=0.0)
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    approved = 0
    for row in applicants(args.count, args.seed, args.income_shift).tolist():
        body = {"inputs": [{"name": "applicant", "shape": [1, 3], "datatype": "FP64", "data": row}]}
        request = urllib.request.Request(
            f"{args.url}/v2/models/credit/infer",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Host": "credit.default.example.com"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            approved += json.loads(answer.read())["outputs"][0]["data"][0]
    print(f"sent {args.count} applications, {approved} approved")


if __name__ == "__main__":
    main()
