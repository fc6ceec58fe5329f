"""Entrypoint of the training image: ``python -m phi3_trainer [--config FILE.yaml] [--flags]``."""

from __future__ import annotations

import json
import logging
import sys

from phi3_trainer.chat_template import UnsupportedChatTemplateError
from phi3_trainer.config import parse_args
from phi3_training_rules.data_validation import InvalidDataError


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    script_args, training_args = parse_args(argv)
    # Heavy imports (trl, peft) only once the flags are valid.
    from phi3_trainer.preflight import SetupError
    from phi3_trainer.train import train

    # Errors the user fixes in their data, flags or files: shown plainly, exit 2, no traceback.
    user_errors = (InvalidDataError, UnsupportedChatTemplateError, SetupError)
    try:
        metrics = train(script_args, training_args)
    except user_errors as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
