//! A pod's `/etc/resolv.conf`, by the kubelet's rules (`pkg/kubelet/network/dns`): the pod's `dnsPolicy`
//! picks the base (cluster DNS, the node's resolv.conf, or nothing), `dnsConfig` is merged on top, and the
//! result is cut to what resolvers accept. Also the node's upstream resolvers for forwarding.

use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Pod;

/// Nameservers a resolver reads (glibc's MAXNS); the kubelet drops the rest.
const MAX_NAMESERVERS: usize = 3;
/// Search domains the kubelet keeps (validation.MaxDNSSearchPaths).
const MAX_SEARCH_PATHS: usize = 32;
/// Characters of the joined search line the kubelet keeps (validation.MaxDNSSearchListChars).
const MAX_SEARCH_CHARS: usize = 2048;
/// Longer search domains make some glibc versions abort(), so the kubelet filters them out.
const MAX_SEARCH_DOMAIN_LEN: usize = 253;

/// What a resolv.conf says, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Parse as the kubelet does: comments after `#`/`;`, the last `search` line wins (trailing dots and
    /// "." dropped), `options` accumulate with later values of the same option replacing earlier ones.
    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut fields = line.split_whitespace();
            match fields.next() {
                Some("nameserver") => conf.nameservers.extend(fields.next().map(str::to_string)),
                Some("search") => {
                    conf.searches = fields
                        .filter(|s| *s != ".")
                        .map(|s| s.trim_end_matches('.').to_string())
                        .collect();
                }
                Some("options") => {
                    for option in fields {
                        set_option(&mut conf.options, option_name(option), option.to_string());
                    }
                }
                _ => {}
            }
        }
        conf
    }

    /// The file text, in the order container runtimes write it (search, nameservers, options); empty when
    /// there is nothing to say.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for ns in &self.nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

fn option_name(option: &str) -> &str {
    option.split_once(':').map_or(option, |(name, _)| name)
}

/// Replace the option of the same name in place, or append it.
fn set_option(options: &mut Vec<String>, name: &str, option: String) {
    match options.iter_mut().find(|o| option_name(o) == name) {
        Some(existing) => *existing = option,
        None => options.push(option),
    }
}

fn push_unique(list: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for item in items {
        if !list.contains(&item) {
            list.push(item);
        }
    }
}

/// The resolv.conf the kubelet gives `pod`.
///
/// - `ClusterFirst` (the default) and `ClusterFirstWithHostNet`: the cluster DNS servers, search
///   `<ns>.svc.<zone> svc.<zone> <zone>` then the node's search domains, `options ndots:5`. A hostNetwork
///   pod with `ClusterFirst` gets `Default` instead, and so does every pod when no cluster DNS is configured.
/// - `Default`: the node's resolv.conf (`host_resolv_conf`).
/// - `None`: only what `dnsConfig` says.
///
/// `dnsConfig` is then merged in (nameservers and searches appended without duplicates, options by name),
/// and the result cut to 3 nameservers and 32 search domains / 2048 characters.
pub fn resolv_conf(pod: &Pod, cluster_dns: &[IpAddr], zone: &str, host_resolv_conf: &str) -> String {
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let cluster_first = match policy {
        "None" => None,
        "ClusterFirstWithHostNet" => Some(true),
        "Default" => Some(false),
        // ClusterFirst, and what validation should have refused (the kubelet treats it as ClusterFirst).
        _ => Some(!host_network),
    };
    let host = ResolvConf::parse(host_resolv_conf);
    let mut conf = match cluster_first {
        None => ResolvConf::default(),
        Some(true) if !cluster_dns.is_empty() => {
            let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
            let zone = zone.trim_end_matches('.');
            let mut searches = Vec::new();
            if !zone.is_empty() {
                push_unique(
                    &mut searches,
                    [
                        format!("{namespace}.svc.{zone}"),
                        format!("svc.{zone}"),
                        zone.to_string(),
                    ],
                );
            }
            push_unique(&mut searches, host.searches);
            ResolvConf {
                nameservers: cluster_dns.iter().map(IpAddr::to_string).collect(),
                searches,
                options: vec!["ndots:5".to_string()],
            }
        }
        Some(_) => host,
    };

    if let Some(extra) = &spec.dns_config {
        push_unique(
            &mut conf.nameservers,
            extra.nameservers.clone().unwrap_or_default(),
        );
        push_unique(&mut conf.searches, extra.searches.clone().unwrap_or_default());
        for option in extra.options.iter().flatten() {
            let Some(name) = option.name.as_deref() else {
                continue;
            };
            let text = match option.value.as_deref() {
                Some(value) if !value.is_empty() => format!("{name}:{value}"),
                _ => name.to_string(),
            };
            set_option(&mut conf.options, name, text);
        }
    }

    conf.nameservers.truncate(MAX_NAMESERVERS);
    conf.searches.truncate(MAX_SEARCH_PATHS);
    conf.searches.retain(|s| s.len() <= MAX_SEARCH_DOMAIN_LEN);
    // Drop domains from the end until the joined line fits, as the kubelet does.
    while !conf.searches.is_empty() && conf.searches.join(" ").len() > MAX_SEARCH_CHARS {
        conf.searches.pop();
    }
    conf.render()
}

