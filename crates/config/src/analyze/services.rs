//! IST0118: Service ports whose protocol Istio cannot tell.

use crate::diag::{Diagnostic, codes};
use crate::model::k8s::ServiceSpec;
use crate::node::FieldPath;
use crate::protocol::Protocol;
use crate::resource::Resource;

/// Namespaces Istio's analyzer leaves alone.
const SYSTEM_NAMESPACES: [&str; 2] = ["kube-system", "istio-system"];

/// Report ports with no protocol in their name or `appProtocol`.
pub fn port_protocols(res: &Resource, svc: &ServiceSpec, out: &mut Vec<Diagnostic>) {
    if SYSTEM_NAMESPACES.contains(&res.namespace()) {
        return;
    }
    for (i, port) in svc.ports.iter().enumerate() {
        let proto = Protocol::of_service_port(
            port.name.as_deref(),
            port.app_protocol.as_deref(),
            port.protocol.as_deref(),
        );
        if proto.is_none() {
            let target = port
                .target_port
                .as_ref()
                .map_or_else(|| port.port.to_string(), ToString::to_string);
            out.push(res.diag(
                codes::PORT_NAME_NOT_UNDER_NAMING_CONVENTION,
                &FieldPath::root().key("spec").key("ports").index(i),
                format!(
                    "Port name {} (port: {}, targetPort: {target}) doesn't follow the naming convention of Istio port.",
                    port.name.as_deref().unwrap_or(""),
                    port.port
                ),
            ));
        }
    }
}
