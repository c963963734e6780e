//! A compact text rendering of generated xDS: the fields a reader checks
//! against `istioctl proxy-config`, one line per listener chain, route,
//! cluster and endpoint.

use std::fmt::Write;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy};
use envoy_types::pb::envoy::config::core::v3::Address;
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{Route, RouteConfiguration};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::ClusterSpecifier as TcpCluster;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::UpstreamProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::explicit_http_config::ProtocolConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher;
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::google::protobuf::{Any, Duration, value};
use meshwork_translate::Generated;
use meshwork_xds::unpack;

/// Renders every resource, type by type, in name order.
pub fn render(g: &Generated) -> String {
    let mut s = String::new();
    for any in g.listeners.values() {
        listener(&mut s, &unpack::<Listener>(any).expect("listener"));
    }
    for any in g.routes.values() {
        route_config(
            &mut s,
            &unpack::<RouteConfiguration>(any).expect("route"),
            "",
        );
    }
    for any in g.clusters.values() {
        cluster(&mut s, &unpack::<Cluster>(any).expect("cluster"));
    }
    for any in g.endpoints.values() {
        let cla = unpack::<ClusterLoadAssignment>(any).expect("cla");
        let _ = writeln!(s, "eds {}", cla.cluster_name);
        assignment(&mut s, &cla, "  ");
    }
    s
}

fn addr(a: Option<&Address>) -> String {
    match a.and_then(|a| a.address.as_ref()) {
        Some(AddressKind::SocketAddress(sa)) => match sa.port_specifier {
            Some(PortSpecifier::PortValue(p)) => format!("{}:{p}", sa.address),
            _ => sa.address.clone(),
        },
        _ => "-".into(),
    }
}

fn dur(d: Option<&Duration>) -> String {
    match d {
        None => "unset".into(),
        Some(d) if d.nanos == 0 => format!("{}s", d.seconds),
        Some(d) => format!("{}.{:09}s", d.seconds, d.nanos),
    }
}

fn listener(s: &mut String, l: &Listener) {
    let dir = ["UNSPECIFIED", "INBOUND", "OUTBOUND"]
        .get(l.traffic_direction as usize)
        .copied()
        .unwrap_or("?");
    let _ = write!(
        s,
        "listener {} addr={} dir={dir}",
        l.name,
        addr(l.address.as_ref())
    );
    if let Some(b) = &l.bind_to_port {
        let _ = write!(s, " bind_to_port={}", b.value);
    }
    if l.use_original_dst.as_ref().is_some_and(|b| b.value) {
        s.push_str(" use_original_dst");
    }
    for f in &l.listener_filters {
        let _ = write!(s, " listener_filter={}", f.name);
    }
    s.push('\n');
    for c in &l.filter_chains {
        chain(s, "chain", c);
    }
    if let Some(c) = &l.default_filter_chain {
        chain(s, "default", c);
    }
    if let Some(api) = l
        .api_listener
        .as_ref()
        .and_then(|a| a.api_listener.as_ref())
    {
        s.push_str("  api_listener ");
        network_filter(s, api, "    ");
    }
}

fn chain(s: &mut String, what: &str, c: &FilterChain) {
    let _ = write!(s, "  {what} {:?}", c.name);
    if let Some(m) = &c.filter_chain_match {
        if let Some(p) = &m.destination_port {
            let _ = write!(s, " port={}", p.value);
        }
        for r in &m.prefix_ranges {
            let _ = write!(
                s,
                " prefix={}/{}",
                r.address_prefix,
                r.prefix_len.as_ref().map_or(0, |l| l.value)
            );
        }
        if !m.application_protocols.is_empty() {
            let _ = write!(s, " alpn={:?}", m.application_protocols);
        }
        if !m.transport_protocol.is_empty() {
            let _ = write!(s, " transport={}", m.transport_protocol);
        }
    }
    if let Some(ts) = &c.transport_socket {
        let _ = write!(s, " socket={}", ts.name);
    }
    s.push_str(" -> ");
    for f in &c.filters {
        if let Some(ConfigType::TypedConfig(any)) = &f.config_type {
            network_filter(s, any, "    ");
        }
    }
}

