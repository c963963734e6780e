//! Envoy's response flags: the short codes (`UF`, `UH`, `NR` …) that say why
//! a request or connection ended the way it did. They appear in the
//! `response_flags` metric label and in the access log.

use std::fmt;

/// One Envoy response flag. The discriminant is the flag's bit in
/// [`ResponseFlags`]; the order is Envoy's, which fixes the display order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ResponseFlag {
    /// `LH`: the local service failed its health check.
    FailedLocalHealthCheck = 0,
    /// `UH`: no healthy upstream host in the cluster.
    NoHealthyUpstream,
    /// `UT`: upstream request timeout.
    UpstreamRequestTimeout,
    /// `LR`: connection reset locally.
    LocalReset,
    /// `UR`: upstream remote reset.
    UpstreamRemoteReset,
    /// `UF`: upstream connection failure.
    UpstreamConnectionFailure,
    /// `UC`: upstream connection termination.
    UpstreamConnectionTermination,
    /// `UO`: upstream overflow (circuit breaking).
    UpstreamOverflow,
    /// `NR`: no route configured (or no matching filter chain).
    NoRouteFound,
    /// `DI`: the request was delayed by fault injection.
    DelayInjected,
    /// `FI`: the request was aborted by fault injection.
    FaultInjected,
    /// `RL`: rate limited locally.
    RateLimited,
    /// `UAEX`: denied by the external authorization service.
    UnauthorizedExternalService,
    /// `RLSE`: rate limit service error.
    RateLimitServiceError,
    /// `DC`: downstream connection termination.
    DownstreamConnectionTermination,
    /// `URX`: upstream retry limit (or TCP connect attempts) exceeded.
    UpstreamRetryLimitExceeded,
    /// `SI`: stream idle timeout.
    StreamIdleTimeout,
    /// `IH`: invalid value in an `x-envoy-*` request header.
    InvalidEnvoyRequestHeaders,
    /// `DPE`: downstream protocol error.
    DownstreamProtocolError,
    /// `UMSDR`: upstream max stream duration reached.
    UpstreamMaxStreamDurationReached,
    /// `RFCF`: response served from the cache filter.
    ResponseFromCacheFilter,
    /// `NFCF`: no filter config found.
    NoFilterConfigFound,
    /// `DT`: request or connection exceeded its max duration.
    DurationTimeout,
    /// `UPE`: upstream protocol error.
    UpstreamProtocolError,
    /// `NC`: no cluster found for the route.
    NoClusterFound,
    /// `OM`: rejected by the overload manager.
    OverloadManager,
    /// `DF`: DNS resolution failed.
    DnsResolutionFailed,
    /// `DO`: dropped by drop-overload (load shedding).
    DropOverload,
    /// `DR`: downstream remote reset.
    DownstreamRemoteReset,
    /// `UDO`: unconditional drop overload.
    UnconditionalDropOverload,
}

// === impl ResponseFlag ===

impl ResponseFlag {
    /// Every flag, in Envoy's order.
    pub const ALL: [ResponseFlag; 30] = {
        use ResponseFlag::*;
        [
            FailedLocalHealthCheck,
            NoHealthyUpstream,
            UpstreamRequestTimeout,
            LocalReset,
            UpstreamRemoteReset,
            UpstreamConnectionFailure,
            UpstreamConnectionTermination,
            UpstreamOverflow,
            NoRouteFound,
            DelayInjected,
            FaultInjected,
            RateLimited,
            UnauthorizedExternalService,
            RateLimitServiceError,
            DownstreamConnectionTermination,
            UpstreamRetryLimitExceeded,
            StreamIdleTimeout,
            InvalidEnvoyRequestHeaders,
            DownstreamProtocolError,
            UpstreamMaxStreamDurationReached,
            ResponseFromCacheFilter,
            NoFilterConfigFound,
            DurationTimeout,
            UpstreamProtocolError,
            NoClusterFound,
            OverloadManager,
            DnsResolutionFailed,
            DropOverload,
            DownstreamRemoteReset,
            UnconditionalDropOverload,
        ]
    };

