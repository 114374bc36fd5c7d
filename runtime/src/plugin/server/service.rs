//! The gRPC services on a resource's socket: `v1beta1.DevicePlugin`
//! (always) and `pluginregistration.Registration` (plugin-watcher mode),
//! mapping the kubelet's messages to [`Backend`] calls field by field.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use griffin_kubelet_api::deviceplugin as dp;
use griffin_kubelet_api::pluginregistration as pr;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::plugin::{Backend, ContainerDevices, DeviceState};

/// What the server tells the kubelet about itself: preferred allocation is
/// served, PreStartContainer is not needed.
pub const OPTIONS: dp::DevicePluginOptions = dp::DevicePluginOptions {
    pre_start_required: false,
    get_preferred_allocation_available: true,
};

/// The DevicePlugin service of one resource.
#[derive(Clone)]
pub struct DevicePluginService {
    /// What is served.
    pub backend: Arc<dyn Backend>,
    /// The resource served.
    pub resource: Arc<str>,
    /// Ends the ListAndWatch streams (server stopping).
    pub stop: CancellationToken,
}

impl std::fmt::Debug for DevicePluginService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevicePluginService")
            .field("resource", &self.resource)
            .finish_non_exhaustive()
    }
}

/// A device as ListAndWatch sends it: health word, NUMA node as topology
/// (none when unknown: the kubelet then gives it no NUMA affinity).
pub fn to_device(d: &DeviceState) -> dp::Device {
    dp::Device {
        id: d.id.clone(),
        health: if d.healthy {
            dp::HEALTHY
        } else {
            dp::UNHEALTHY
        }
        .to_owned(),
        topology: d.numa_node.map(|n| dp::TopologyInfo {
            nodes: vec![dp::NumaNode { id: i64::from(n) }],
        }),
    }
}

/// What one container gets, as the kubelet's message.
pub fn to_container_response(c: ContainerDevices) -> dp::ContainerAllocateResponse {
    dp::ContainerAllocateResponse {
        envs: c.envs.into_iter().collect(),
        mounts: c
            .mounts
            .into_iter()
            .map(|m| dp::Mount {
                container_path: m.container_path,
                host_path: m.host_path,
                read_only: m.read_only,
            })
            .collect(),
        devices: c
            .devices
            .into_iter()
            .map(|d| dp::DeviceSpec {
                container_path: d.container_path,
                host_path: d.host_path,
                permissions: d.permissions,
            })
            .collect(),
        annotations: c.annotations.into_iter().collect(),
        cdi_devices: Vec::new(),
    }
}

impl DevicePluginService {
    /// The resource's devices now (none when it left the snapshot).
    fn devices(&self) -> Vec<DeviceState> {
        self.backend
            .watch()
            .borrow()
            .get(&*self.resource)
            .cloned()
            .unwrap_or_default()
    }

