#!/usr/bin/env python3
"""Generate meshwork-config's Istio models and embedded schemas from Istio's CRDs.

Usage (from crates/config):
    python3 codegen/gen.py ../../../shared/fixtures/istio/crds/crd-all.gen.yaml
    cargo fmt -p meshwork-config

Writes:
  schema/istio-crds.json      structural schemas (descriptions stripped), one per served version
  src/model/istio/<kind>.rs   serde models for every spec field, with doc comments

The generated files are committed; rerun this script when the CRDs change.
"""
import json
import os
import re
import sys

import yaml

KINDS = [
    "VirtualService", "DestinationRule", "Gateway", "ServiceEntry", "WorkloadEntry",
    "WorkloadGroup", "Sidecar", "ProxyConfig", "PeerAuthentication",
    "RequestAuthentication", "AuthorizationPolicy", "Telemetry",
]

# Istio's own names for the most used messages (api/networking/v1alpha3/*.proto, ...),
# keyed by schema path. Everything else is named after its field.
NAMES = {
    "VirtualService.spec.http[]": "HttpRoute",
    "VirtualService.spec.http[].match[]": "HttpMatchRequest",
    "VirtualService.spec.http[].match[].uri": "StringMatch",
    "VirtualService.spec.http[].route[]": "HttpRouteDestination",
    "VirtualService.spec.http[].route[].destination": "Destination",
    "VirtualService.spec.http[].route[].destination.port": "PortSelector",
    "VirtualService.spec.http[].route[].headers": "Headers",
    "VirtualService.spec.http[].route[].headers.request": "HeaderOperations",
    "VirtualService.spec.http[].redirect": "HttpRedirect",
    "VirtualService.spec.http[].rewrite": "HttpRewrite",
    "VirtualService.spec.http[].retries": "HttpRetry",
    "VirtualService.spec.http[].fault": "HttpFaultInjection",
    "VirtualService.spec.http[].fault.abort": "Abort",
    "VirtualService.spec.http[].fault.delay": "Delay",
    "VirtualService.spec.http[].fault.delay.percentage": "Percent",
    "VirtualService.spec.http[].corsPolicy": "CorsPolicy",
    "VirtualService.spec.http[].mirrors[]": "HttpMirrorPolicy",
    "VirtualService.spec.http[].delegate": "Delegate",
    "VirtualService.spec.http[].directResponse": "HttpDirectResponse",
    "VirtualService.spec.tls[]": "TlsRoute",
    "VirtualService.spec.tls[].match[]": "TlsMatchAttributes",
    "VirtualService.spec.tls[].route[]": "RouteDestination",
    "VirtualService.spec.tcp[]": "TcpRoute",
    "VirtualService.spec.tcp[].match[]": "L4MatchAttributes",
    "DestinationRule.spec.trafficPolicy": "TrafficPolicy",
    "DestinationRule.spec.trafficPolicy.loadBalancer": "LoadBalancerSettings",
    "DestinationRule.spec.trafficPolicy.loadBalancer.simple": "SimpleLb",
    "DestinationRule.spec.trafficPolicy.loadBalancer.consistentHash": "ConsistentHashLb",
    "DestinationRule.spec.trafficPolicy.loadBalancer.localityLbSetting": "LocalityLoadBalancerSetting",
    "DestinationRule.spec.trafficPolicy.connectionPool": "ConnectionPoolSettings",
    "DestinationRule.spec.trafficPolicy.connectionPool.tcp": "TcpSettings",
    "DestinationRule.spec.trafficPolicy.connectionPool.http": "HttpSettings",
    "DestinationRule.spec.trafficPolicy.outlierDetection": "OutlierDetection",
    "DestinationRule.spec.trafficPolicy.tls": "ClientTlsSettings",
    "DestinationRule.spec.trafficPolicy.tls.mode": "ClientTlsMode",
    "DestinationRule.spec.trafficPolicy.portLevelSettings[]": "PortTrafficPolicy",
    "DestinationRule.spec.subsets[]": "Subset",
    "DestinationRule.spec.workloadSelector": "WorkloadSelector",
    "Gateway.spec.servers[]": "Server",
    "Gateway.spec.servers[].port": "Port",
    "Gateway.spec.servers[].tls": "ServerTlsSettings",
    "Gateway.spec.servers[].tls.mode": "ServerTlsMode",
    "ServiceEntry.spec.ports[]": "ServicePort",
    "ServiceEntry.spec.endpoints[]": "WorkloadEntry",
    "ServiceEntry.spec.workloadSelector": "ServiceEntryWorkloadSelector",
    "WorkloadGroup.spec.template": "WorkloadGroupTemplate",
    "WorkloadGroup.spec.metadata": "WorkloadGroupObjectMeta",
    "WorkloadGroup.spec.probe": "ReadinessProbe",
    "Sidecar.spec.ingress[]": "IstioIngressListener",
    "Sidecar.spec.egress[]": "IstioEgressListener",
    "Sidecar.spec.outboundTrafficPolicy": "OutboundTrafficPolicy",
    "Sidecar.spec.outboundTrafficPolicy.mode": "OutboundTrafficPolicyMode",
    "Sidecar.spec.ingress[].port": "SidecarPort",
    "Sidecar.spec.ingress[].tls.mode": "ServerTlsMode",
    "Sidecar.spec.ingress[].tls": "ServerTlsSettings",
    "ProxyConfig.spec.selector": "WorkloadSelector",
    "PeerAuthentication.spec.mtls": "MutualTls",
    "PeerAuthentication.spec.mtls.mode": "MutualTlsMode",
    "PeerAuthentication.spec.portLevelMtls{}": "MutualTls",
    "PeerAuthentication.spec.selector": "WorkloadSelector",
    "RequestAuthentication.spec.jwtRules[]": "JwtRule",
    "RequestAuthentication.spec.targetRef": "PolicyTargetReference",
    "RequestAuthentication.spec.selector": "WorkloadSelector",
    "AuthorizationPolicy.spec.rules[]": "Rule",
    "AuthorizationPolicy.spec.rules[].from[]": "RuleFrom",
    "AuthorizationPolicy.spec.rules[].from[].source": "Source",
    "AuthorizationPolicy.spec.rules[].to[]": "RuleTo",
    "AuthorizationPolicy.spec.rules[].to[].operation": "Operation",
    "AuthorizationPolicy.spec.rules[].when[]": "Condition",
    "AuthorizationPolicy.spec.action": "AuthorizationAction",
    "AuthorizationPolicy.spec.provider": "ExtensionProvider",
    "AuthorizationPolicy.spec.selector": "WorkloadSelector",
    "Telemetry.spec.metrics[]": "Metrics",
    "Telemetry.spec.metrics[].overrides[]": "MetricsOverrides",
    "Telemetry.spec.metrics[].overrides[].match": "MetricSelector",
    "Telemetry.spec.metrics[].overrides[].tagOverrides{}": "TagOverride",
    "Telemetry.spec.metrics[].overrides[].tagOverrides{}.operation": "TagOperation",
    "Telemetry.spec.metrics[].providers[]": "ProviderRef",
    "Telemetry.spec.tracing[]": "Tracing",
    "Telemetry.spec.accessLogging[]": "AccessLogging",
    "Telemetry.spec.selector": "WorkloadSelector",
}

