//! Route configurations (RDS) and their VHDS virtual hosts in the config
//! store, and the route tables compiled from both.
//!
//! A route configuration with `vhds` set gets more virtual hosts from the
//! `VirtualHost` resources named `<route configuration>/<virtual host>`;
//! its table is the inline virtual hosts followed by those. Such a table is
//! complete (published, so its listener stops warming) only once the first
//! VirtualHost response after its subscription has arrived. Every VHDS
//! change builds a new table for its route configuration, swapped in with
//! the rest of the snapshot like an RDS update.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::pb::google::protobuf::Any;
use meshwork_xds::client::{DeltaUpdate, ResourceError};

use super::{Batch, Entry, merge_batch};
use crate::model::route::{RouteTable, VirtualHostModel};

/// Route state: accepted configurations and virtual hosts, complete tables.
#[derive(Default)]
pub(super) struct Routes {
    /// Accepted route configurations, compiled with their inline hosts.
    configs: BTreeMap<String, Entry<Arc<RouteTable>>>,
    /// Accepted VHDS virtual hosts by resource name.
    vhosts: BTreeMap<String, Entry<Arc<VirtualHostModel>>>,
    /// VHDS route configurations whose first VirtualHost response arrived.
    vhds_ready: BTreeSet<String>,
    /// Complete tables, as the data path sees them.
    tables: BTreeMap<String, Arc<RouteTable>>,
}

impl Routes {
    /// The complete route tables.
    pub fn tables(&self) -> &BTreeMap<String, Arc<RouteTable>> {
        &self.tables
    }

    /// The accepted route configurations.
    pub fn configs(&self) -> &BTreeMap<String, Entry<Arc<RouteTable>>> {
        &self.configs
    }

    /// The accepted VHDS virtual hosts.
    pub fn vhosts(&self) -> &BTreeMap<String, Entry<Arc<VirtualHostModel>>> {
        &self.vhosts
    }

