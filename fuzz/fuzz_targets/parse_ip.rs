//! Address text: `parse_ip` accepts exactly what std's parsers accept, IPv4-mapped IPv6 as IPv4.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ip_counter::parse::parse_ip;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let std = text
        .parse::<Ipv4Addr>()
        .map(IpAddr::V4)
        .ok()
        .or_else(|| text.parse::<Ipv6Addr>().ok().map(|v6| v6.to_canonical()));
    assert_eq!(parse_ip(text), std, "{text:?}");
});