# Types used under these paths get a file of their own (keeps files small).
FILES = {
    "DestinationRule.spec.trafficPolicy": "traffic_policy",
    "DestinationRule.spec.subsets[].trafficPolicy": "traffic_policy",
}

RUST_KEYWORDS = {"as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn",
                 "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref",
                 "return", "self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use",
                 "where", "while", "async", "await", "dyn", "abstract", "become", "box", "do", "final",
                 "macro", "override", "priv", "typeof", "unsized", "virtual", "yield", "try", "gen"}


def strip(s):
    """Schema without descriptions: what validation needs."""
    if isinstance(s, dict):
        return {k: strip(v) for k, v in s.items() if k != "description"}
    if isinstance(s, list):
        return [strip(x) for x in s]
    return s


def pascal(name):
    parts = re.split(r"[_\-.]|(?<=[a-z0-9])(?=[A-Z])", name)
    out = "".join(p[:1].upper() + p[1:].lower() for p in parts if p)
    if not out or out[0].isdigit():
        out = "V" + out
    return out


def snake(name):
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()
    s = re.sub(r"[^a-z0-9_]", "_", s)
    if s and s[0].isdigit():
        s = "f_" + s
    return "r#" + s if s in RUST_KEYWORDS else s


def singular(name):
    if name.endswith("ies") and len(name) > 4:
        return name[:-3] + "y"
    if name.endswith("ses") or name.endswith("xes"):
        return name[:-2]
    if name.endswith("s") and not name.endswith("ss") and len(name) > 3:
        return name[:-1]
    return name


