"""The one loopback rule (bildsluss_common.net) for every form of gRPC target the
agent accepts: plaintext only when every address is on this machine."""
import pytest

from bildsluss_common.net import remote_hosts


@pytest.mark.parametrize("target", [
    "127.0.0.1:50051", "127.7.0.1:1", "localhost:50051", "LOCALHOST:1", "[::1]:50051",
    "dns:///localhost:50051", "dns:localhost:1", "dns:///127.0.0.1:5", "dns://10.0.0.53/127.0.0.1:5",
    "ipv4:127.0.0.1:50051,127.0.0.2:50052", "ipv4:127.0.0.1", "ipv6:[::1]:50051,::1",
    "unix:/run/bildsluss/archive.sock", "unix-abstract:bildsluss",
])
def test_loopback_targets(target):
    assert remote_hosts(target) == []


@pytest.mark.parametrize("target, remote", [
    ("archive.region.se:443", ["archive.region.se"]),
    ("10.1.2.3:50051", ["10.1.2.3"]),
    ("[2001:db8::7]:50051", ["2001:db8::7"]),
    ("dns:///archive.region.se:443", ["archive.region.se"]),
    # One remote address among loopback ones is enough to refuse.
    ("ipv4:127.0.0.1:50051,192.0.2.7:50051", ["192.0.2.7"]),
    ("ipv6:[::1]:1,[2001:db8::1]:1", ["2001:db8::1"]),
    # Another DNS server may answer "localhost" with any address.
    ("dns://192.0.2.53/localhost:50051", ["localhost"]),
    # Names are not resolved: only "localhost" itself is taken as loopback.
    ("localhost.region.se:1", ["localhost.region.se"]),
    ("vsock:3:50051", ["vsock:3:50051"]),
])
def test_remote_targets(target, remote):
    assert remote_hosts(target) == remote


@pytest.mark.parametrize("target", ["", ":50051", "dns://192.0.2.53", "ipv4:127.0.0.1:1,", "[::1:50051"])
def test_targets_without_a_host_are_errors(target):
    with pytest.raises(ValueError):
        remote_hosts(target)
