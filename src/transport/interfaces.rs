//! Opening the node's interfaces: TCP server and client, and an operator's `rnsd` shared instance.

use std::net::SocketAddr;
use std::time::Duration;

use rns_transport::hash::AddressHash;
use rns_transport::iface::local::{LocalUnixClient, LocalUnixEndpoint};
use rns_transport::iface::tcp_client::TcpClient;
use rns_transport::iface::tcp_server::TcpServer;
use rns_transport::iface::{IfaceRole, InterfaceMode};
use tokio::sync::mpsc;

use super::{Node, NodeError};

/// One interface of the node (the config layer maps `config::InterfaceConfig` onto this).
pub enum InterfaceConfig {
    TcpServer {
        listen: SocketAddr,
    },
    TcpClient {
        target: String,
    },
    /// An operator's `rnsd`: the Unix socket `\0rns/<instance_name>`, or, for
    /// `shared_instance_type = tcp`, 127.0.0.1:`tcp_port` (Python's default is 37428).
    SharedInstance {
        instance_name: String,
        tcp_port: Option<u16>,
    },
}

impl Node {
    /// Opens interfaces. A server opens them after registering its destinations, so no early
    /// path request goes unanswered.
    pub async fn open_interfaces(&self, interfaces: Vec<InterfaceConfig>) -> Result<(), NodeError> {
        for iface in interfaces {
            self.add_interface(iface, self.inner.reconnect_tx.clone()).await?;
        }
        Ok(())
    }

    async fn add_interface(&self, iface: InterfaceConfig, reconnect: mpsc::Sender<AddressHash>) -> Result<(), NodeError> {
        let manager = self.inner.transport.iface_manager();
        match iface {
            InterfaceConfig::TcpServer { listen } => {
                let (server, started) = TcpServer::new(listen.to_string(), manager.clone()).with_startup_result();
                if let Ok(mut l) = self.inner.listeners.lock() {
                    l.push(server.runtime_status_handle());
                }
                manager.lock().await.spawn(server, TcpServer::spawn);
                let err = |e: String| NodeError::Interface(listen.to_string(), e);
                match tokio::time::timeout(Duration::from_secs(5), started).await {
                    Ok(Ok(Ok(()))) => Ok(()),
                    Ok(Ok(Err(e))) => Err(err(e)),
                    Ok(Err(_)) => Err(err("listener task ended".into())),
                    Err(_) => Err(err("bind timed out".into())),
                }
            }
            InterfaceConfig::TcpClient { target } => {
                let client = TcpClient::new(target).with_reconnect_events(reconnect);
                manager.lock().await.spawn(client, TcpClient::spawn);
                Ok(())
            }
            InterfaceConfig::SharedInstance { instance_name, tcp_port } => {
                // Marking the interface as a shared-instance link before it starts fixes
                // hop counting and turns off announce pacing towards rnsd.
                let prepare = |m: &mut rns_transport::iface::InterfaceManager, a: AddressHash| {
                    m.set_shared_instance(a, true);
                    Ok::<(), NodeError>(())
                };
                let (_, activate, cancel) = match tcp_port {
                    Some(port) => {
                        let c = TcpClient::new(format!("127.0.0.1:{port}")).with_reconnect_events(reconnect);
                        manager.lock().await.try_spawn_deferred_as_with_mode(c, TcpClient::spawn, IfaceRole::Unicast, InterfaceMode::Full, prepare)?
                    }
                    None => {
                        // The crate adds neither the "rns/" prefix nor the instance name.
                        let ep = LocalUnixEndpoint::abstract_name(format!("rns/{instance_name}"));
                        let c = LocalUnixClient::new_connect(ep).with_reconnect_events(reconnect);
                        manager.lock().await.try_spawn_deferred_as_with_mode(c, LocalUnixClient::spawn, IfaceRole::Unicast, InterfaceMode::Full, prepare)?
                    }
                };
                self.inner.transport.activate_shared_instance_interface(activate, &cancel).await?;
                Ok(())
            }
        }
    }
}