    /// Envoy's short code, e.g. `"UF"`.
    pub fn code(&self) -> &'static str {
        self.info().0
    }

    /// A short human-readable reason, e.g. `"upstream connection failure"`.
    pub fn reason(&self) -> &'static str {
        self.info().1
    }

    /// The flag for a short code (`"UF"`), if any.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.code() == code)
    }

    fn info(&self) -> (&'static str, &'static str) {
        use ResponseFlag::*;
        match self {
            FailedLocalHealthCheck => ("LH", "local service failed health check"),
            NoHealthyUpstream => ("UH", "no healthy upstream"),
            UpstreamRequestTimeout => ("UT", "upstream request timeout"),
            LocalReset => ("LR", "connection local reset"),
            UpstreamRemoteReset => ("UR", "upstream remote reset"),
            UpstreamConnectionFailure => ("UF", "upstream connection failure"),
            UpstreamConnectionTermination => ("UC", "upstream connection termination"),
            UpstreamOverflow => ("UO", "upstream overflow (circuit breaking)"),
            NoRouteFound => ("NR", "no route found"),
            DelayInjected => ("DI", "delay injected"),
            FaultInjected => ("FI", "fault injected"),
            RateLimited => ("RL", "rate limited"),
            UnauthorizedExternalService => ("UAEX", "unauthorized by external service"),
            RateLimitServiceError => ("RLSE", "rate limit service error"),
            DownstreamConnectionTermination => ("DC", "downstream connection termination"),
            UpstreamRetryLimitExceeded => ("URX", "upstream retry limit exceeded"),
            StreamIdleTimeout => ("SI", "stream idle timeout"),
            InvalidEnvoyRequestHeaders => ("IH", "invalid request header"),
            DownstreamProtocolError => ("DPE", "downstream protocol error"),
            UpstreamMaxStreamDurationReached => ("UMSDR", "upstream max stream duration reached"),
            ResponseFromCacheFilter => ("RFCF", "response from cache filter"),
            NoFilterConfigFound => ("NFCF", "no filter config found"),
            DurationTimeout => ("DT", "max duration exceeded"),
            UpstreamProtocolError => ("UPE", "upstream protocol error"),
            NoClusterFound => ("NC", "no cluster found"),
            OverloadManager => ("OM", "overload manager"),
            DnsResolutionFailed => ("DF", "dns resolution failure"),
            DropOverload => ("DO", "drop overload"),
            DownstreamRemoteReset => ("DR", "downstream remote reset"),
            UnconditionalDropOverload => ("UDO", "unconditional drop overload"),
        }
    }
}

impl fmt::Display for ResponseFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A set of [`ResponseFlag`]s (a `u32` bitset, `Copy`, no allocation).
///
/// Displays as Envoy does: codes joined by `,` in Envoy's order, or `-` when
/// empty. Serializes as that string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ResponseFlags(u32);

// === impl ResponseFlags ===

impl ResponseFlags {
    /// The empty set.
    pub const fn new() -> Self {
        Self(0)
    }

    /// Adds a flag.
    pub fn insert(&mut self, flag: ResponseFlag) {
        self.0 |= 1 << flag as u32;
    }

    /// Returns this set with `flag` added.
    pub fn with(mut self, flag: ResponseFlag) -> Self {
        self.insert(flag);
        self
    }

    /// Whether `flag` is set.
    pub fn contains(&self, flag: ResponseFlag) -> bool {
        self.0 & (1 << flag as u32) != 0
    }

    /// Whether no flag is set.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The flags that are set, in Envoy's order.
    pub fn iter(&self) -> impl Iterator<Item = ResponseFlag> + '_ {
        ResponseFlag::ALL.into_iter().filter(|f| self.contains(*f))
    }

    /// The first flag's reason, or `None` when empty (for a reason header).
    pub fn reason(&self) -> Option<&'static str> {
        self.iter().next().map(|f| f.reason())
    }
}

impl From<ResponseFlag> for ResponseFlags {
    fn from(flag: ResponseFlag) -> Self {
        Self::new().with(flag)
    }
}

impl FromIterator<ResponseFlag> for ResponseFlags {
    fn from_iter<I: IntoIterator<Item = ResponseFlag>>(iter: I) -> Self {
        iter.into_iter().fold(Self::new(), Self::with)
    }
}

impl fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        for (i, flag) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(flag.code())?;
        }
        Ok(())
    }
}

impl serde::Serialize for ResponseFlags {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_displays_dash() {
        let flags = ResponseFlags::new();
        assert!(flags.is_empty());
        assert_eq!(flags.to_string(), "-");
        assert_eq!(flags.reason(), None);
    }

    #[test]
    fn display_uses_envoy_order() {
        let mut flags = ResponseFlags::default();
        flags.insert(ResponseFlag::UpstreamRetryLimitExceeded);
        flags.insert(ResponseFlag::UpstreamConnectionFailure);
        assert!(!flags.is_empty());
        assert!(flags.contains(ResponseFlag::UpstreamConnectionFailure));
        assert!(!flags.contains(ResponseFlag::NoRouteFound));
        assert_eq!(flags.to_string(), "UF,URX");
        assert_eq!(flags.reason(), Some("upstream connection failure"));
        assert_eq!(
            serde_json::to_string(&flags).unwrap(),
            "\"UF,URX\"".to_string()
        );
    }

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for (i, flag) in ResponseFlag::ALL.into_iter().enumerate() {
            assert_eq!(flag as usize, i, "ALL must follow discriminant order");
            assert!(seen.insert(flag.code()), "duplicate code {}", flag.code());
            assert_eq!(ResponseFlag::from_code(flag.code()), Some(flag));
            assert!(!flag.reason().is_empty());
        }
        assert_eq!(ResponseFlag::from_code("nope"), None);
        assert_eq!(ResponseFlag::NoHealthyUpstream.code(), "UH");
        assert_eq!(ResponseFlag::NoRouteFound.reason(), "no route found");
    }

    #[test]
    fn all_flags_display() {
        let all: ResponseFlags = ResponseFlag::ALL.into_iter().collect();
        let shown = all.to_string();
        assert!(shown.starts_with("LH,UH,UT,LR,UR,UF,UC,UO,NR,"));
        assert!(shown.ends_with(",DF,DO,DR,UDO"));
        assert_eq!(shown.split(',').count(), 30);
    }
}
