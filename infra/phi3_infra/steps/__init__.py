"""The dynamic steps `pulumi up` and `pulumi destroy` run: pulumi.dynamic resources whose
providers call the Azure operations of phi3_infra.azure.
"""