    /// Checks that every id of one container's request is a device of the
    /// resource, once.
    fn check_ids<'a>(
        &self,
        container: usize,
        field: &str,
        ids: impl IntoIterator<Item = &'a String>,
        known: &BTreeSet<&str>,
    ) -> Result<(), Status> {
        let mut seen = BTreeSet::new();
        for id in ids {
            if !known.contains(id.as_str()) {
                return Err(Status::invalid_argument(format!(
                    "container request {container}: {field}: {id} is not a device of {}",
                    self.resource
                )));
            }
            if !seen.insert(id.as_str()) {
                return Err(Status::invalid_argument(format!(
                    "container request {container}: {field}: {id} is listed twice"
                )));
            }
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl dp::device_plugin_server::DevicePlugin for DevicePluginService {
    async fn get_device_plugin_options(
        &self,
        _: Request<dp::Empty>,
    ) -> Result<Response<dp::DevicePluginOptions>, Status> {
        Ok(Response::new(OPTIONS))
    }

    type ListAndWatchStream = ReceiverStream<Result<dp::ListAndWatchResponse, Status>>;

    /// Every device at once, then the full list again whenever the
    /// resource's devices change; ends (OK) when the server stops. A
    /// resource that left the snapshot is sent as an empty list before the
    /// end, so the kubelet's capacity drops to 0 instead of the devices
    /// turning unhealthy.
    async fn list_and_watch(
        &self,
        _: Request<dp::Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let mut snapshots = self.backend.watch();
        let resource = Arc::clone(&self.resource);
        let stop = self.stop.clone();
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            let mut sent: Option<Vec<DeviceState>> = None;
            loop {
                let now = snapshots
                    .borrow_and_update()
                    .get(&*resource)
                    .cloned()
                    .unwrap_or_default();
                if sent.as_ref() != Some(&now) {
                    let msg = dp::ListAndWatchResponse {
                        devices: now.iter().map(to_device).collect(),
                    };
                    // try_send first: a list that is ready goes out even
                    // when the server is stopping (a resource that left
                    // ends with its empty list).
                    match tx.try_send(Ok(msg)) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
                        Err(mpsc::error::TrySendError::Full(msg)) => tokio::select! {
                            r = tx.send(msg) => if r.is_err() { return },
                            () = stop.cancelled() => return,
                        },
                    }
                    tracing::debug!("{resource}: ListAndWatch sent {} devices", now.len());
                    sent = Some(now);
                }
                tokio::select! {
                    () = stop.cancelled() => {
                        let gone = !snapshots.borrow().contains_key(&*resource);
                        if gone && sent.is_some_and(|s| !s.is_empty()) {
                            let _ = tx.try_send(Ok(dp::ListAndWatchResponse::default()));
                        }
                        return;
                    }
                    () = tx.closed() => return,
                    changed = snapshots.changed() => if changed.is_err() {
                        // The backend is gone: nothing more will change.
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tx.closed() => return,
                        }
                    },
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<dp::PreferredAllocationRequest>,
    ) -> Result<Response<dp::PreferredAllocationResponse>, Status> {
        let devices = self.devices();
        let known: BTreeSet<&str> = devices.iter().map(|d| d.id.as_str()).collect();
        let mut container_responses = Vec::new();
        for (i, c) in request
            .into_inner()
            .container_requests
            .into_iter()
            .enumerate()
        {
            let size = usize::try_from(c.allocation_size).map_err(|_| {
                Status::invalid_argument(format!(
                    "container request {i}: allocation_size {} is negative",
                    c.allocation_size
                ))
            })?;
            self.check_ids(i, "available_deviceIDs", &c.available_device_i_ds, &known)?;
            self.check_ids(
                i,
                "must_include_deviceIDs",
                &c.must_include_device_i_ds,
                &known,
            )?;
            let available: BTreeSet<&str> =
                c.available_device_i_ds.iter().map(String::as_str).collect();
            if let Some(id) = c
                .must_include_device_i_ds
                .iter()
                .find(|id| !available.contains(id.as_str()))
            {
                return Err(Status::invalid_argument(format!(
                    "container request {i}: must-include device {id} is not available"
                )));
            }
            if size > available.len() || size < c.must_include_device_i_ds.len() {
                return Err(Status::invalid_argument(format!(
                    "container request {i}: allocation_size {size} with {} available and {} must-include devices",
                    available.len(),
                    c.must_include_device_i_ds.len()
                )));
            }
            let chosen = self
                .backend
                .prefer(
                    &self.resource,
                    &c.available_device_i_ds,
                    &c.must_include_device_i_ds,
                    size,
                )
                .map_err(|m| Status::failed_precondition(format!("container request {i}: {m}")))?;
            let distinct: BTreeSet<&str> = chosen.iter().map(String::as_str).collect();
            let consistent = chosen.len() == size
                && distinct.len() == size
                && distinct.is_subset(&available)
                && c.must_include_device_i_ds
                    .iter()
                    .all(|id| distinct.contains(id.as_str()));
            if !consistent {
                return Err(Status::internal(format!(
                    "container request {i}: the preferred allocation of {} is not {size} of the available devices with the must-include ones: {chosen:?}",
                    self.resource
                )));
            }
            container_responses.push(dp::ContainerPreferredAllocationResponse {
                device_i_ds: chosen,
            });
        }
        Ok(Response::new(dp::PreferredAllocationResponse {
            container_responses,
        }))
    }

    async fn allocate(
        &self,
        request: Request<dp::AllocateRequest>,
    ) -> Result<Response<dp::AllocateResponse>, Status> {
        let devices = self.devices();
        let known: BTreeSet<&str> = devices.iter().map(|d| d.id.as_str()).collect();
        let requests = request.into_inner().container_requests;
        for (i, c) in requests.iter().enumerate() {
            if c.devices_i_ds.is_empty() {
                return Err(Status::invalid_argument(format!(
                    "container request {i}: no devicesIDs"
                )));
            }
            self.check_ids(i, "devicesIDs", &c.devices_i_ds, &known)?;
        }
        let mut container_responses = Vec::with_capacity(requests.len());
        for (i, c) in requests.iter().enumerate() {
            let got = self
                .backend
                .allocate(&self.resource, &c.devices_i_ds)
                .map_err(|m| Status::failed_precondition(format!("container request {i}: {m}")))?;
            tracing::info!(
                "{}: allocated {} to a container",
                self.resource,
                c.devices_i_ds.join(",")
            );
            container_responses.push(to_container_response(got));
        }
        Ok(Response::new(dp::AllocateResponse {
            container_responses,
        }))
    }

    async fn pre_start_container(
        &self,
        _: Request<dp::PreStartContainerRequest>,
    ) -> Result<Response<dp::PreStartContainerResponse>, Status> {
        Ok(Response::new(dp::PreStartContainerResponse {}))
    }
}

/// The plugin-watcher Registration service of one resource: GetInfo
/// describes the plugin; the kubelet's verdict is passed to `notified`.
#[derive(Clone)]
pub struct WatcherService {
    /// The resource served.
    pub resource: Arc<str>,
    /// The socket the kubelet dials for the DevicePlugin service (the
    /// same socket serves both).
    pub endpoint: PathBuf,
    /// Called with each `NotifyRegistrationStatus`.
    pub notified: Arc<dyn Fn(pr::RegistrationStatus) + Send + Sync>,
}

impl std::fmt::Debug for WatcherService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatcherService")
            .field("resource", &self.resource)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

#[tonic::async_trait]
impl pr::registration_server::Registration for WatcherService {
    async fn get_info(
        &self,
        _: Request<pr::InfoRequest>,
    ) -> Result<Response<pr::PluginInfo>, Status> {
        Ok(Response::new(pr::PluginInfo {
            r#type: pr::DEVICE_PLUGIN.to_owned(),
            name: self.resource.to_string(),
            endpoint: self.endpoint.to_string_lossy().into_owned(),
            supported_versions: vec![dp::VERSION.to_owned()],
        }))
    }

    async fn notify_registration_status(
        &self,
        request: Request<pr::RegistrationStatus>,
    ) -> Result<Response<pr::RegistrationStatusResponse>, Status> {
        (self.notified)(request.into_inner());
        Ok(Response::new(pr::RegistrationStatusResponse {}))
    }
}
