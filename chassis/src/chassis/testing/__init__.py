"""Test support for services: the pytest plugin (isolated Postgres/Redis/RabbitMQ per run) and
`ServiceProcess`, a service started as a real subprocess."""

import os

# grpcio (1.81 and later) restarts its poller thread in a forked child, and subprocess.Popen with
# close_fds then closes that poller's epoll descriptor before exec: the child aborts ("epoll_wait
# error: Bad file descriptor", grpc/grpc#43055). From a test process with busy channels, about one
# ServiceProcess start in seven died so. gRPC reads this when it is imported, and the plugin (in
# this package) is loaded before anything imports grpc. Tests never use gRPC in a forked child.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