/// The upstream resolvers of a node's resolv.conf, port 53, without loopback stubs (systemd-resolved's
/// 127.0.0.53, a local dnsmasq): those answer only inside the host's network namespace and may forward back
/// to us.
pub fn upstreams(host_resolv_conf: &str) -> Vec<SocketAddr> {
    ResolvConf::parse(host_resolv_conf)
        .nameservers
        .iter()
        .filter_map(|ns| ns.split('%').next()?.parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_loopback())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodDNSConfig, PodDNSConfigOption, PodSpec};
    use kube::api::ObjectMeta;

    use super::*;

    const HOST: &str = "# generated\nnameserver 192.0.2.53\nnameserver 127.0.0.53\nsearch corp.example. lab.example\noptions edns0 timeout:2\n";

    fn pod(policy: Option<&str>, host_network: bool, dns_config: Option<PodDNSConfig>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                dns_policy: policy.map(str::to_string),
                host_network: host_network.then_some(true),
                dns_config,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn cluster_dns() -> Vec<IpAddr> {
        vec!["10.43.0.10".parse().unwrap()]
    }

    #[test]
    fn cluster_first_uses_cluster_dns_and_kubernetes_search_path() {
        let text = resolv_conf(&pod(None, false, None), &cluster_dns(), "cluster.local", HOST);
        assert_eq!(
            text,
            "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\n\
             nameserver 10.43.0.10\n\
             options ndots:5\n"
        );
    }

    #[test]
    fn default_policy_copies_the_node() {
        let text = resolv_conf(
            &pod(Some("Default"), false, None),
            &cluster_dns(),
            "cluster.local",
            HOST,
        );
        assert_eq!(
            text,
            "search corp.example lab.example\nnameserver 192.0.2.53\nnameserver 127.0.0.53\noptions edns0 timeout:2\n"
        );
    }

    #[test]
    fn host_network_cluster_first_falls_back_to_default_but_with_host_net_does_not() {
        let fallback = resolv_conf(
            &pod(Some("ClusterFirst"), true, None),
            &cluster_dns(),
            "cluster.local",
            HOST,
        );
        assert!(fallback.contains("nameserver 192.0.2.53"), "{fallback}");
        assert!(!fallback.contains("10.43.0.10"), "{fallback}");

        let with_host_net = resolv_conf(
            &pod(Some("ClusterFirstWithHostNet"), true, None),
            &cluster_dns(),
            "cluster.local",
            HOST,
        );
        assert!(
            with_host_net.contains("nameserver 10.43.0.10\n"),
            "{with_host_net}"
        );
        assert!(
            with_host_net.starts_with("search shop.svc.cluster.local "),
            "{with_host_net}"
        );
    }

    #[test]
    fn cluster_first_without_cluster_dns_falls_back_to_default() {
        let text = resolv_conf(&pod(None, false, None), &[], "cluster.local", HOST);
        assert!(text.contains("nameserver 192.0.2.53"), "{text}");
        assert!(!text.contains("ndots"), "{text}");
    }

    #[test]
    fn none_takes_only_dns_config() {
        let config = PodDNSConfig {
            nameservers: Some(vec!["192.0.2.1".into()]),
            searches: Some(vec![
                "ns1.svc.cluster-domain.example".into(),
                "my.dns.search.suffix".into(),
            ]),
            options: Some(vec![
                PodDNSConfigOption {
                    name: Some("ndots".into()),
                    value: Some("2".into()),
                },
                PodDNSConfigOption {
                    name: Some("edns0".into()),
                    value: None,
                },
            ]),
        };
        let text = resolv_conf(
            &pod(Some("None"), false, Some(config)),
            &cluster_dns(),
            "cluster.local",
            HOST,
        );
        assert_eq!(
            text,
            "search ns1.svc.cluster-domain.example my.dns.search.suffix\nnameserver 192.0.2.1\noptions ndots:2 edns0\n"
        );
    }

    #[test]
    fn none_without_dns_config_is_empty() {
        assert_eq!(
            resolv_conf(
                &pod(Some("None"), false, None),
                &cluster_dns(),
                "cluster.local",
                HOST
            ),
            ""
        );
    }

    #[test]
    fn dns_config_merges_into_cluster_first() {
        let config = PodDNSConfig {
            nameservers: Some(vec!["10.43.0.10".into(), "192.0.2.7".into()]),
            searches: Some(vec!["cluster.local".into(), "extra.example".into()]),
            options: Some(vec![
                PodDNSConfigOption {
                    name: Some("ndots".into()),
                    value: Some("1".into()),
                },
                PodDNSConfigOption {
                    name: Some("single-request-reopen".into()),
                    value: None,
                },
            ]),
        };
        let text = resolv_conf(
            &pod(None, false, Some(config)),
            &cluster_dns(),
            "cluster.local",
            "",
        );
        assert_eq!(
            text,
            "search shop.svc.cluster.local svc.cluster.local cluster.local extra.example\n\
             nameserver 10.43.0.10\nnameserver 192.0.2.7\n\
             options ndots:1 single-request-reopen\n"
        );
    }

    #[test]
    fn limits_cut_nameservers_and_search_domains() {
        let searches: Vec<String> = (0..40).map(|i| format!("d{i:02}.{}", "x".repeat(90))).collect();
        let config = PodDNSConfig {
            nameservers: Some((1..=5).map(|i| format!("192.0.2.{i}")).collect()),
            searches: Some(searches.clone()),
            options: None,
        };
        let text = resolv_conf(&pod(Some("None"), false, Some(config)), &[], "cluster.local", "");
        let conf = ResolvConf::parse(&text);
        assert_eq!(conf.nameservers, ["192.0.2.1", "192.0.2.2", "192.0.2.3"]);
        // 32 kept by count, then cut from the end to fit 2048 characters: 21 × 94 + 20 spaces = 1994.
        assert_eq!(conf.searches, searches[..21]);
        assert!(conf.searches.join(" ").len() <= MAX_SEARCH_CHARS);
    }

    #[test]
    fn overlong_search_domains_are_dropped() {
        let long = format!("{}.example", "a".repeat(250));
        let config = PodDNSConfig {
            searches: Some(vec![long, "ok.example".into()]),
            ..Default::default()
        };
        let text = resolv_conf(&pod(Some("None"), false, Some(config)), &[], "cluster.local", "");
        assert_eq!(text, "search ok.example\n");
    }

    #[test]
    fn parse_keeps_last_search_and_replaces_repeated_options() {
        let conf = ResolvConf::parse(
            "search a.example\nsearch b.example . c.example.\noptions ndots:2\noptions ndots:3 rotate ; x\n",
        );
        assert_eq!(conf.searches, ["b.example", "c.example"]);
        assert_eq!(conf.options, ["ndots:3", "rotate"]);
    }

    #[test]
    fn upstreams_skip_loopback_stubs() {
        let ups = upstreams(
            "nameserver 127.0.0.53\nnameserver ::1\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\n",
        );
        assert_eq!(
            ups,
            ["192.0.2.53:53".parse().unwrap(), "[fe80::1]:53".parse().unwrap()]
        );
    }
}
