//! Istio's port protocols, and how a Kubernetes Service port names one.

/// A protocol as Istio names them (`networking.istio.io` port protocols).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `HTTP` (HTTP/1.1).
    Http,
    /// `HTTP2`.
    Http2,
    /// `HTTPS`.
    Https,
    /// `GRPC`.
    Grpc,
    /// `GRPC-Web`.
    GrpcWeb,
    /// `HTTP_PROXY`.
    HttpProxy,
    /// `TCP`.
    Tcp,
    /// `TLS`.
    Tls,
    /// `UDP`.
    Udp,
    /// `Mongo`.
    Mongo,
    /// `Redis`.
    Redis,
    /// `MySQL`.
    Mysql,
    /// Anything else.
    Unsupported,
}

impl Protocol {
    /// Parse a protocol name, case-insensitively, as Istio does.
    pub fn parse(s: &str) -> Protocol {
        match s.to_ascii_lowercase().as_str() {
            "http" => Protocol::Http,
            "http2" => Protocol::Http2,
            "https" => Protocol::Https,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "http_proxy" => Protocol::HttpProxy,
            "tcp" => Protocol::Tcp,
            "tls" => Protocol::Tls,
            "udp" => Protocol::Udp,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::Mysql,
            _ => Protocol::Unsupported,
        }
    }

    /// Whether servers with this protocol need TLS settings.
    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }

    /// Whether this protocol is HTTP-based.
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http
                | Protocol::Http2
                | Protocol::Grpc
                | Protocol::GrpcWeb
                | Protocol::HttpProxy
        )
    }

    /// The protocol of a Kubernetes Service port: its `appProtocol` when
    /// set, else its name's prefix (`http`, `http-web`, `grpc-api`…), the
    /// way Istio selects protocols. `None` means Istio falls back to
    /// protocol sniffing.
    pub fn of_service_port(
        name: Option<&str>,
        app_protocol: Option<&str>,
        l4: Option<&str>,
    ) -> Option<Protocol> {
        if l4.is_some_and(|p| p.eq_ignore_ascii_case("UDP")) {
            return Some(Protocol::Udp);
        }
        if let Some(app) = app_protocol {
            let app = match app {
                "kubernetes.io/h2c" => "http2",
                "kubernetes.io/ws" | "kubernetes.io/wss" => "http",
                other => other,
            };
            let p = Protocol::parse(app);
            if p != Protocol::Unsupported {
                return Some(p);
            }
        }
        let name = name?;
        let prefix = name.split('-').next().unwrap_or(name);
        match Protocol::parse(prefix) {
            Protocol::Unsupported => None,
            p => Some(p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Protocol;

    #[test]
    fn service_port_protocols() {
        assert_eq!(
            Protocol::of_service_port(Some("http"), None, None),
            Some(Protocol::Http)
        );
        assert_eq!(
            Protocol::of_service_port(Some("grpc-api"), None, None),
            Some(Protocol::Grpc)
        );
        assert_eq!(Protocol::of_service_port(Some("web"), None, None), None);
        assert_eq!(
            Protocol::of_service_port(Some("web"), Some("http"), None),
            Some(Protocol::Http)
        );
        assert_eq!(Protocol::of_service_port(None, None, None), None);
        assert_eq!(Protocol::parse("GRPC-Web"), Protocol::GrpcWeb);
    }
}
