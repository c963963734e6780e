//! Delegate VirtualServices: a root route with `delegate: {name, namespace}`
//! is replaced by the delegate's HTTP routes, each merged under the root
//! route's match conditions with Istio's rules (`mergeHTTPRoute`): a
//! delegate match must narrow a root match, else that route is dropped.

use std::borrow::Cow;
use std::collections::BTreeMap;

use meshwork_config::Spec;
use meshwork_config::model::istio::{HttpMatchRequest, HttpRoute, StringMatch};

use crate::snapshot::{MeshSnapshot, VsRef, exported};

/// The HTTP routes of `vs` with delegates expanded, each with the
/// namespace its destinations are resolved in.
pub(crate) fn expanded<'a>(
    snap: &'a MeshSnapshot,
    vs: &VsRef<'a>,
) -> Vec<(Cow<'a, HttpRoute>, &'a str)> {
    let mut out = Vec::new();
    for rule in &vs.vs.http {
        let Some(d) = &rule.delegate else {
            out.push((Cow::Borrowed(rule), vs.namespace));
            continue;
        };
        let Some(name) = d.name.as_deref() else {
            continue;
        };
        let ns = d.namespace.as_deref().unwrap_or(vs.namespace);
        let Some((delegate_ns, delegate)) = find(snap, name, ns, vs.namespace) else {
            continue;
        };
        for leaf in &delegate.http {
            // Istio supports one level of delegation.
            if leaf.delegate.is_some() {
                continue;
            }
            if let Some(merged) = merge_route(rule, leaf) {
                out.push((Cow::Owned(merged), delegate_ns));
            }
        }
    }
    out
}

/// The delegate VirtualService `ns/name`, if it is visible to the root's namespace.
fn find<'a>(
    snap: &'a MeshSnapshot,
    name: &str,
    ns: &str,
    root_ns: &str,
) -> Option<(&'a str, &'a meshwork_config::model::istio::VirtualService)> {
    snap.resources().iter().find_map(|r| match &r.spec {
        Spec::VirtualService(v)
            if r.name() == name
                && r.namespace() == ns
                && exported(&v.export_to, r.namespace(), root_ns) =>
        {
            Some((r.namespace(), &**v))
        }
        _ => None,
    })
}

/// Istio's `mergeHTTPRoute`: the leaf's fields, with the root's where the
/// leaf has none; `None` when the matches conflict.
pub(crate) fn merge_route(root: &HttpRoute, leaf: &HttpRoute) -> Option<HttpRoute> {
    let mut out = leaf.clone();
    out.r#match = merge_matches(&root.r#match, &leaf.r#match)?;
    out.name = match (&root.name, &leaf.name) {
        (Some(r), Some(l)) => Some(format!("{r}-{l}")),
        (r, l) => l.clone().or_else(|| r.clone()),
    };
    macro_rules! inherit {
        ($($f:ident),*) => { $( if out.$f.is_none() { out.$f = root.$f.clone(); } )* };
    }
    inherit!(
        rewrite,
        timeout,
        retries,
        fault,
        mirror,
        mirror_percent,
        mirror_percent_alt,
        mirror_percentage,
        cors_policy,
        headers
    );
    if out.mirrors.is_empty() {
        out.mirrors = root.mirrors.clone();
    }
    Some(out)
}

fn merge_matches(
    root: &[HttpMatchRequest],
    leaf: &[HttpMatchRequest],
) -> Option<Vec<HttpMatchRequest>> {
    if root.is_empty() {
        return Some(leaf.to_vec());
    }
    if leaf.is_empty() {
        return Some(root.to_vec());
    }
    let mut out = Vec::new();
    for l in leaf {
        let merged: Vec<HttpMatchRequest> = root
            .iter()
            .filter(|r| !conflict(r, l))
            .map(|r| merge_match(r, l))
            .collect();
        if merged.is_empty() {
            return None;
        }
        out.extend(merged);
    }
    Some(out)
}

fn merge_map<V: Clone>(
    root: &BTreeMap<String, V>,
    leaf: &BTreeMap<String, V>,
) -> BTreeMap<String, V> {
    let mut m = root.clone();
    m.extend(leaf.iter().map(|(k, v)| (k.clone(), v.clone())));
    m
}

