//! `meshwork proxy-status`: every proxy connected to the control plane and,
//! for CDS, LDS, EDS and RDS, whether what it was sent is SYNCED (ACKed),
//! STALE (sent, not yet ACKed), NACKED or NOT SENT, with versions, as
//! `istioctl proxy-status` shows them.

use serde_json::Value;

/// The xDS types in istioctl's column order.
pub const TYPES: [&str; 4] = ["CDS", "LDS", "EDS", "RDS"];

/// `sidecar~10.88.0.2~order-0.default~default.svc.cluster.local` →
/// `order-0.default`.
pub fn proxy_name(node_id: &str) -> String {
    node_id.split('~').nth(2).unwrap_or(node_id).to_string()
}

fn short(v: &Value) -> String {
    v.as_str()
        .map(|s| s.chars().take(8).collect())
        .unwrap_or_else(|| "-".into())
}

/// One cell: `SYNCED (1a2b3c4d)`, or `NACKED: reason`.
fn cell(t: &Value) -> String {
    let state = t["state"].as_str().unwrap_or("NOT SENT");
    match state {
        "NACKED" => format!(
            "NACKED ({})",
            t["nack"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(40)
                .collect::<String>()
        ),
        "NOT SENT" => "NOT SENT".into(),
        s => format!("{s} ({})", short(&t["sent"])),
    }
}

/// The table for a `/debug/syncz` answer (connected proxies only unless
/// `all`).
pub fn table(syncz: &Value, all: bool) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    for p in syncz.as_array().into_iter().flatten() {
        let connected = p["connected"].as_bool().unwrap_or(false);
        if !connected && !all {
            continue;
        }
        let mut row = vec![proxy_name(p["proxy"].as_str().unwrap_or("?"))];
        for t in TYPES {
            row.push(cell(&p[t]));
        }
        row.push(if connected { "yes" } else { "no" }.into());
        rows.push(row);
    }
    rows.sort();
    let header = ["NAME", "CDS", "LDS", "EDS", "RDS", "CONNECTED"];
    render(&header, &rows)
}

/// Whether every connected proxy has all four types SYNCED (and there is
/// at least one).
pub fn all_synced(syncz: &Value) -> bool {
    let list: Vec<&Value> = syncz
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["connected"].as_bool().unwrap_or(false))
        .collect();
    !list.is_empty()
        && list.iter().all(|p| {
            TYPES
                .iter()
                .all(|t| p[*t]["state"].as_str() == Some("SYNCED"))
        })
}

/// A left-aligned text table.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn synced_stale_and_nacked() {
        let t = |state: &str| json!({"state": state, "sent": "0123456789abcdef", "acked": "0123456789abcdef", "nack": null});
        let syncz = json!([
            {"proxy": "sidecar~10.88.0.2~order-0.default~default.svc.cluster.local", "connected": true,
             "CDS": t("SYNCED"), "LDS": t("SYNCED"), "EDS": t("SYNCED"), "RDS": t("SYNCED")},
            {"proxy": "sidecar~10.88.0.3~inventory-0.default~default.svc.cluster.local", "connected": true,
             "CDS": t("SYNCED"), "LDS": t("STALE"), "EDS": t("SYNCED"),
             "RDS": {"state": "NACKED", "nack": "route: unknown cluster"}},
            {"proxy": "gone", "connected": false, "CDS": t("SYNCED"), "LDS": t("SYNCED"), "EDS": t("SYNCED"), "RDS": t("SYNCED")},
        ]);
        let out = table(&syncz, false);
        assert!(out.starts_with("NAME"), "{out}");
        assert!(out.contains("order-0.default"), "{out}");
        assert!(out.contains("SYNCED (01234567)"), "{out}");
        assert!(out.contains("STALE (01234567)"), "{out}");
        assert!(out.contains("NACKED (route: unknown cluster)"), "{out}");
        assert!(!out.contains("gone"), "{out}");
        assert!(!all_synced(&syncz));
        let ok = json!([syncz[0].clone()]);
        assert!(all_synced(&ok));
        assert!(!all_synced(&json!([])));
    }
}
