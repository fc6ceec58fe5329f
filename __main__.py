"""Entry point `pulumi up` runs: Pulumi.yaml has no `main`, so the program directory is this
folder. phi3_infra comes from the program's virtualenv (requirements.txt installs infra/)."""

from phi3_infra.program import main

main()
