//! Header handling shared by the request path: hop-by-hop headers, the
//! request's authority, and locally generated replies that say why.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use meshwork_telemetry::ResponseFlag;

use crate::body::{self, ProxyBody};

/// The header that carries the reason of a locally generated error.
pub const REASON_HEADER: &str = "x-meshwork-reason";
/// `x-request-id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `x-forwarded-proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `x-envoy-upstream-service-time`.
pub static X_UPSTREAM_SERVICE_TIME: HeaderName =
    HeaderName::from_static("x-envoy-upstream-service-time");
/// Istio's peer metadata exchange headers.
pub static X_PEER_METADATA: HeaderName = HeaderName::from_static("x-envoy-peer-metadata");
/// The peer's node id.
pub static X_PEER_METADATA_ID: HeaderName = HeaderName::from_static("x-envoy-peer-metadata-id");
/// gRPC's status, in trailers (or headers of a trailers-only response).
/// Lookups by a `HeaderName` skip parsing and validating the name, which a
/// `&str` key costs on every call.
pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// Headers the forwarding path adds to a request once its head is parsed
/// (`x-request-id`, `x-forwarded-proto`, the two peer metadata headers).
/// Parsers size header maps with room for them, which saves a rehash per
/// request; no more than that, as a map past 6 entries is past glibc's
/// per-thread cache sizes and costs more to allocate than a rehash.
pub const REQUEST_HEADERS_ADDED: usize = 4;

/// Headers the forwarding path adds to a response (the two peer metadata
/// headers, `x-envoy-upstream-service-time`); see `REQUEST_HEADERS_ADDED`.
pub const RESPONSE_HEADERS_ADDED: usize = 3;

/// The `HeaderName` of a regular HPACK static-table entry (RFC 7541
/// Appendix A), made once: a decoded field whose name came from the table
/// skips parsing. `None` for pseudo-headers and indices out of range.
fn hpack_static_name(index: u8) -> Option<HeaderName> {
    static NAMES: std::sync::OnceLock<Vec<Option<HeaderName>>> = std::sync::OnceLock::new();
    let names = NAMES.get_or_init(|| {
        (0..=meshwork_hpack::static_table::LEN)
            .map(|i| {
                let (name, _) = meshwork_hpack::static_table::get(i)?;
                if name.starts_with(b":") {
                    return None;
                }
                HeaderName::from_bytes(name).ok()
            })
            .collect()
    });
    names.get(usize::from(index))?.clone()
}

