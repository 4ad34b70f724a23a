"""An LLM replica for the platform's tests: the OpenAI tests' ``FakeLLM`` under ModelServer.

``FakeLLM`` echoes the text after ``repeat:`` (and answers "reveal" with a text full of
PII), so what the LLM saw can be told from its answer. Started by the platform as a
predictor container's command, with the server's flags:

    python tests/local/apps/echo_llm.py --model_name chat --http_port 8090 --grpc_port 8091
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from modelhost import ModelServer, model_server


def main() -> None:
    # The fakes live in the test tree; a script's path holds only its own folder.
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    from tests.server.openai.openai_fakes import FakeLLM

    parser = argparse.ArgumentParser(parents=[model_server.parser])
    args, _ = parser.parse_known_args()
    ModelServer().start([FakeLLM(args.model_name)])


if __name__ == "__main__":
    main()
