"""Entry point `pulumi up` runs (Pulumi.yaml: main: infra/)."""

from phi3_infra.program import main

main()
