//! Small constructors for the Envoy protobufs translation emits.

use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, HeaderValue, HeaderValueOption,
    SocketAddress,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, FilterChainMatch, filter};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::ClusterSpecifier;
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration, UInt32Value};
use meshwork_xds::pack;

/// Envoy's name for the HTTP connection manager filter.
pub(crate) const HCM_NAME: &str = "envoy.filters.network.http_connection_manager";
/// Envoy's name for the TCP proxy filter.
pub(crate) const TCP_PROXY_NAME: &str = "envoy.filters.network.tcp_proxy";
/// Envoy's name for the router HTTP filter.
pub(crate) const ROUTER_NAME: &str = "envoy.filters.http.router";

/// `ads: {}` with the v3 resource API.
pub(crate) fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

/// A protobuf duration from nanoseconds (negative values clamp to zero).
pub(crate) fn duration_nanos(nanos: i128) -> Duration {
    let nanos = nanos.max(0);
    Duration {
        seconds: i64::try_from(nanos / 1_000_000_000).unwrap_or(i64::MAX),
        nanos: (nanos % 1_000_000_000) as i32,
    }
}

/// A Go-style duration (`1.5s`), if it parses.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    meshwork_config::duration::parse_nanos(text).map(duration_nanos)
}

/// A whole number of seconds.
pub(crate) fn seconds(s: i64) -> Duration {
    Duration {
        seconds: s,
        nanos: 0,
    }
}

/// `address:port` as a socket address.
pub(crate) fn socket(address: &str, port: u16) -> Address {
    Address {
        address: Some(AddressKind::SocketAddress(SocketAddress {
            address: address.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

/// A wrapped bool.
pub(crate) fn bool_value(v: bool) -> Option<BoolValue> {
    Some(BoolValue { value: v })
}

/// A wrapped u32.
pub(crate) fn u32_value(v: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value: v })
}

/// The router filter, with its typed config (gRPC clients require it).
pub(crate) fn router_filter() -> HttpFilter {
    HttpFilter {
        name: ROUTER_NAME.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack(
            &Router::default(),
        ))),
        ..Default::default()
    }
}

/// An HTTP connection manager reading routes from RDS over ADS.
pub(crate) fn hcm_rds(stat_prefix: &str, route_name: &str) -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix: stat_prefix.into(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: route_name.into(),
        })),
        http_filters: vec![router_filter()],
        ..Default::default()
    }
}

/// A network filter from a typed config.
pub(crate) fn network_filter(name: &str, config: Any) -> Filter {
    Filter {
        name: name.into(),
        config_type: Some(filter::ConfigType::TypedConfig(config)),
    }
}

/// A TCP proxy to one cluster.
pub(crate) fn tcp_proxy(stat_prefix: &str, cluster: &str) -> Filter {
    let tp = TcpProxy {
        stat_prefix: stat_prefix.into(),
        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.into())),
        ..Default::default()
    };
    network_filter(TCP_PROXY_NAME, pack(&tp))
}

/// A filter chain with one terminal filter.
pub(crate) fn chain(name: &str, matcher: Option<FilterChainMatch>, filter: Filter) -> FilterChain {
    FilterChain {
        name: name.into(),
        filter_chain_match: matcher,
        filters: vec![filter],
        ..Default::default()
    }
}

/// A header to add: `overwrite` replaces existing values, else appends.
pub(crate) fn header(name: &str, value: &str, overwrite: bool) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.into(),
            value: value.into(),
            ..Default::default()
        }),
        // APPEND_IF_EXISTS_OR_ADD = 0, OVERWRITE_IF_EXISTS_OR_ADD = 2.
        append_action: if overwrite { 2 } else { 0 },
        ..Default::default()
    }
}