fn merge_match(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> HttpMatchRequest {
    let mut out = leaf.clone();
    out.name = match (&root.name, &leaf.name) {
        (Some(r), Some(l)) => Some(format!("{r}-{l}")),
        (r, l) => l.clone().or_else(|| r.clone()),
    };
    macro_rules! inherit {
        ($($f:ident),*) => { $( if out.$f.is_none() { out.$f = root.$f.clone(); } )* };
    }
    inherit!(
        uri,
        scheme,
        method,
        authority,
        port,
        source_namespace,
        stat_prefix
    );
    out.headers = merge_map(&root.headers, &leaf.headers);
    out.without_headers = merge_map(&root.without_headers, &leaf.without_headers);
    out.query_params = merge_map(&root.query_params, &leaf.query_params);
    out.source_labels = merge_map(&root.source_labels, &leaf.source_labels);
    if out.gateways.is_empty() {
        out.gateways = root.gateways.clone();
    }
    out
}

/// Istio's `hasConflict`.
fn conflict(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> bool {
    let pairs = [
        (&root.uri, &leaf.uri),
        (&root.scheme, &leaf.scheme),
        (&root.method, &leaf.method),
        (&root.authority, &leaf.authority),
    ];
    if pairs
        .iter()
        .any(|(r, l)| string_conflict(r.as_ref(), l.as_ref()))
    {
        return true;
    }
    let maps = [
        (&root.headers, &leaf.headers),
        (&root.without_headers, &leaf.without_headers),
        (&root.query_params, &leaf.query_params),
    ];
    for (r, l) in maps {
        if r.iter().any(|(k, v)| {
            l.get(k)
                .is_some_and(|lv| string_conflict(Some(v), Some(lv)))
        }) {
            return true;
        }
    }
    if root.ignore_uri_case.unwrap_or(false) != leaf.ignore_uri_case.unwrap_or(false) {
        return true;
    }
    if let (Some(r), Some(l)) = (root.port, leaf.port)
        && r != l
    {
        return true;
    }
    if let (Some(r), Some(l)) = (&root.source_namespace, &leaf.source_namespace)
        && r != l
    {
        return true;
    }
    if root
        .source_labels
        .iter()
        .any(|(k, v)| leaf.source_labels.get(k).is_some_and(|lv| lv != v))
    {
        return true;
    }
    !root.gateways.is_empty()
        && !leaf.gateways.is_empty()
        && !leaf.gateways.iter().all(|g| root.gateways.contains(g))
}

/// Istio's `stringMatchConflict`: a leaf must narrow its root.
fn string_conflict(root: Option<&StringMatch>, leaf: Option<&StringMatch>) -> bool {
    let (Some(r), Some(l)) = (root, leaf) else {
        return false;
    };
    if r.regex.is_some() || l.regex.is_some() {
        return true;
    }
    if let Some(re) = &r.exact {
        return l.prefix.is_some() || l.exact.as_ref() != Some(re);
    }
    if let Some(rp) = &r.prefix {
        if let Some(lp) = &l.prefix {
            return !lp.starts_with(rp.as_str());
        }
        if let Some(le) = &l.exact {
            return !le.starts_with(rp.as_str());
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(p: &str) -> Option<StringMatch> {
        Some(StringMatch {
            prefix: Some(p.into()),
            ..Default::default()
        })
    }

    #[test]
    fn leaf_must_narrow_root() {
        let root = HttpMatchRequest {
            uri: prefix("/productpage"),
            ..Default::default()
        };
        let ok = HttpMatchRequest {
            uri: prefix("/productpage/v1"),
            ..Default::default()
        };
        let bad = HttpMatchRequest {
            uri: prefix("/reviews"),
            ..Default::default()
        };
        assert!(!conflict(&root, &ok));
        assert!(conflict(&root, &bad));
        let merged = merge_matches(std::slice::from_ref(&root), &[HttpMatchRequest::default()]);
        assert_eq!(merged.unwrap()[0].uri, prefix("/productpage"));
        assert!(merge_matches(&[root], &[bad]).is_none());
    }
}
