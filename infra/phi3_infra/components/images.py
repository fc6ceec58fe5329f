"""The trainer and server images: tagged by a hash of their build context, built three ways.

- `local`: BuildKit on this machine through pulumi-docker-build, pushed with an ACR refresh token
  that an Entra ID token was exchanged for (the registry's admin user stays off; the token is a
  Pulumi secret).
- `remote`: an ACR build run in the stack's registry (no Docker needed): the context is uploaded
  to the registry's build-source URL, a DockerBuildRequest is scheduled and polled to the end.
- `prebuilt`: references given in config, used as they are.

The contexts and their tags: phi3_infra.build_context.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi

from phi3_infra.azure.registry_build import RegistryToken, exchange_acr_refresh_token
from phi3_infra.build_context import ImageSource
from phi3_infra.components.rbac import BuiltInRole, Deployer, assign_to_deployer
from phi3_infra.config import ImageBuild
from phi3_infra.steps.registry_build import RegistryBuild, RegistryBuildInputs

# The username ACR expects with a refresh token obtained from /oauth2/exchange.
ACR_TOKEN_USERNAME = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class ImagesArgs:
    image_build: ImageBuild
    sources: Mapping[str, ImageSource]
    registry_name: str  # deterministic Azure name, for the push role assignment's name
    registry_id: pulumi.Input[str]
    login_server: pulumi.Input[str]
    tenant_id: pulumi.Input[str]
    deployer: Deployer
    registry_token: RegistryToken = exchange_acr_refresh_token


class ContainerImages(pulumi.ComponentResource):
    """`refs[role]` is the pullable reference of each image the stages need."""

    refs: dict[str, pulumi.Output[str]]

    def __init__(
        self, name: str, args: ImagesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("phi3:images:ContainerImages", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.refs = {}
        if args.image_build is ImageBuild.LOCAL and any(
            source.reference is None for source in args.sources.values()
        ):
            # Whoever runs `pulumi up` pushes with their own Entra identity: AcrPush, no admin.
            pusher = assign_to_deployer(
                scope_name=args.registry_name,
                scope_id=args.registry_id,
                role=BuiltInRole.ACR_PUSH,
                deployer=args.deployer,
                parent=self,
            )
            child = pulumi.ResourceOptions(parent=self, depends_on=[pusher])
        for role, source in args.sources.items():
            if source.reference is not None:
                self.refs[role] = pulumi.Output.from_input(source.reference)
                continue
            assert source.context is not None
            ref = pulumi.Output.concat(args.login_server, f"/{source.repository}:{source.tag}")
            if args.image_build is ImageBuild.LOCAL:
                self.refs[role] = _local_build(role, source, ref, args, child)
            else:
                build = RegistryBuild(
                    f"{role}-image",
                    RegistryBuildInputs(
                        registry_id=args.registry_id,
                        image=f"{source.repository}:{source.tag}",
                        context=str(source.context),
                        reference=ref,
                        build_args=dict(source.build_args),
                    ),
                    child,
                )
                self.refs[role] = build.reference
        self.register_outputs(dict(self.refs))


def _local_build(
    role: str,
    source: ImageSource,
    ref: pulumi.Output[str],
    args: ImagesArgs,
    opts: pulumi.ResourceOptions,
) -> pulumi.Output[str]:
    import pulumi_docker_build as docker_build

    exchanged: pulumi.Output[str] = pulumi.Output.all(args.login_server, args.tenant_id).apply(
        lambda values: args.registry_token(values[0], values[1])
    )
    # A secret from the start: encrypted in state, masked in logs.
    token: pulumi.Output[str] = pulumi.Output.secret(exchanged)
    assert source.context is not None
    image = docker_build.Image(
        f"{role}-image",
        context=docker_build.BuildContextArgs(location=str(source.context)),
        dockerfile=docker_build.DockerfileArgs(location=str(source.context / "Dockerfile")),
        build_args=dict(source.build_args) or None,
        platforms=[docker_build.Platform.LINUX_AMD64],
        tags=[ref],
        push=True,
        registries=[
            docker_build.RegistryArgs(
                address=args.login_server, username=ACR_TOKEN_USERNAME, password=token
            )
        ],
        opts=opts,
    )
    # Pin what Azure ML pulls to the digest that was pushed.
    return pulumi.Output.concat(ref, "@", image.digest)