fn network_filter(s: &mut String, any: &Any, indent: &str) {
    if let Ok(tp) = unpack::<TcpProxy>(any) {
        match &tp.cluster_specifier {
            Some(TcpCluster::Cluster(c)) => {
                let _ = writeln!(s, "tcp_proxy {c}");
            }
            other => {
                let _ = writeln!(s, "tcp_proxy {other:?}");
            }
        }
    } else if let Ok(hcm) = unpack::<HttpConnectionManager>(any) {
        let filters: Vec<String> = hcm
            .http_filters
            .iter()
            .map(|f| match &f.config_type {
                Some(envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType::TypedConfig(t)) => {
                    format!("{}({})", f.name, t.type_url.rsplit('/').next().unwrap_or(""))
                }
                _ => f.name.clone(),
            })
            .collect();
        match &hcm.route_specifier {
            Some(RouteSpecifier::Rds(r)) => {
                let ads = matches!(
                    r.config_source
                        .as_ref()
                        .and_then(|c| c.config_source_specifier.as_ref()),
                    Some(ConfigSourceSpecifier::Ads(_))
                );
                let _ = writeln!(
                    s,
                    "hcm stat={} rds={}{} filters={filters:?}",
                    hcm.stat_prefix,
                    r.route_config_name,
                    if ads { "(ads)" } else { "" }
                );
            }
            Some(RouteSpecifier::RouteConfig(rc)) => {
                let _ = writeln!(s, "hcm stat={} inline filters={filters:?}", hcm.stat_prefix);
                route_config(s, rc, indent);
            }
            other => {
                let _ = writeln!(s, "hcm {other:?}");
            }
        }
    } else {
        let _ = writeln!(s, "{}", any.type_url);
    }
}

fn route_config(s: &mut String, rc: &RouteConfiguration, indent: &str) {
    let _ = writeln!(s, "{indent}route_config {}", rc.name);
    for vh in &rc.virtual_hosts {
        let _ = writeln!(s, "{indent}  vhost {} domains={:?}", vh.name, vh.domains);
        for r in &vh.routes {
            route(s, r, &format!("{indent}    "));
        }
    }
}

fn string_matcher(m: &StringMatcher) -> String {
    match &m.match_pattern {
        Some(MatchPattern::Exact(e)) => format!("exact:{e}"),
        Some(MatchPattern::Prefix(e)) => format!("prefix:{e}"),
        Some(MatchPattern::Suffix(e)) => format!("suffix:{e}"),
        Some(MatchPattern::Contains(e)) => format!("contains:{e}"),
        Some(MatchPattern::SafeRegex(r)) => format!("regex:{}", r.regex),
        other => format!("{other:?}"),
    }
}

