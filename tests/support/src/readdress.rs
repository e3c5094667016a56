//! A side of a [`NetPair`] that changes its address mid-chat (a laptop
//! moving to another network, a NAT rebinding), and the packets a side's
//! input rules counted: for the `resume` suite.
//!
//! The new address is in the pair's /24, so the other side reaches it over
//! the same link without any new route. The old address is removed after
//! the new one is added; `promote_secondaries` is turned on first, or the
//! kernel would remove the new (secondary) address together with the old
//! (primary) one.

use std::process::Command;

use crate::netns::{NetPair, Side};

/// The veth end of a side (see [`NetPair::new`]).
fn dev(side: Side) -> &'static str {
    match side {
        Side::A => "veth0",
        Side::B => "veth1",
    }
}

/// `ip ARGS…` (found on PATH or in the sbin directories); its stdout, or
/// a panic saying what failed.
fn ip(args: &[&str]) -> String {
    let program = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
        .unwrap_or("ip");
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip {}`: {e}", args.join(" ")));
    if !out.status.success() {
        panic!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl NetPair {
    /// Gives `side`'s veth end the address `<subnet>.<host>` (same /24) in
    /// place of its current one ([`NetPair::addr`] keeps naming the old
    /// one); returns the new address. Connections bound to the old address
    /// can no longer send or receive anything; the link itself stays up.
    pub fn move_address(&self, side: Side, host: u8) -> String {
        let ns = self.ns(side);
        let dev = dev(side);
        let old = self.addr(side).to_string();
        let (subnet, _) = old.rsplit_once('.').expect("an IPv4 address");
        let new = format!("{subnet}.{host}");
        assert_ne!(new, old, "move_address: {new} is the current address");
        let sysctl = format!("echo 1 > /proc/sys/net/ipv4/conf/{dev}/promote_secondaries");
        ip(&["netns", "exec", ns, "sh", "-c", &sysctl]);
        ip(&["-n", ns, "addr", "add", &format!("{new}/24"), "dev", dev]);
        ip(&["-n", ns, "addr", "del", &format!("{old}/24"), "dev", dev]);
        let listing = ip(&["-n", ns, "-4", "-o", "addr", "show", "dev", dev]);
        let has = |a: &str| listing.contains(&format!("inet {a}/"));
        assert!(
            has(&new) && !has(&old),
            "after moving {ns}/{dev} from {old} to {new}, its addresses are:\n{listing}"
        );
        new
    }

    /// The packets counted so far by the `counter` statements of `side`'s
    /// input rules (see [`NetPair::set_rules`]), dropping or not.
    pub fn counted(&self, side: Side) -> u64 {
        self.ruleset(side)
            .split("counter packets ")
            .skip(1)
            .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }
}
