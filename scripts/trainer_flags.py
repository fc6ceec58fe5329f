"""`python scripts/trainer_flags.py`: write the trainer's flag table (phi3_trainer.flag_table)
where the Pulumi program reads it (phi3_infra.trainer_flags.FLAGS_FILE)."""

import sys

from phi3_infra.paths import PROJECT_ROOT
from phi3_infra.trainer_flags import FLAGS_FILE
from phi3_trainer.config import make_parser
from phi3_trainer.flag_table import render


def main() -> int:
    FLAGS_FILE.write_text(render(make_parser()), encoding="utf-8")
    print(f"wrote {FLAGS_FILE.relative_to(PROJECT_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