fn route(s: &mut String, r: &Route, indent: &str) {
    let _ = write!(s, "{indent}route {:?}", r.name);
    if let Some(m) = &r.r#match {
        match &m.path_specifier {
            Some(PathSpecifier::Prefix(p)) => {
                let _ = write!(s, " prefix={p}");
            }
            Some(PathSpecifier::Path(p)) => {
                let _ = write!(s, " path={p}");
            }
            Some(PathSpecifier::SafeRegex(p)) => {
                let _ = write!(s, " regex={}", p.regex);
            }
            other => {
                let _ = write!(s, " {other:?}");
            }
        }
        if m.case_sensitive.as_ref().is_some_and(|c| !c.value) {
            s.push_str(" nocase");
        }
        for h in &m.headers {
            let v = match &h.header_match_specifier {
                Some(HeaderMatchSpecifier::StringMatch(sm)) => string_matcher(sm),
                other => format!("{other:?}"),
            };
            let _ = write!(
                s,
                " header[{}{}={v}]",
                if h.invert_match { "!" } else { "" },
                h.name
            );
        }
        for q in &m.query_parameters {
            let _ = write!(
                s,
                " query[{}={:?}]",
                q.name, q.query_parameter_match_specifier
            );
        }
    }
    s.push_str(" -> ");
    match &r.action {
        Some(Action::Route(a)) => {
            match &a.cluster_specifier {
                Some(ClusterSpecifier::Cluster(c)) => {
                    let _ = write!(s, "{c}");
                }
                Some(ClusterSpecifier::WeightedClusters(w)) => {
                    let parts: Vec<String> = w
                        .clusters
                        .iter()
                        .map(|c| format!("{}={}", c.name, c.weight.as_ref().map_or(0, |w| w.value)))
                        .collect();
                    let _ = write!(s, "weighted[{}]", parts.join(", "));
                }
                other => {
                    let _ = write!(s, "{other:?}");
                }
            }
            let _ = write!(s, " timeout={}", dur(a.timeout.as_ref()));
            if !a.prefix_rewrite.is_empty() {
                let _ = write!(s, " prefix_rewrite={}", a.prefix_rewrite);
            }
            if let Some(h) = &a.host_rewrite_specifier {
                let _ = write!(s, " host_rewrite={h:?}");
            }
            for h in &a.hash_policy {
                let _ = write!(s, " hash={:?}", h.policy_specifier);
            }
            if let Some(rp) = &a.retry_policy {
                let _ = write!(
                    s,
                    " retries={}x[{}]{:?}",
                    rp.num_retries.as_ref().map_or(1, |n| n.value),
                    rp.retry_on,
                    rp.retriable_status_codes
                );
                if let Some(t) = &rp.per_try_timeout {
                    let _ = write!(s, " per_try={}", dur(Some(t)));
                }
                for p in &rp.retry_host_predicate {
                    let _ = write!(s, " predicate={}", p.name);
                }
            }
            for m in &a.request_mirror_policies {
                let f = m
                    .runtime_fraction
                    .as_ref()
                    .and_then(|f| f.default_value.as_ref())
                    .map(|v| (v.numerator, v.denominator));
                let _ = write!(s, " mirror={}@{f:?}", m.cluster);
            }
        }
        Some(Action::Redirect(rd)) => {
            let _ = write!(
                s,
                "redirect host={} path={:?} code={}",
                rd.host_redirect, rd.path_rewrite_specifier, rd.response_code
            );
        }
        Some(Action::DirectResponse(d)) => {
            let _ = write!(s, "direct {}", d.status);
        }
        other => {
            let _ = write!(s, "{other:?}");
        }
    }
    let mut filters: Vec<(&String, &String)> = r
        .typed_per_filter_config
        .iter()
        .map(|(k, v)| (k, &v.type_url))
        .collect();
    filters.sort();
    for (name, type_url) in filters {
        let _ = write!(
            s,
            " per_filter[{name}={}]",
            type_url.rsplit('.').next().unwrap_or("")
        );
    }
    for h in &r.request_headers_to_add {
        if let Some(hv) = &h.header {
            let _ = write!(
                s,
                " +req[{}={} action={}]",
                hv.key, hv.value, h.append_action
            );
        }
    }
    for h in &r.request_headers_to_remove {
        let _ = write!(s, " -req[{h}]");
    }
    s.push('\n');
}

fn cluster(s: &mut String, c: &Cluster) {
    let kind = match &c.cluster_discovery_type {
        Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(*t)
            .map(|d| d.as_str_name())
            .unwrap_or("?"),
        _ => "STATIC(default)",
    };
    let lb = LbPolicy::try_from(c.lb_policy)
        .map(|l| l.as_str_name())
        .unwrap_or("?");
    let _ = write!(
        s,
        "cluster {} type={kind} lb={lb} connect_timeout={}",
        c.name,
        dur(c.connect_timeout.as_ref())
    );
    if let Some(e) = &c.eds_cluster_config {
        let ads = matches!(
            e.eds_config
                .as_ref()
                .and_then(|c| c.config_source_specifier.as_ref()),
            Some(ConfigSourceSpecifier::Ads(_))
        );
        let _ = write!(
            s,
            " eds_service={}{}",
            e.service_name,
            if ads { "(ads)" } else { "" }
        );
    }
    for (k, any) in &c.typed_extension_protocol_options {
        match unpack::<HttpProtocolOptions>(any) {
            Ok(o) => {
                let p = match &o.upstream_protocol_options {
                    Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => {
                        match &e.protocol_config {
                            Some(ProtocolConfig::Http2ProtocolOptions(_)) => "http2",
                            Some(ProtocolConfig::HttpProtocolOptions(_)) => "http1",
                            _ => "?",
                        }
                    }
                    Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(_)) => {
                        "use_downstream"
                    }
                    _ => "none",
                };
                let _ = write!(s, " protocol={p}");
            }
            Err(_) => {
                let _ = write!(s, " options[{k}]");
            }
        }
    }
    if let Some(ts) = &c.transport_socket {
        let _ = write!(s, " socket={}", ts.name);
    }
    if !c.transport_socket_matches.is_empty() {
        let names: Vec<&str> = c
            .transport_socket_matches
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        let _ = write!(s, " socket_matches={names:?}");
    }
    s.push('\n');
    cluster_policy(s, c);
    if let Some(la) = &c.load_assignment {
        assignment(s, la, "  ");
    }
}

