//! The service proxy: Services + EndpointSlices → one nftables ruleset (work in progress).
