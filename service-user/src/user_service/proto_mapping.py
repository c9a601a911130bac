"""Translation between the domain User and its protobuf message."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from ecommerce.user.v1 import user_pb2
from user_service.domain import Role, User

_ROLES = {Role.CUSTOMER: user_pb2.ROLE_CUSTOMER, Role.ADMIN: user_pb2.ROLE_ADMIN}


def user_to_proto(user: User) -> user_pb2.User:
    created_at = Timestamp()
    created_at.FromDatetime(user.created_at)
    return user_pb2.User(
        id=str(user.id),
        email=user.email,
        full_name=user.full_name,
        role=_ROLES[user.role],
        created_at=created_at,
    )
