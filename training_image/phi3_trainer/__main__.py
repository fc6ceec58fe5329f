"""Entrypoint of the training image: ``python -m phi3_trainer [--config FILE.yaml] [--flags]``."""

from __future__ import annotations

import json
import logging
import sys

from phi3_trainer.chat_template import UnsupportedChatTemplateError
from phi3_trainer.config import parse_args
from phi3_trainer.data_validation import InvalidDataError

# Errors the user fixes in their data or flags: shown plainly, exit status 2, no traceback.
USER_ERRORS = (InvalidDataError, UnsupportedChatTemplateError)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    script_args, training_args = parse_args(argv)
    from phi3_trainer.train import train  # heavy imports (trl, peft) only once flags are valid

    try:
        metrics = train(script_args, training_args)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
