//! Protocol detection from a connection's first bytes, without consuming
//! them: TLS (with SNI and ALPN from the ClientHello), HTTP/2 prior knowledge
//! (h2c), HTTP/1.x, or else opaque TCP. The wait is bounded so server-first
//! protocols (MySQL, SMTP), whose clients send nothing first, are not stalled.

use std::time::Duration;

use tokio::net::TcpStream;

/// What the first bytes say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Detected {
    /// A TLS ClientHello.
    Tls {
        /// Server name indication.
        sni: Option<String>,
        /// ALPN protocols offered.
        alpn: Vec<String>,
    },
    /// HTTP/2 connection preface.
    H2c,
    /// An HTTP/1.x request line.
    Http1,
    /// Anything else, or nothing within the wait.
    Opaque,
}

impl Detected {
    /// Envoy's transport protocol name (`tls` or `raw_buffer`).
    pub fn transport(&self) -> &'static str {
        match self {
            Detected::Tls { .. } => "tls",
            _ => "raw_buffer",
        }
    }

    /// The application protocol as Envoy's inspectors name it.
    pub fn application(&self) -> Option<String> {
        match self {
            Detected::Tls { alpn, .. } => alpn.first().cloned(),
            Detected::H2c => Some("h2c".into()),
            Detected::Http1 => Some("http/1.1".into()),
            Detected::Opaque => None,
        }
    }
}

/// The verdict on a prefix of bytes: decided, or more bytes needed.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Decided.
    Done(Detected),
    /// The bytes so far are a prefix of something recognisable.
    NeedMore,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const METHODS: &[&[u8]] = &[
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"CONNECT ",
    b"OPTIONS ",
    b"TRACE ",
    b"PATCH ",
    b"PROPFIND ",
    b"PROPPATCH ",
    b"MKCOL ",
    b"COPY ",
    b"MOVE ",
    b"LOCK ",
    b"UNLOCK ",
];
/// The most bytes detection ever looks at (a large ClientHello).
pub const MAX_PEEK: usize = 16 * 1024;

/// Classifies a prefix of a connection's bytes. Pure: never panics on any
/// input (it is fuzzed).
pub fn classify(buf: &[u8]) -> Verdict {
    if buf.is_empty() {
        return Verdict::NeedMore;
    }
    if buf[0] == 0x16 {
        return classify_tls(buf);
    }
    if is_prefix_of(buf, H2_PREFACE) {
        return if buf.len() >= H2_PREFACE.len() {
            Verdict::Done(Detected::H2c)
        } else {
            Verdict::NeedMore
        };
    }
    let mut maybe = false;
    for m in METHODS {
        if buf.len() >= m.len() && buf.starts_with(m) {
            return Verdict::Done(Detected::Http1);
        }
        if is_prefix_of(buf, m) {
            maybe = true;
        }
    }
    if maybe {
        Verdict::NeedMore
    } else {
        Verdict::Done(Detected::Opaque)
    }
}

fn is_prefix_of(buf: &[u8], pattern: &[u8]) -> bool {
    let n = buf.len().min(pattern.len());
    buf[..n] == pattern[..n]
}

fn classify_tls(buf: &[u8]) -> Verdict {
    // Record header: type 0x16, version 0x03 0x0X, length.
    if buf.len() < 5 {
        return if buf.len() < 2 || buf[1] == 0x03 {
            Verdict::NeedMore
        } else {
            Verdict::Done(Detected::Opaque)
        };
    }
    if buf[1] != 0x03 {
        return Verdict::Done(Detected::Opaque);
    }
    let record_len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    if buf.len() < 5 + record_len && buf.len() < MAX_PEEK {
        return Verdict::NeedMore;
    }
    let mut acceptor = rustls::server::Acceptor::default();
    let mut reader: &[u8] = buf;
    while !reader.is_empty() {
        match acceptor.read_tls(&mut reader) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => {
            let hello = accepted.client_hello();
            let sni = hello.server_name().map(str::to_string);
            let alpn = hello
                .alpn()
                .map(|it| {
                    it.map(|p| String::from_utf8_lossy(p).into_owned())
                        .collect()
                })
                .unwrap_or_default();
            Verdict::Done(Detected::Tls { sni, alpn })
        }
        // A ClientHello split over several records, or not a ClientHello.
        Ok(None) if buf.len() < MAX_PEEK => Verdict::NeedMore,
        _ => Verdict::Done(Detected::Tls {
            sni: None,
            alpn: Vec::new(),
        }),
    }
}

/// Peeks at a connection until its protocol is known, the peer stops
/// sending, or `timeout` passes (then: opaque TCP).
pub async fn detect(stream: &TcpStream, timeout: Duration) -> Detected {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; 1024];
    let mut last_len = usize::MAX;
    loop {
        let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await;
        let n = match peeked {
            Err(_) | Ok(Err(_)) | Ok(Ok(0)) => return Detected::Opaque,
            Ok(Ok(n)) => n,
        };
        match classify(&buf[..n]) {
            Verdict::Done(d) => return d,
            Verdict::NeedMore if n == buf.len() && buf.len() < MAX_PEEK => {
                buf.resize((buf.len() * 4).min(MAX_PEEK), 0);
            }
            Verdict::NeedMore => {
                if n == last_len {
                    // peek returns at once while data is buffered: wait for more.
                    if tokio::time::timeout_at(deadline, stream.readable())
                        .await
                        .is_err()
                    {
                        return Detected::Opaque;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                last_len = n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http1_and_prefixes() {
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\n"),
            Verdict::Done(Detected::Http1)
        );
        assert_eq!(classify(b"GE"), Verdict::NeedMore);
        assert_eq!(
            classify(b"OPTIONS * HTTP/1.1"),
            Verdict::Done(Detected::Http1)
        );
        assert_eq!(classify(b"GEX"), Verdict::Done(Detected::Opaque));
    }

    #[test]
    fn h2_preface() {
        assert_eq!(classify(H2_PREFACE), Verdict::Done(Detected::H2c));
        assert_eq!(classify(&H2_PREFACE[..10]), Verdict::NeedMore);
        // "P" is also a prefix of PUT/PATCH/PROPFIND; "PRI" only of the preface.
        assert_eq!(classify(b"PRX"), Verdict::Done(Detected::Opaque));
    }

    #[test]
    fn opaque_binary() {
        assert_eq!(
            classify(&[0x00, 0x01, 0x02]),
            Verdict::Done(Detected::Opaque)
        );
        assert_eq!(classify(b"\x16\x01"), Verdict::Done(Detected::Opaque));
    }

    #[test]
    fn tls_client_hello_sni() {
        let hello = client_hello("svc.example.com");
        match classify(&hello) {
            Verdict::Done(Detected::Tls { sni, alpn }) => {
                assert_eq!(sni.as_deref(), Some("svc.example.com"));
                assert_eq!(alpn, vec!["h2".to_string(), "http/1.1".to_string()]);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(classify(&hello[..20]), Verdict::NeedMore);
    }

    /// A real ClientHello produced by rustls.
    pub(crate) fn client_hello(name: &str) -> Vec<u8> {
        let roots = rustls::RootCertStore::empty();
        let mut config = rustls::ClientConfig::builder_with_provider(
            rustls::crypto::ring::default_provider().into(),
        )
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let server = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), server).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }
}
