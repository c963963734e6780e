use super::*;
use crate::response_flags::ResponseFlag;
use std::time::Instant;

/// A writer into a shared buffer.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn lines(&self) -> Vec<serde_json::Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
            .collect()
    }
}

/// A writer that blocks until `gate` is closed, telling `entered` first.
struct Gated {
    inner: Shared,
    entered: mpsc::Sender<()>,
    gate: Mutex<Receiver<()>>,
}

impl Write for Gated {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = self.entered.send(());
        let _ = self.gate.lock().unwrap().recv();
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn at(secs: u64, millis: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
}

#[test]
fn rfc3339_formatting() {
    assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    assert_eq!(
        rfc3339_millis(at(1_700_000_000, 123)),
        "2023-11-14T22:13:20.123Z"
    );
    assert_eq!(
        rfc3339_millis(at(951_782_400, 5)),
        "2000-02-29T00:00:00.005Z"
    );
    assert_eq!(
        rfc3339_millis(at(1_709_251_199, 999)),
        "2024-02-29T23:59:59.999Z"
    );
    assert_eq!(
        rfc3339_millis(at(4_102_444_800, 0)),
        "2100-01-01T00:00:00.000Z"
    );
    let before = UNIX_EPOCH - Duration::from_secs(10);
    assert_eq!(rfc3339_millis(before), "1970-01-01T00:00:00.000Z");
    assert_eq!(
        LogTime::from(at(0, 1)).to_string(),
        "1970-01-01T00:00:00.001Z"
    );
}

#[test]
fn writes_one_json_line_per_entry() {
    let buf = Shared::default();
    let log = AccessLogger::to_writer(buf.clone());
    assert!(log.is_enabled());
    let http = AccessLogEntry {
        start_time: at(1_700_000_000, 42).into(),
        method: Some("GET".into()),
        path: Some("/status/200\n\"x\"".into()),
        protocol: Some("HTTP/1.1".into()),
        response_code: 503,
        response_flags: ResponseFlag::UpstreamConnectionFailure.into(),
        duration: 12,
        upstream_service_time: Some(10),
        upstream_cluster: Some("outbound|8000||httpbin.default.svc.cluster.local".into()),
        ..Default::default()
    };
    log.log(http);
    log.log(AccessLogEntry {
        bytes_received: 5,
        bytes_sent: 7,
        ..Default::default()
    });
    log.clone().log(AccessLogEntry::default());
    log.flush();

    let lines = buf.lines();
    assert_eq!(lines.len(), 3);
    let first = &lines[0];
    assert_eq!(first["start_time"], "2023-11-14T22:13:20.042Z");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/status/200\n\"x\"");
    assert_eq!(first["response_code"], 503);
    assert_eq!(first["response_flags"], "UF");
    assert_eq!(first["upstream_service_time"], 10);
    assert_eq!(first["duration"], 12);
    let tcp = lines[1].as_object().unwrap();
    assert_eq!(tcp["response_flags"], "-");
    assert_eq!(tcp["bytes_sent"], 7);
    let mut keys: Vec<&str> = tcp.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "bytes_received",
            "bytes_sent",
            "duration",
            "response_code",
            "response_flags",
            "start_time"
        ]
    );
    assert_eq!(log.dropped(), 0);
}

#[test]
fn full_queue_drops_without_blocking() {
    let buf = Shared::default();
    let (entered_tx, entered_rx) = mpsc::channel();
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let writer = Gated {
        inner: buf.clone(),
        entered: entered_tx,
        gate: Mutex::new(gate_rx),
    };
    // No BufWriter capacity can hide the block: the gate is on every write.
    let log = AccessLogger::with_capacity(writer, 4);
    log.log(AccessLogEntry::default());
    entered_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("writer picked up the first entry");

    let started = Instant::now();
    for _ in 0..10 {
        log.log(AccessLogEntry::default());
    }
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "log blocked"
    );
    assert_eq!(log.dropped(), 6);
    assert_eq!(log.clone().dropped(), 6);

    drop(gate_tx); // open the gate: writes go through from now on
    log.flush();
    assert_eq!(buf.lines().len(), 5);
}

#[test]
fn disabled_discards() {
    let log = AccessLogger::disabled();
    assert!(!log.is_enabled());
    log.log(AccessLogEntry::default());
    let started = Instant::now();
    log.flush();
    assert!(started.elapsed() < Duration::from_millis(100));
    assert_eq!(log.dropped(), 0);
}

#[test]
fn flush_is_bounded_when_writer_is_stuck() {
    let (entered_tx, _entered_rx) = mpsc::channel();
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let writer = Gated {
        inner: Shared::default(),
        entered: entered_tx,
        gate: Mutex::new(gate_rx),
    };
    let log = AccessLogger::with_capacity(writer, 4);
    log.log(AccessLogEntry::default());
    let started = Instant::now();
    log.flush();
    let waited = started.elapsed();
    assert!(
        waited >= FLUSH_BOUND && waited < FLUSH_BOUND * 3,
        "{waited:?}"
    );
    drop(gate_tx);
}
