//! Where the server is: `HOST`, `HOST:PORT`, `IP`, `[IPv6]:PORT` and so on,
//! the name known_hosts keeps it under, and every address it resolves to.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, Result, bail};

/// Splits `HOST`, `HOST:PORT`, `IP`, `IPv4:PORT`, `[IPv6]` or `[IPv6]:PORT`.
fn split_host_port(addr: &str, default_port: u16) -> Result<(String, u16)> {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok((sa.ip().to_string(), sa.port()));
    }
    let bare = addr
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok((ip.to_string(), default_port));
    }
    match addr.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => {
            let port = p
                .parse::<u16>()
                .with_context(|| format!("bad port in {addr:?}"))?;
            Ok((h.to_string(), port))
        }
        _ => Ok((addr.to_string(), default_port)),
    }
}

/// The name a server is known by in known_hosts: `host:port`, with IPv6
/// addresses in brackets and host names in lower case.
pub fn host_key(addr: &str, default_port: u16) -> Result<String> {
    let (host, port) = split_host_port(addr, default_port)?;
    Ok(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{}:{port}", host.to_ascii_lowercase())
    })
}

/// Resolves an address in any of the forms above to every address it names.
pub async fn resolve(addr: &str, default_port: u16) -> Result<Vec<SocketAddr>> {
    let (host, port) = split_host_port(addr, default_port)?;
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .with_context(|| format!("cannot resolve {host:?}"))?
        .collect();
    if found.is_empty() {
        bail!("{host:?} resolves to no address");
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn addresses_in_every_form_resolve() {
        let v4: SocketAddr = "127.0.0.1:7200".parse().unwrap();
        let v6: SocketAddr = "[::1]:7200".parse().unwrap();
        assert_eq!(resolve("127.0.0.1", 7200).await.unwrap(), vec![v4]);
        assert_eq!(resolve("127.0.0.1:7200", 1).await.unwrap(), vec![v4]);
        assert_eq!(resolve("[::1]:7200", 1).await.unwrap(), vec![v6]);
        assert_eq!(resolve("::1", 7200).await.unwrap(), vec![v6]);
        assert_eq!(resolve("[::1]", 7200).await.unwrap(), vec![v6]);
        let local = resolve("localhost:7200", 1).await.unwrap();
        assert!(
            local
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 7200)
        );
        assert!(resolve("localhost:notaport", 1).await.is_err());
    }

    #[test]
    fn host_keys_are_normalised() {
        assert_eq!(host_key("LocalHost", 7200).unwrap(), "localhost:7200");
        assert_eq!(host_key("localhost:7201", 7200).unwrap(), "localhost:7201");
        assert_eq!(host_key("::1", 7200).unwrap(), "[::1]:7200");
        assert_eq!(host_key("[::1]:9", 7200).unwrap(), "[::1]:9");
        assert_eq!(host_key("10.0.0.1", 7200).unwrap(), "10.0.0.1:7200");
    }
}
