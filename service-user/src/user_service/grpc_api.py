"""The UserService gRPC servicer: request fields -> handler (which validates) -> proto_mapping ->
reply."""

from __future__ import annotations

import grpc

from chassis.auth import TokenVerifier, authenticate, client_address
from ecommerce.user.v1 import user_pb2, user_pb2_grpc
from user_service import handlers
from user_service.handlers import Accounts
from user_service.proto_mapping import user_to_proto

SERVICE_NAME = user_pb2.DESCRIPTOR.services_by_name["UserService"].full_name


class UserServicer(user_pb2_grpc.UserServiceServicer):
    """Thin entry point; domain errors become gRPC statuses in the chassis interceptor."""

    def __init__(self, accounts: Accounts, verifier: TokenVerifier) -> None:
        self._accounts = accounts
        self._verifier = verifier

    async def Register(
        self, request: user_pb2.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.RegisterResponse:
        user = await handlers.register(
            self._accounts,
            email=request.email,
            password=request.password,
            full_name=request.full_name,
            client=client_address(context),
        )
        return user_pb2.RegisterResponse(user=user_to_proto(user))

    async def Login(
        self, request: user_pb2.LoginRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.LoginResponse:
        token = await handlers.login(
            self._accounts,
            email=request.email,
            password=request.password,
            client=client_address(context),
        )
        return user_pb2.LoginResponse(
            access_token=token.access_token, token_type="bearer", expires_in=token.expires_in
        )

    async def GetUser(
        self, request: user_pb2.GetUserRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.GetUserResponse:
        caller = await authenticate(context, self._verifier)
        user = await handlers.get_user(self._accounts, caller=caller, user_id=request.id)
        return user_pb2.GetUserResponse(user=user_to_proto(user))

    async def GetJwks(
        self, request: user_pb2.GetJwksRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.GetJwksResponse:
        keys = [
            user_pb2.JsonWebKey(kid=k.kid, kty=k.kty, alg=k.alg, use=k.use, crv=k.crv, x=k.x)
            for k in handlers.get_jwks(self._accounts)
        ]
        return user_pb2.GetJwksResponse(keys=keys)
