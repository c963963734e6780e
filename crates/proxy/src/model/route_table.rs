//! Compiled route configurations (RDS `RouteConfiguration`): the virtual
//! hosts a request's Host header chooses from, inline ones first, then
//! those that came separately through VHDS, with a domain index so that a
//! table of thousands of virtual hosts is searched without a scan.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;

use super::CompileError;
use super::route::{RouteAction, VirtualHostModel};

/// A compiled route configuration.
#[derive(Debug)]
pub struct RouteTable {
    /// The resource name.
    pub name: String,
    /// Virtual hosts: the inline ones in configuration order, then the
    /// VHDS ones by resource name.
    pub virtual_hosts: Vec<Arc<VirtualHostModel>>,
    /// How many of `virtual_hosts` are inline.
    pub inline: usize,
    /// Whether more virtual hosts come through VHDS (`vhds` is set).
    pub vhds: bool,
    /// Exact domains -> index in `virtual_hosts`.
    exact: HashMap<String, usize>,
    /// Wildcard domains, best first: (class, domain, index); class 2 is
    /// `*.suffix`, 1 `prefix.*`, 0 `*`.
    patterns: Vec<(u8, String, usize)>,
}

impl RouteTable {
    /// Compiles a `RouteConfiguration` with its inline virtual hosts.
    pub fn compile(rc: &RouteConfiguration) -> Result<Self, CompileError> {
        let virtual_hosts = rc
            .virtual_hosts
            .iter()
            .map(|vh| {
                VirtualHostModel::compile(vh)
                    .map(Arc::new)
                    .map_err(|e| format!("virtual host {:?}: {e}", vh.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::build(rc.name.clone(), virtual_hosts, rc.vhds.is_some(), None)
    }

    /// This table's inline virtual hosts followed by `vhds` (VHDS), as one
    /// new table; fails when two virtual hosts claim the same domain.
    pub fn with_vhds(
        &self,
        vhds: impl IntoIterator<Item = Arc<VirtualHostModel>>,
    ) -> Result<Self, CompileError> {
        let mut all: Vec<Arc<VirtualHostModel>> = self.virtual_hosts[..self.inline].to_vec();
        all.extend(vhds);
        Self::build(self.name.clone(), all, self.vhds, Some(self.inline))
    }

    /// The inline virtual hosts.
    pub fn inline_hosts(&self) -> &[Arc<VirtualHostModel>] {
        &self.virtual_hosts[..self.inline]
    }

    fn build(
        name: String,
        virtual_hosts: Vec<Arc<VirtualHostModel>>,
        vhds: bool,
        inline: Option<usize>,
    ) -> Result<Self, CompileError> {
        let mut exact = HashMap::new();
        let mut patterns = Vec::new();
        for (i, vh) in virtual_hosts.iter().enumerate() {
            for d in &vh.domains {
                let class = domain_class(d);
                let taken = if class == 3 {
                    exact.insert(d.clone(), i).is_some()
                } else {
                    let dup = patterns.iter().any(|(_, p, _)| p == d);
                    patterns.push((class, d.clone(), i));
                    dup
                };
                if taken {
                    return Err(format!(
                        "domain {d:?} appears in more than one virtual host"
                    ));
                }
            }
        }
        // Best first; equal ranks keep configuration order (stable sort).
        patterns.sort_by_key(|p| std::cmp::Reverse((p.0, p.1.len())));
        Ok(RouteTable {
            name,
            inline: inline.unwrap_or(virtual_hosts.len()),
            virtual_hosts,
            vhds,
            exact,
            patterns,
        })
    }

    /// Finds the virtual host for a Host header, as Envoy does: exact
    /// domain, then the longest `*.suffix`, then the longest `prefix.*`,
    /// then `*`.
    pub fn find_vhost(&self, host: &str) -> Option<&VirtualHostModel> {
        let host: Cow<'_, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(host)
        };
        if let Some(&i) = self.exact.get(host.as_ref()) {
            return Some(&self.virtual_hosts[i]);
        }
        self.patterns
            .iter()
            .find(|(class, d, _)| match class {
                2 => {
                    let suffix = &d[1..];
                    host.len() > suffix.len() && host.ends_with(suffix)
                }
                1 => {
                    let prefix = &d[..d.len() - 1];
                    host.len() > prefix.len() && host.starts_with(prefix)
                }
                _ => true,
            })
            .map(|(_, _, i)| &*self.virtual_hosts[*i])
    }

    /// Every cluster any route may forward to.
    pub fn clusters(&self) -> impl Iterator<Item = &str> {
        self.virtual_hosts
            .iter()
            .flat_map(|vh| vh.routes.iter())
            .filter_map(|r| match &r.action {
                RouteAction::Forward(f) => Some(f.clusters.names()),
                _ => None,
            })
            .flatten()
    }
}

/// 3 exact, 2 `*.suffix` (any `*` prefix), 1 `prefix*`, 0 `*`.
fn domain_class(d: &str) -> u8 {
    if d == "*" {
        0
    } else if d.starts_with('*') {
        2
    } else if d.ends_with('*') {
        1
    } else {
        3
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::route::v3::VirtualHost;

    fn vh(name: &str, domains: &[&str]) -> VirtualHost {
        VirtualHost {
            name: name.into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            ..Default::default()
        }
    }

    fn table(hosts: Vec<VirtualHost>) -> RouteTable {
        RouteTable::compile(&RouteConfiguration {
            name: "r".into(),
            virtual_hosts: hosts,
            ..Default::default()
        })
        .unwrap()
    }

    fn found<'a>(t: &'a RouteTable, host: &str) -> Option<&'a str> {
        t.find_vhost(host).map(|v| v.name.as_str())
    }

    #[test]
    fn envoy_domain_order_exact_suffix_prefix_any() {
        let t = table(vec![
            vh("any", &["*"]),
            vh("prefix", &["api.*"]),
            vh("short-suffix", &["*.com"]),
            vh("long-suffix", &["*.example.com"]),
            vh("exact", &["www.example.com", "www.example.com:80"]),
        ]);
        assert_eq!(found(&t, "WWW.Example.com"), Some("exact"));
        assert_eq!(found(&t, "www.example.com:80"), Some("exact"));
        assert_eq!(found(&t, "a.example.com"), Some("long-suffix"));
        assert_eq!(found(&t, "a.other.com"), Some("short-suffix"));
        assert_eq!(found(&t, "api.internal"), Some("prefix"));
        assert_eq!(found(&t, "x"), Some("any"));
        // `*.example.com` does not match `.example.com` itself.
        assert_eq!(found(&t, ".example.com"), Some("short-suffix"));
    }

    #[test]
    fn no_catch_all_means_no_match() {
        let t = table(vec![vh("a", &["a"])]);
        assert_eq!(found(&t, "b"), None);
    }

    #[test]
    fn duplicate_domains_are_refused_inline_and_with_vhds() {
        let err = RouteTable::compile(&RouteConfiguration {
            name: "r".into(),
            virtual_hosts: vec![vh("a", &["x"]), vh("b", &["X"])],
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.contains("more than one virtual host"), "{err}");
        let t = table(vec![vh("any", &["*"])]);
        let dup = Arc::new(VirtualHostModel::compile(&vh("v", &["*"])).unwrap());
        assert!(t.with_vhds([dup]).is_err());
    }

    #[test]
    fn vhds_hosts_follow_the_inline_ones_and_replace_earlier_vhds_ones() {
        let t = table(vec![vh("any", &["*"])]);
        let a = Arc::new(VirtualHostModel::compile(&vh("a", &["a"])).unwrap());
        let b = Arc::new(VirtualHostModel::compile(&vh("b", &["b"])).unwrap());
        let with = t.with_vhds([a.clone(), b]).unwrap();
        assert_eq!(with.inline, 1);
        assert_eq!(with.virtual_hosts.len(), 3);
        assert_eq!(found(&with, "b"), Some("b"));
        let again = with.with_vhds([a]).unwrap();
        assert_eq!(again.virtual_hosts.len(), 2);
        assert_eq!(found(&again, "b"), Some("any"));
        assert_eq!(again.inline_hosts().len(), 1);
    }
}
