"""The upstream of the `/users/me` ceiling: `UserService.GetUser` answering a fixed account at
once, no token check, no database, on grpc.aio under uvloop (as the services run).

    python bench/gateway/echo_upstream.py PORT
"""

from __future__ import annotations

import sys
from typing import Any

import grpc
import uvloop

from ecommerce.user.v1 import user_pb2, user_pb2_grpc

USER = user_pb2.User(email="bench@example.com", full_name="Bench", role=user_pb2.ROLE_CUSTOMER)
USER.created_at.FromSeconds(1_767_225_600)


class EchoUsers(user_pb2_grpc.UserServiceServicer):
    async def GetUser(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        user = user_pb2.User()
        user.CopyFrom(USER)
        user.id = request.id
        return user_pb2.GetUserResponse(user=user)


async def serve(port: int) -> None:
    server = grpc.aio.server()
    user_pb2_grpc.add_UserServiceServicer_to_server(EchoUsers(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