def first_sentence(desc, fallback):
    if not desc:
        return fallback
    text = " ".join(desc.split())
    m = re.match(r"(.+?[.!?])(\s|$)", text)
    s = m.group(1) if m else text
    if len(s) > 200:
        s = s[:197].rsplit(" ", 1)[0] + "..."
    s = s.replace("[", "\\[").replace("]", "\\]").replace("<", "&lt;").replace(">", "&gt;")
    return s


class Gen:
    """Two passes: `collect` finds every distinct type and where it is used, `rust_type` emits."""

    def __init__(self):
        self.uses = {}  # fingerprint -> [(kind, path, candidate, parent_path)]
        self.order = []
        self.names = {}  # fingerprint -> name
        self.home = {}  # fingerprint -> kind file
        self.types = {}
        self.files = {snake(k).replace("r#", ""): [] for k in KINDS}
        for f in FILES.values():
            self.files[f] = []

    @staticmethod
    def fingerprint(s):
        if "enum" in s and s.get("type") == "string":
            return json.dumps(["enum", s["enum"]])
        if s.get("type") == "object" and "properties" in s:
            return json.dumps(["struct", strip(s)], sort_keys=True)
        return None

    def collect(self, kind, path, prop, s, parent_path):
        fp = self.fingerprint(s)
        if fp is not None:
            if fp not in self.uses:
                self.uses[fp] = []
                self.order.append(fp)
            self.uses[fp].append((kind, path, pascal(prop), parent_path))
            parent_path = path
        for p, ps in s.get("properties", {}).items():
            self.collect(kind, f"{path}.{p}", p, ps, parent_path)
        if isinstance(s.get("items"), dict):
            self.collect(kind, path + "[]", singular(prop), s["items"], parent_path)
        if isinstance(s.get("additionalProperties"), dict):
            self.collect(kind, path + "{}", singular(prop), s["additionalProperties"], parent_path)

    def home_of(self, fp, kind):
        for (_, path, _, _) in self.uses[fp]:
            for prefix, f in FILES.items():
                if path.startswith(prefix + ".") or path.startswith(prefix + "[") or path == prefix:
                    return f
        return snake(kind).replace("r#", "")

    def assign(self):
        taken = set()
        pending = []
        for fp in self.order:
            uses = self.uses[fp]
            named = [u for u in uses if u[1] in NAMES]
            if named:
                spec = [u for u in named if u[1] == u[0] + ".spec"]
                u = (spec or named)[0]
                name = NAMES[u[1]]
                if name in taken:
                    raise SystemExit(f"duplicate override name {name} at {u[1]}")
                taken.add(name)
                self.names[fp] = name
                self.home[fp] = self.home_of(fp, u[0])
            else:
                pending.append(fp)
        path_name = {}
        for fp in self.order:
            if fp in self.names:
                for u in self.uses[fp]:
                    path_name[u[1]] = self.names[fp]
        for fp in pending:
            kind, path, cand, parent = self.uses[fp][0]
            name = cand
            if name in taken:
                name = path_name.get(parent, "") + cand
            base, n = name, 2
            while name in taken:
                name, n = f"{base}{n}", n + 1
            taken.add(name)
            self.names[fp] = name
            self.home[fp] = self.home_of(fp, kind)
            for u in self.uses[fp]:
                path_name[u[1]] = name

    def rust_type(self, s):
        """Return the Rust type for schema s (emitting structs/enums once)."""
        fp = self.fingerprint(s)
        if fp is not None:
            name = self.names[fp]
            if name not in self.types:
                self.types[name] = ""
                if "enum" in s:
                    self.emit_enum(name, s)
                else:
                    self.emit_struct(name, s)
                self.files[self.home[fp]].append(name)
            return name
        t = s.get("type")
        if s.get("x-kubernetes-int-or-string"):
            return "IntOrString"
        if t == "string":
            return "String"
        if t == "boolean":
            return "bool"
        if t == "integer":
            return {"int32": "i32", "uint32": "u32", "int64": "i64", "uint64": "u64"}.get(s.get("format"), "i64")
        if t == "number":
            return "f64"
        if t == "array":
            return "Vec<%s>" % self.rust_type(s.get("items", {}))
        if t == "object":
            ap = s.get("additionalProperties")
            if isinstance(ap, dict):
                return "BTreeMap<String, %s>" % self.rust_type(ap)
        return "serde_json::Value"

    def emit_enum(self, name, s):
        lines = [f"/// {first_sentence(s.get('description'), 'Allowed values of this setting.')}",
                 "#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]",
                 f"pub enum {name} {{"]
        seen = set()
        for i, v in enumerate(s["enum"]):
            vn = pascal(v)
            while vn in seen:
                vn += "X"
            seen.add(vn)
            lines.append(f"    /// Wire value `{v}`.")
            if i == 0:
                lines.append("    #[default]")
            lines.append(f"    #[serde(rename = \"{v}\")]")
            lines.append(f"    {vn},")
        lines.append("}")
        self.types[name] = "\n".join(lines)

    def emit_struct(self, name, s):
        required = set(s.get("required", []))
        fields = []
        used = set()
        for prop, ps in s["properties"].items():
            ty = self.rust_type(ps)
            fname = snake(prop)
            while fname in used:
                fname += "_alt"
            used.add(fname)
            doc = first_sentence(ps.get("description"), f"The `{prop}` field.")
            attrs = [f"rename = \"{prop}\""]
            if ty.startswith("Vec<"):
                attrs += ["default", "skip_serializing_if = \"Vec::is_empty\""]
            elif ty.startswith("BTreeMap<"):
                attrs += ["default", "skip_serializing_if = \"BTreeMap::is_empty\""]
            elif ty == "serde_json::Value":
                attrs += ["default", "skip_serializing_if = \"serde_json::Value::is_null\""]
            elif prop in required and ty == "String":
                attrs += ["default"]
            else:
                ty = f"Option<{ty}>"
                attrs += ["default", "skip_serializing_if = \"Option::is_none\""]
            fields.append(f"    /// {doc}\n    #[serde({', '.join(attrs)})]\n    pub {fname}: {ty},")
        doc = first_sentence(s.get("description"), f"The `{name}` settings.")
        self.types[name] = (f"/// {doc}\n"
                            "#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]\n"
                            f"pub struct {name} {{\n" + "\n".join(fields) + "\n}")


