//! The machine's own addresses, for telling people where a server can be
//! reached: a server bound to all interfaces shows every address a client
//! elsewhere could use, not `[::]`.

use std::net::{IpAddr, SocketAddr};

/// The addresses a client on another machine could reach `bound` at: the
/// bound address itself when it is a specific one, otherwise every
/// address of this machine's interfaces that is up, other than loopback
/// and IPv6 link-local ones (they need an interface name to be used), of
/// the bound family (an IPv6 socket on `[::]` takes IPv4 too).
pub fn reachable_at(bound: SocketAddr) -> Vec<IpAddr> {
    if !bound.ip().is_unspecified() {
        return vec![bound.ip()];
    }
    let v4_only = bound.is_ipv4();
    let mut found: Vec<IpAddr> = interface_addresses()
        .into_iter()
        .filter(|ip| !ip.is_loopback() && !is_link_local_v6(ip))
        .filter(|ip| !(v4_only && ip.is_ipv6()))
        .collect();
    // IPv4 first: the shorter one to type.
    found.sort_by_key(|ip| (ip.is_ipv6(), *ip));
    found.dedup();
    found
}

/// `ip:port` as `--addr` takes it (IPv6 in brackets).
pub fn host_port(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

fn is_link_local_v6(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

/// Every address of every interface that is up (empty if the system will
/// not say).
#[cfg(unix)]
fn interface_addresses() -> Vec<IpAddr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list it allocates, which
    // is freed below with freeifaddrs and not used after.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, valid
        // until freeifaddrs; `ifa_addr` is null or points to a sockaddr
        // whose family says which struct it is.
        let ifa = unsafe { &*cur };
        let up = ifa.ifa_flags & (libc::IFF_UP as libc::c_uint) != 0;
        if up && !ifa.ifa_addr.is_null() {
            match i32::from(unsafe { (*ifa.ifa_addr).sa_family }) {
                libc::AF_INET => {
                    // SAFETY: the family is AF_INET, so it is a sockaddr_in.
                    let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
                    out.push(IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes()));
                }
                libc::AF_INET6 => {
                    // SAFETY: the family is AF_INET6, so it is a sockaddr_in6.
                    let sin6 = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
                    out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                }
                _ => {}
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    out
}

#[cfg(not(unix))]
fn interface_addresses() -> Vec<IpAddr> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_specific_address_is_itself_and_loopback_is_never_listed() {
        let bound: SocketAddr = "192.0.2.7:7200".parse().unwrap();
        assert_eq!(reachable_at(bound), vec![bound.ip()]);
        for any in ["[::]:7200", "0.0.0.0:7200"] {
            let found = reachable_at(any.parse().unwrap());
            assert!(found.iter().all(|ip| !ip.is_loopback()), "{found:?}");
        }
        let v4: Vec<IpAddr> = reachable_at("0.0.0.0:1".parse().unwrap());
        assert!(v4.iter().all(IpAddr::is_ipv4), "{v4:?}");
        assert_eq!(
            host_port("2001:db8::1".parse().unwrap(), 7),
            "[2001:db8::1]:7"
        );
    }
}