    /// Route configurations whose virtual hosts come through VHDS (the
    /// names the ADS client subscribes VirtualHost resources with).
    pub fn vhds_names(&self) -> Vec<String> {
        self.configs
            .iter()
            .filter(|(_, e)| e.value.vhds)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Applies route configurations, keeps only the `wanted` ones.
    pub fn apply_configs(&mut self, batch: Batch<'_>, wanted: &[String]) -> Vec<ResourceError> {
        let delta = matches!(batch, Batch::Delta(_));
        let before: BTreeMap<String, Arc<RouteTable>> = self
            .configs
            .iter()
            .map(|(k, e)| (k.clone(), e.value.clone()))
            .collect();
        let (configs, vhosts) = (&mut self.configs, &self.vhosts);
        let errors = merge_batch(configs, batch, false, |raw| {
            let rc: RouteConfiguration =
                meshwork_xds::unpack(raw).map_err(|e| (String::new(), e))?;
            compile_config(&rc, vhosts, delta).map_err(|e| (rc.name.clone(), e))
        });
        let mut dirty: BTreeSet<String> = before
            .iter()
            .filter(|(k, v)| {
                self.configs
                    .get(*k)
                    .is_none_or(|e| !Arc::ptr_eq(&e.value, v))
            })
            .map(|(k, _)| k.clone())
            .collect();
        dirty.extend(
            self.configs
                .keys()
                .filter(|k| !before.contains_key(*k))
                .cloned(),
        );
        self.refresh(wanted, dirty);
        errors
    }

    /// Applies a VHDS update: each virtual host validated alone (a bad one
    /// or one claiming another's domain is rejected and keeps its last good
    /// version), removed ones dropped, then the affected tables rebuilt.
    pub fn apply_vhosts(
        &mut self,
        update: DeltaUpdate<'_>,
        wanted: &[String],
    ) -> Vec<ResourceError> {
        let mut errors = Vec::new();
        let mut dirty = BTreeSet::new();
        for name in update.removed {
            if self.vhosts.remove(name).is_some()
                && let Some(rc) = self.owner(name)
            {
                dirty.insert(rc);
            }
        }
        // Per route configuration: domain -> who has it, built when needed.
        let mut domains: HashMap<String, HashMap<String, String>> = HashMap::new();
        for r in update.resources {
            let Some(rc) = self.owner(&r.name) else {
                tracing::debug!(name = r.name, "virtual host of no VHDS route configuration");
                continue;
            };
            if let Some(old) = self.vhosts.get_mut(&r.name)
                && old.raw == r.resource
            {
                old.version = r.version.clone();
                continue;
            }
            let model = match compile_vhost(&r.resource) {
                Ok(m) => m,
                Err(message) => {
                    errors.push(ResourceError {
                        name: r.name.clone(),
                        message,
                    });
                    continue;
                }
            };
            let taken = domains
                .entry(rc.clone())
                .or_insert_with(|| self.domain_owners(&rc));
            if let Some((d, other)) = model
                .domains
                .iter()
                .find_map(|d| taken.get(d).filter(|o| **o != r.name).map(|o| (d, o)))
            {
                errors.push(ResourceError {
                    name: r.name.clone(),
                    message: format!("domain {d:?} is already in virtual host {other:?}"),
                });
                continue;
            }
            if let Some(old) = self.vhosts.get(&r.name) {
                for d in &old.value.domains {
                    taken.remove(d);
                }
            }
            for d in &model.domains {
                taken.insert(d.clone(), r.name.clone());
            }
            self.vhosts.insert(
                r.name.clone(),
                Entry {
                    raw: r.resource.clone(),
                    value: Arc::new(model),
                    version: r.version.clone(),
                },
            );
            dirty.insert(rc);
        }
        for rc in update.subscribed {
            if self.configs.get(rc).is_some_and(|e| e.value.vhds)
                && self.vhds_ready.insert(rc.clone())
            {
                dirty.insert(rc.clone());
            }
        }
        self.refresh(wanted, dirty);
        errors
    }

    /// The VHDS route configuration a virtual host resource belongs to:
    /// the longest `<name>/` prefix among them.
    fn owner(&self, vhost: &str) -> Option<String> {
        self.configs
            .iter()
            .filter(|(k, e)| {
                e.value.vhds
                    && vhost.len() > k.len() + 1
                    && vhost.starts_with(k.as_str())
                    && vhost.as_bytes()[k.len()] == b'/'
            })
            .max_by_key(|(k, _)| k.len())
            .map(|(k, _)| k.clone())
    }

    /// The VHDS virtual hosts of one route configuration, by name.
    fn vhosts_of(&self, rc: &str) -> Vec<Arc<VirtualHostModel>> {
        let prefix = format!("{rc}/");
        self.vhosts
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| self.owner(k).as_deref() == Some(rc))
            .map(|(_, e)| e.value.clone())
            .collect()
    }

    /// Every domain of one route configuration and what holds it (inline
    /// hosts as `inline:<name>`).
    fn domain_owners(&self, rc: &str) -> HashMap<String, String> {
        let mut owners = HashMap::new();
        if let Some(cfg) = self.configs.get(rc) {
            for vh in cfg.value.inline_hosts() {
                for d in &vh.domains {
                    owners.insert(d.clone(), format!("inline:{}", vh.name));
                }
            }
        }
        let prefix = format!("{rc}/");
        for (k, e) in self
            .vhosts
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
        {
            for d in &e.value.domains {
                owners.insert(d.clone(), k.clone());
            }
        }
        owners
    }

    /// Drops what is no longer wanted and rebuilds the tables of `dirty`
    /// route configurations (and any not built yet).
    fn refresh(&mut self, wanted: &[String], dirty: BTreeSet<String>) {
        self.configs.retain(|k, _| wanted.contains(k));
        let vhds: BTreeSet<String> = self.vhds_names().into_iter().collect();
        self.vhds_ready.retain(|k| vhds.contains(k));
        let orphans: Vec<String> = self
            .vhosts
            .keys()
            .filter(|k| self.owner(k).is_none())
            .cloned()
            .collect();
        for k in orphans {
            self.vhosts.remove(&k);
        }
        self.tables.retain(|k, _| wanted.contains(k));
        let names: Vec<String> = self.configs.keys().cloned().collect();
        for name in names {
            if dirty.contains(&name) || !self.tables.contains_key(&name) {
                self.rebuild(&name);
            }
        }
    }