def main():
    crds = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    gen = Gen()
    schemas = {}
    kinds = {}
    specs = []
    for crd in crds:
        kind = crd["spec"]["names"]["kind"]
        if kind not in KINDS:
            continue
        group = crd["spec"]["group"]
        for v in crd["spec"]["versions"]:
            root = v["schema"]["openAPIV3Schema"]
            entry = {"spec": strip(root["properties"]["spec"]), "specRequired": "spec" in root.get("required", [])}
            key = json.dumps(entry, sort_keys=True)
            sid = schemas.setdefault(key, f"s{len(schemas)}")
            kinds[f"{group}/{v['name']}/{kind}"] = sid
        storage = next(v for v in crd["spec"]["versions"] if v.get("storage"))
        spec = storage["schema"]["openAPIV3Schema"]["properties"]["spec"]
        desc = spec.get("description") or crd["spec"]["names"]["kind"]
        spec = dict(spec, description=desc)
        NAMES.setdefault(f"{kind}.spec", kind)
        specs.append(spec)
        gen.collect(kind, f"{kind}.spec", kind, spec, "")
    gen.assign()
    for spec in specs:
        gen.rust_type(spec)
    out = {"kinds": kinds, "schemas": {sid: json.loads(k) for k, sid in schemas.items()}}
    with open(os.path.join(here, "schema", "istio-crds.json"), "w") as f:
        json.dump(out, f, separators=(",", ":"), sort_keys=True)
        f.write("\n")
    moddir = os.path.join(here, "src", "model", "istio")
    os.makedirs(moddir, exist_ok=True)
    titles = {snake(k).replace("r#", ""): f"`{k}` spec types" for k in KINDS}
    titles["traffic_policy"] = "Traffic policy types (DestinationRule `trafficPolicy`, shared with Sidecar)"
    for fname, names in gen.files.items():
        kind = titles[fname]
        body = "\n\n".join(gen.types[n] for n in names)
        with open(os.path.join(moddir, f"{fname}.rs"), "w") as f:
            f.write(f"//! {kind}, generated by `codegen/gen.py` from Istio's CRD schema.\n"
                    "//! Do not edit by hand: change the generator and rerun it.\n\n"
                    "#[allow(unused_imports)]\nuse super::*;\n\n" + body + "\n")


if __name__ == "__main__":
    main()
