"""A local rehearsal of what `pulumi up` sends to Azure ML: the planned job and deployment, run
in each image's own environment on this machine's CPU."""