    fn rebuild(&mut self, name: &str) {
        let Some(cfg) = self.configs.get(name) else {
            self.tables.remove(name);
            return;
        };
        if !cfg.value.vhds {
            self.tables.insert(name.to_string(), cfg.value.clone());
            return;
        }
        if !self.vhds_ready.contains(name) {
            self.tables.remove(name);
            return;
        }
        match cfg.value.with_vhds(self.vhosts_of(name)) {
            Ok(t) => {
                self.tables.insert(name.to_string(), Arc::new(t));
            }
            // Checked per resource before; keep the last good table.
            Err(e) => tracing::error!(route = name, error = e, "cannot combine VHDS virtual hosts"),
        }
    }
}

/// Compiles a route configuration. VHDS needs delta xDS; its inline hosts
/// must not claim a domain one of its VHDS hosts has.
fn compile_config(
    rc: &RouteConfiguration,
    vhosts: &BTreeMap<String, Entry<Arc<VirtualHostModel>>>,
    delta: bool,
) -> Result<(String, Arc<RouteTable>), String> {
    let table = RouteTable::compile(rc)?;
    if table.vhds {
        if !delta {
            return Err("vhds needs delta xDS (meshwork proxy --xds-protocol delta)".into());
        }
        let prefix = format!("{}/", rc.name);
        let mine = vhosts
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, e)| e.value.clone());
        table.with_vhds(mine)?;
    }
    Ok((rc.name.clone(), Arc::new(table)))
}

fn compile_vhost(raw: &Any) -> Result<VirtualHostModel, String> {
    let vh: VirtualHost = meshwork_xds::unpack(raw)?;
    VirtualHostModel::compile(&vh).map_err(|e| format!("virtual host {:?}: {e}", vh.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::route::v3::Vhds;
    use meshwork_xds::client::DeltaResource;
    use meshwork_xds::pack;

    fn rc(name: &str, vhds: bool) -> RouteConfiguration {
        RouteConfiguration {
            name: name.into(),
            vhds: vhds.then(Vhds::default),
            ..Default::default()
        }
    }

    fn res(name: &str, any: Any) -> DeltaResource {
        DeltaResource {
            name: name.into(),
            version: "v1".into(),
            resource: any,
        }
    }

    fn vh(name: &str, domain: &str) -> Any {
        pack(&VirtualHost {
            name: name.into(),
            domains: vec![domain.into()],
            ..Default::default()
        })
    }

    fn delta<'a>(resources: &'a [DeltaResource], subscribed: &'a [String]) -> Batch<'a> {
        Batch::Delta(DeltaUpdate {
            resources,
            removed: &[],
            subscribed,
        })
    }

    #[test]
    fn state_of_the_world_refuses_vhds() {
        let mut r = Routes::default();
        let resources = [pack(&rc("r", true))];
        let batch = Batch::Sotw {
            version: "1",
            resources: &resources,
        };
        let errors = r.apply_configs(batch, &["r".into()]);
        assert!(errors[0].message.contains("needs delta xDS"), "{errors:?}");
        assert!(r.tables().is_empty());
    }

    #[test]
    fn a_vhds_table_waits_for_its_first_response_and_hosts_go_to_the_longest_prefix() {
        let mut r = Routes::default();
        let wanted = ["a".to_string(), "a/b".to_string(), "plain".to_string()];
        let configs = [
            res("a", pack(&rc("a", true))),
            res("a/b", pack(&rc("a/b", true))),
            res("plain", pack(&rc("plain", false))),
        ];
        assert!(r.apply_configs(delta(&configs, &[]), &wanted).is_empty());
        assert_eq!(r.vhds_names(), ["a", "a/b"]);
        assert_eq!(r.tables().keys().collect::<Vec<_>>(), ["plain"]);

        let hosts = [
            res("a/b/c", vh("c", "c.test")),
            res("a/x", vh("x", "x.test")),
        ];
        let update = DeltaUpdate {
            resources: &hosts,
            removed: &[],
            subscribed: &["a/b".to_string()],
        };
        assert!(r.apply_vhosts(update, &wanted).is_empty());
        // Only a/b has had its first response; a/b/c is one of its hosts.
        let t = &r.tables()["a/b"];
        assert_eq!(t.find_vhost("c.test").map(|v| v.name.as_str()), Some("c"));
        assert!(t.find_vhost("x.test").is_none());
        assert!(!r.tables().contains_key("a"));

        // Dropping a route configuration drops its hosts.
        assert!(r.apply_configs(delta(&[], &[]), &wanted[1..]).is_empty());
        assert!(!r.vhosts().contains_key("a/x"));
        assert!(r.vhosts().contains_key("a/b/c"));
    }
}
