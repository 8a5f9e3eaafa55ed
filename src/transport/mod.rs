//! The Reticulum side: the node adapter, and the router that turns node events into group work.
pub mod node;
pub mod router;

use crate::config::{Config, ConfigError, InterfaceConfig};

/// Maps the configured interfaces onto the node's.
pub fn node_config(cfg: &Config) -> Result<node::NodeConfig, ConfigError> {
    let mut interfaces = Vec::new();
    for iface in &cfg.reticulum.interfaces {
        interfaces.push(match iface {
            InterfaceConfig::TcpServer { listen } => node::InterfaceConfig::TcpServer {
                listen: listen.parse().map_err(|_| ConfigError::Invalid(format!("tcp_server listen: not an address: {listen}")))?,
            },
            InterfaceConfig::TcpClient { target } => node::InterfaceConfig::TcpClient { target: target.clone() },
            InterfaceConfig::SharedInstance { instance_name, shared_instance_type, port } => {
                let tcp_port = match shared_instance_type.as_str() {
                    "unix" => None,
                    "tcp" => Some(*port),
                    other => return Err(ConfigError::Invalid(format!("shared_instance_type must be unix or tcp, not {other}"))),
                };
                node::InterfaceConfig::SharedInstance { instance_name: instance_name.clone(), tcp_port }
            }
        });
    }
    Ok(node::NodeConfig { interfaces, transport_identity: None, ratchet_store: Some(cfg.data_dir.join("ratchets")) })
}
