"""Thin gRPC servicers: each translates messages and calls its area's domain module."""