/// A decoded HTTP/2 field's regular name: the static table's, ready-made,
/// or parsed. Refused, with why, when uppercase, invalid or
/// connection-specific (RFC 9113 §8.2.1-8.2.2); the HTTP/2 server and
/// the upstream client check the same.
pub fn h2_field_name(f: &meshwork_hpack::Field<'_>) -> Result<HeaderName, &'static str> {
    let name = match f.static_index.and_then(hpack_static_name) {
        Some(name) => name,
        None if f.name.iter().any(u8::is_ascii_uppercase) => return Err("uppercase header name"),
        None => HeaderName::from_bytes(f.name).map_err(|_| "invalid header name")?,
    };
    if is_connection_specific(&name) {
        return Err("connection-specific header");
    }
    Ok(name)
}

/// The header map of a decoded HTTP/2 block: names with their values'
/// ranges in `arena` (one buffer per block, sliced, not one allocation per
/// value), emptying `fields`. A value the peer sent "never indexed" stays
/// sensitive (RFC 7541 §6.2.3); `extra` is room for headers added later.
/// `None` when a value is not a valid header value.
pub fn h2_header_map(
    fields: &mut Vec<(HeaderName, std::ops::Range<usize>, bool)>,
    arena: &bytes::Bytes,
    extra: usize,
) -> Option<HeaderMap> {
    let mut map = HeaderMap::with_capacity(fields.len() + extra);
    for (name, range, never_indexed) in fields.drain(..) {
        let mut value = HeaderValue::from_maybe_shared(arena.slice(range)).ok()?;
        value.set_sensitive(never_indexed);
        map.append(name, value);
    }
    Some(map)
}

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether `name` belongs to one connection: `connection`,
/// `transfer-encoding`, `upgrade`, `keep-alive`, `proxy-connection` (RFC
/// 9110 7.6.1; the fields RFC 9113 §8.2.2 forbids in HTTP/2, where `te` is
/// checked apart).
pub fn is_connection_specific(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Headers that belong to one connection and are never forwarded (RFC 9110
/// 7.6.1), plus those named by `Connection`. `te: trailers` survives (gRPC).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names first: most messages carry none of these
    // (a gRPC request only `te`), and each lookup by name hashes it.
    let (mut connection, mut te, mut others) = (false, false, false);
    for k in headers.keys() {
        if k == header::CONNECTION {
            connection = true;
        } else if k == header::TE {
            te = true;
        } else if is_connection_specific(k) {
            others = true;
        }
    }
    if connection {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .filter(|n| !(keep_upgrade && n == header::UPGRADE))
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    if connection || others {
        // Static names: no parsing per request.
        for n in [&KEEP_ALIVE, &PROXY_CONNECTION, &header::TRANSFER_ENCODING] {
            headers.remove(n);
        }
        if !keep_upgrade {
            headers.remove(header::CONNECTION);
            headers.remove(header::UPGRADE);
        }
    }
    if te {
        strip_te(headers);
    }
}

/// `te` keeps only `trailers` (what gRPC sends); a lone `te: trailers`,
/// the common case, is left in place. Any other spelling is rewritten in
/// lower case: HTTP/2 accepts `te` only with exactly that value.
fn strip_te(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::TE).iter();
    let (first, more) = (values.next(), values.next().is_some());
    let Some(first) = first else {
        // `Connection: te` removed it.
        return;
    };
    if !more && first.as_bytes() == b"trailers" {
        return;
    }
    let te_trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Gives the request an `x-request-id` (a new one when it has none, as
/// Envoy does) and marks it sensitive, which HPACK sends as "never
/// indexed": a value seen once, generated here or forwarded, would
/// otherwise enter the HTTP/2 encoder's table on every request, evicting
/// entries that do repeat and lengthening the chain of `x-request-id`
/// values each later lookup compares against.
pub fn ensure_request_id(headers: &mut HeaderMap) {
    // One lookup (the name hashed once) whether it is there or not.
    match headers.entry(&X_REQUEST_ID) {
        header::Entry::Occupied(mut e) => e.get_mut().set_sensitive(true),
        header::Entry::Vacant(e) => {
            let mut v = request_id_value();
            v.set_sensitive(true);
            e.insert(v);
        }
    }
}

/// Removes both peer metadata headers. One pass over the names first,
/// which is cheaper than removing by name (each removal hashes the name,
/// present or not) when, as usual, neither is there.
pub fn strip_peer_metadata(headers: &mut HeaderMap) {
    if headers
        .keys()
        .any(|k| k == X_PEER_METADATA || k == X_PEER_METADATA_ID)
    {
        headers.remove(&X_PEER_METADATA);
        headers.remove(&X_PEER_METADATA_ID);
    }
}

/// A random `x-request-id` in UUID v4 form, formatted into one stack
/// buffer (no intermediate strings on the request path).
fn request_id_value() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let mut out = [0u8; 36];
    let mut j = 0;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[j] = b'-';
            j += 1;
        }
        out[j] = HEX[usize::from(byte >> 4)];
        out[j + 1] = HEX[usize::from(byte & 0xf)];
        j += 2;
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// The request's authority: `:authority` (HTTP/2, absolute URIs) or `Host`.
pub fn authority(parts: &http::request::Parts) -> Option<String> {
    parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
}

/// A locally generated reply carrying its reason in a header and the body.
pub fn local_reply(
    status: u16,
    flag: Option<ResponseFlag>,
    detail: &str,
) -> http::Response<ProxyBody> {
    let text = match (flag, detail.is_empty()) {
        (Some(f), true) => f.reason().to_string(),
        (Some(f), false) => format!("{}: {detail}", f.reason()),
        (None, _) => detail.to_string(),
    };
    let mut resp = http::Response::new(body::full(text.clone()));
    *resp.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    if let Some(f) = flag
        && let Ok(v) = HeaderValue::from_str(&format!("{} {}", f.code(), f.reason()))
    {
        h.insert(REASON_HEADER, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_table_names_map_to_their_header_names() {
        assert_eq!(hpack_static_name(28), Some(header::CONTENT_LENGTH));
        assert_eq!(hpack_static_name(58), Some(header::USER_AGENT));
        assert_eq!(
            hpack_static_name(2),
            None,
            "pseudo-headers have no HeaderName"
        );
        assert_eq!(hpack_static_name(0), None);
        assert_eq!(hpack_static_name(62), None);
    }

    #[test]
    fn hop_by_hop_removed_te_trailers_kept() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TE, "trailers, deflate".parse().unwrap());
        h.insert("x-app", "1".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("x-secret").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
        assert_eq!(h.get("x-app").unwrap(), "1");
    }

    #[test]
    fn te_keeps_only_trailers() {
        let te = |values: &[&str], connection: Option<&str>| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::TE, v.parse().unwrap());
            }
            if let Some(c) = connection {
                h.insert(header::CONNECTION, c.parse().unwrap());
            }
            strip_hop_by_hop(&mut h, false);
            let got: Vec<_> = h.get_all(header::TE).iter().cloned().collect();
            assert!(h.get(header::CONNECTION).is_none());
            got
        };
        assert_eq!(te(&["trailers"], None), ["trailers"], "gRPC's, as it is");
        // HTTP/2 takes only the exact lower-case value.
        assert_eq!(te(&["Trailers"], None), ["trailers"]);
        assert_eq!(te(&["gzip", "trailers"], None), ["trailers"]);
        assert_eq!(te(&["gzip"], None), [] as [HeaderValue; 0]);
        assert_eq!(te(&["trailers"], Some("te")), [] as [HeaderValue; 0]);
    }

    #[test]
    fn each_hop_by_hop_name_alone_is_removed() {
        for name in [
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
            "connection",
            "te",
        ] {
            let mut h = HeaderMap::new();
            h.insert(HeaderName::from_static(name), "x".parse().unwrap());
            h.insert("x-app", "1".parse().unwrap());
            strip_hop_by_hop(&mut h, false);
            assert!(h.get(name).is_none(), "{name}");
            assert_eq!(h.len(), 1, "{name}");
        }
    }

    #[test]
    fn upgrade_kept_for_tunnels() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
        assert!(h.get(header::CONNECTION).is_some());
    }

    #[test]
    fn local_reply_says_why() {
        let r = local_reply(503, Some(ResponseFlag::NoHealthyUpstream), "");
        assert_eq!(r.status(), 503);
        assert!(
            r.headers()[REASON_HEADER]
                .to_str()
                .unwrap()
                .starts_with("UH ")
        );
    }

    #[test]
    fn request_ids_are_kept_or_made_and_never_indexed() {
        let mut h = HeaderMap::new();
        ensure_request_id(&mut h);
        let made = h.get(&X_REQUEST_ID).unwrap();
        assert_eq!(made.len(), 36);
        assert!(made.is_sensitive(), "never indexed by HPACK");
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID.clone(), HeaderValue::from_static("abc"));
        ensure_request_id(&mut h);
        let kept = h.get(&X_REQUEST_ID).unwrap();
        assert_eq!(kept, "abc");
        assert!(kept.is_sensitive());
    }

    #[test]
    fn peer_metadata_is_removed_under_either_name() {
        let mut h = HeaderMap::new();
        h.insert("x-app", "1".parse().unwrap());
        strip_peer_metadata(&mut h);
        assert_eq!(h.len(), 1, "nothing else removed");
        for name in [&X_PEER_METADATA, &X_PEER_METADATA_ID] {
            let mut h = HeaderMap::new();
            h.insert("x-app", "1".parse().unwrap());
            h.insert(name.clone(), "m".parse().unwrap());
            strip_peer_metadata(&mut h);
            assert!(h.get(name).is_none(), "{name}");
            assert_eq!(h.get("x-app").unwrap(), "1");
        }
        let mut h = HeaderMap::new();
        h.insert(X_PEER_METADATA.clone(), "m".parse().unwrap());
        h.insert(X_PEER_METADATA_ID.clone(), "id".parse().unwrap());
        strip_peer_metadata(&mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn request_ids_are_uuid_v4() {
        let a = request_id_value();
        let b = request_id_value();
        assert_ne!(a, b);
        let s = a.to_str().unwrap();
        let groups: Vec<&str> = s.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(s.bytes().all(|c| c == b'-' || c.is_ascii_hexdigit()));
        assert!(groups[2].starts_with('4'), "{s}");
        assert!(
            matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'),
            "{s}"
        );
    }
}
