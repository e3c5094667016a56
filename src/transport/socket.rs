//! The server's listening sockets, bound so that `[::]` means both
//! families on every machine.
//!
//! Whether an IPv6 socket bound to `::` also takes IPv4 depends on the
//! machine (`net.ipv6.bindv6only`, the BSDs, Windows): where it does not,
//! "listening on [::]" would refuse every IPv4 client, and another program
//! could take `0.0.0.0` on the same port unnoticed. IPV6_V6ONLY is therefore
//! set explicitly to false, so the port is ours on both families or the
//! bind fails.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Connections the kernel queues before we accept them (tokio's default).
const BACKLOG: i32 = 1024;

/// Which families a socket bound to `addr` listens on, for error messages.
pub fn families(addr: SocketAddr) -> &'static str {
    match addr {
        SocketAddr::V6(a) if a.ip().is_unspecified() => "IPv6 and IPv4",
        SocketAddr::V6(_) => "IPv6",
        SocketAddr::V4(_) => "IPv4",
    }
}

fn socket(addr: SocketAddr, ty: Type, protocol: Protocol) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    Ok(socket)
}

/// A listening TCP socket on `addr` (dual-stack for `[::]`), non-blocking.
pub fn tcp_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket(addr, Type::STREAM, Protocol::TCP)?;
    // As std and tokio do on Unix: a restarted server can take its port
    // back while old connections are in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// A UDP socket on `addr` (dual-stack for `[::]`), for quinn.
pub fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = socket(addr, Type::DGRAM, Protocol::UDP)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}
