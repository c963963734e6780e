//! Bootstrap tokens: how a local workload proves who it is to the CA.
//!
//! The local mesh runtime writes one random token per workload into a file
//! the control plane reads (`--ca-tokens FILE`) and hands each sidecar its
//! own token (`--ca-token-file FILE`, sent as `authorization: Bearer …`).
//! File format, one workload per line, `#` starts a comment:
//!
//! ```text
//! <token> <namespace> <service-account>
//! ```

use std::collections::HashMap;

/// Why a token file could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// A line does not have exactly three fields.
    #[error("line {line}: expected `<token> <namespace> <service-account>`")]
    Malformed {
        /// 1-based line number.
        line: usize,
    },
}

/// Token → (namespace, service account), as issued by the mesh runtime.
#[derive(Clone, Debug, Default)]
pub struct TokenTable {
    entries: HashMap<String, (String, String)>,
}

impl TokenTable {
    /// Parses the token file format described in the module docs.
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let mut entries = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [token, ns, sa] = fields[..] else {
                return Err(TokenError::Malformed { line: i + 1 });
            };
            entries.insert(token.to_string(), (ns.to_string(), sa.to_string()));
        }
        Ok(TokenTable { entries })
    }

    /// The (namespace, service account) a token was issued to.
    pub fn lookup(&self, token: &str) -> Option<(&str, &str)> {
        self.entries
            .get(token)
            .map(|(ns, sa)| (ns.as_str(), sa.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_looks_up() {
        let t = TokenTable::parse("# tokens\nabc default order\n\nxyz shop shipping-v2\n").unwrap();
        assert_eq!(t.lookup("abc"), Some(("default", "order")));
        assert_eq!(t.lookup("xyz"), Some(("shop", "shipping-v2")));
        assert_eq!(t.lookup("nope"), None);
        assert_eq!(
            TokenTable::parse("a b\n").unwrap_err(),
            TokenError::Malformed { line: 1 }
        );
    }
}

/// A token file that is re-read when it changes (size or modification
/// time), so the mesh runtime can add workloads without restarting the CA.
#[derive(Debug)]
pub struct TokenFile {
    path: std::path::PathBuf,
    cached: std::sync::Mutex<Option<(FileStamp, std::sync::Arc<TokenTable>)>>,
}

type FileStamp = (Option<std::time::SystemTime>, u64);

impl TokenFile {
    /// Watches `path` (read on first use and whenever it changes).
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        TokenFile {
            path: path.into(),
            cached: std::sync::Mutex::new(None),
        }
    }

    /// The current table; a file that cannot be read or parsed is an error
    /// naming the file (the previous table is not used: tokens may have
    /// been revoked).
    pub fn table(&self) -> Result<std::sync::Arc<TokenTable>, String> {
        let name = self.path.display();
        let meta = std::fs::metadata(&self.path).map_err(|e| format!("{name}: {e}"))?;
        let stamp = (meta.modified().ok(), meta.len());
        let mut cached = self.cached.lock().map_err(|_| "token cache poisoned")?;
        if let Some((s, t)) = cached.as_ref()
            && *s == stamp
        {
            return Ok(t.clone());
        }
        let text = std::fs::read_to_string(&self.path).map_err(|e| format!("{name}: {e}"))?;
        let table =
            std::sync::Arc::new(TokenTable::parse(&text).map_err(|e| format!("{name}: {e}"))?);
        *cached = Some((stamp, table.clone()));
        Ok(table)
    }
}
