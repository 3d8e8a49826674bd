//! The browser's WebGPU device, set up once per worker.

use std::cell::RefCell;

use anyhow::{anyhow, Result};
use burn::tensor::Device;

/// The WebGPU device and what the page shows of it.
#[derive(Clone)]
pub struct Gpu {
    pub device: Device,
    /// The adapter as wgpu describes it.
    pub adapter: String,
    /// The device's `maxStorageBufferBindingSize`.
    pub buffer_limit: u64,
}

thread_local! {
    static GPU: RefCell<Option<Gpu>> = const { RefCell::new(None) };
}

/// The WebGPU device, requested from the browser on the first call (Burn's
/// runtime can be set up only once per worker).
pub async fn device() -> Result<Gpu> {
    if let Some(g) = GPU.with(|g| g.borrow().clone()) {
        return Ok(g);
    }
    let (device, setup) =
        Device::wgpu_options().init_with_setup_async().await.map_err(|e| anyhow!("WebGPU is not available: {e}"))?;
    let info = setup.adapter.get_info();
    let adapter = [info.name.as_str(), info.driver.as_str(), info.driver_info.as_str()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    let buffer_limit = setup.device.limits().max_storage_buffer_binding_size;
    log::info!("WebGPU device: {adapter:?}, storage buffers up to {buffer_limit} bytes");
    let gpu = Gpu { device, adapter, buffer_limit };
    GPU.with(|g| *g.borrow_mut() = Some(gpu.clone()));
    Ok(gpu)
}

/// The adapter's description, once the device is set up.
pub fn adapter() -> Option<String> {
    GPU.with(|g| g.borrow().as_ref().map(|g| g.adapter.clone()))
}

/// The device's largest storage-buffer binding, once it is set up.
pub fn buffer_limit() -> Option<u64> {
    GPU.with(|g| g.borrow().as_ref().map(|g| g.buffer_limit))
}