/// Circuit breakers, outlier detection, panic threshold, LB config and
/// keepalive, one line (`max` for Istio's unlimited defaults).
fn cluster_policy(s: &mut String, c: &Cluster) {
    let v = |x: &Option<envoy_types::pb::google::protobuf::UInt32Value>| match x {
        Some(x) if x.value == u32::MAX => "max".to_string(),
        Some(x) => x.value.to_string(),
        None => "-".to_string(),
    };
    let mut parts = Vec::new();
    if let Some(t) = c
        .circuit_breakers
        .as_ref()
        .and_then(|cb| cb.thresholds.first())
    {
        parts.push(format!(
            "cb=conn:{}/pending:{}/requests:{}/retries:{}{}",
            v(&t.max_connections),
            v(&t.max_pending_requests),
            v(&t.max_requests),
            v(&t.max_retries),
            t.retry_budget
                .as_ref()
                .map(|b| format!("/budget:{:?}", b.budget_percent.as_ref().map(|p| p.value)))
                .unwrap_or_default()
        ));
    }
    if let Some(o) = &c.outlier_detection {
        parts.push(format!(
            "outlier=5xx:{}/gw:{}/interval:{}/base:{}/max%:{}",
            v(&o.consecutive_5xx),
            v(&o.consecutive_gateway_failure),
            dur(o.interval.as_ref()),
            dur(o.base_ejection_time.as_ref()),
            v(&o.max_ejection_percent)
        ));
    }
    if let Some(p) = c
        .common_lb_config
        .as_ref()
        .and_then(|l| l.healthy_panic_threshold.as_ref())
    {
        parts.push(format!("panic={}", p.value));
    }
    if let Some(l) = &c.lb_config {
        parts.push(format!("lb_config={l:?}"));
    }
    if let Some(k) = c
        .upstream_connection_options
        .as_ref()
        .and_then(|o| o.tcp_keepalive.as_ref())
    {
        parts.push(format!(
            "keepalive=probes:{}/time:{}/interval:{}",
            v(&k.keepalive_probes),
            v(&k.keepalive_time),
            v(&k.keepalive_interval)
        ));
    }
    if !parts.is_empty() {
        let _ = writeln!(s, "  policy {}", parts.join(" "));
    }
}

fn assignment(s: &mut String, cla: &ClusterLoadAssignment, indent: &str) {
    for loc in &cla.endpoints {
        // An empty locality prints as "", a missing one (gRPC NACKs it) as "(none)".
        let l = match &loc.locality {
            Some(l) if l.region.is_empty() && l.zone.is_empty() && l.sub_zone.is_empty() => {
                String::new()
            }
            Some(l) => format!("{}/{}/{}", l.region, l.zone, l.sub_zone),
            None => "(none)".into(),
        };
        let _ = writeln!(
            s,
            "{indent}locality {l:?} weight={}",
            loc.load_balancing_weight.as_ref().map_or(0, |w| w.value)
        );
        for e in &loc.lb_endpoints {
            let a = match &e.host_identifier {
                Some(HostIdentifier::Endpoint(ep)) => addr(ep.address.as_ref()),
                other => format!("{other:?}"),
            };
            let workload = e
                .metadata
                .as_ref()
                .and_then(|m| m.filter_metadata.get("istio"))
                .and_then(|s| s.fields.get("workload"))
                .and_then(|v| match &v.kind {
                    Some(value::Kind::StringValue(w)) => Some(w.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "{indent}  {a} health={} weight={} workload={workload}",
                e.health_status,
                e.load_balancing_weight.as_ref().map_or(0, |w| w.value)
            );
        }
    }
}
