//! `--device` parsing and backend selection.
//!
//! `cpu` is Burn's pure-Rust CPU backend (flex) and is always compiled in.
//! `wgpu[:N]` (WGSL through CubeCL: Vulkan, Metal or DX12), `vulkan[:N]`
//! (CubeCL's SPIR-V), `metal` and `cuda[:N]` need their Cargo features. `N`
//! picks the N-th adapter (or CUDA device) in enumeration order. Without
//! `--device`, the best available GPU is chosen, else `cpu`.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};
use burn::tensor::Device;
use serde::Serialize;

/// A backend family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BackendKind {
    Cpu,
    Wgpu,
    Vulkan,
    Metal,
    Cuda,
}

impl BackendKind {
    /// The Cargo feature that compiles the backend in.
    pub fn feature(self) -> &'static str {
        match self {
            BackendKind::Cpu => "(always built)",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Vulkan => "vulkan",
            BackendKind::Metal => "metal",
            BackendKind::Cuda => "cuda",
        }
    }

    /// Whether this binary was built with the backend.
    pub fn compiled(self) -> bool {
        match self {
            BackendKind::Cpu => true,
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
            BackendKind::Vulkan => cfg!(feature = "vulkan"),
            BackendKind::Metal => cfg!(feature = "metal"),
            BackendKind::Cuda => cfg!(feature = "cuda"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Vulkan => "vulkan",
            BackendKind::Metal => "metal",
            BackendKind::Cuda => "cuda",
        }
    }
}

/// A parsed `--device` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DeviceSpec {
    pub kind: BackendKind,
    pub index: Option<usize>,
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(i) => write!(f, "{}:{i}", self.kind.name()),
            None => write!(f, "{}", self.kind.name()),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let (name, index) = match s.split_once(':') {
            Some((n, i)) => {
                let idx: usize = i.parse().map_err(|_| anyhow::anyhow!("bad device index in '{s}'"))?;
                (n, Some(idx))
            }
            None => (s, None),
        };
        let kind = match name.to_ascii_lowercase().as_str() {
            "cpu" | "flex" => BackendKind::Cpu,
            "wgpu" => BackendKind::Wgpu,
            "vulkan" => BackendKind::Vulkan,
            "metal" => BackendKind::Metal,
            "cuda" => BackendKind::Cuda,
            _ => bail!("unknown device '{s}': expected cpu, wgpu[:N], vulkan[:N], metal or cuda[:N]"),
        };
        if index.is_some() && matches!(kind, BackendKind::Cpu | BackendKind::Metal) {
            bail!("device '{s}' takes no index");
        }
        Ok(Self { kind, index })
    }
}

/// What the run executes on, for logs and provenance.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeviceInfo {
    /// The `--device` value that selects this device again.
    pub spec: String,
    pub backend: String,
    pub feature: String,
    pub adapter: String,
    pub vendor: String,
    pub driver: String,
    /// Graphics API under wgpu (Vulkan, Metal, Dx12, ...), or the runtime.
    pub api: String,
}

/// A device ready for tensors, with its description.
#[derive(Debug, Clone)]
pub struct SelectedDevice {
    pub device: Device,
    pub info: DeviceInfo,
}

/// A field of `/proc/self/status` in MiB (Linux; `None` elsewhere).
fn proc_status_mib(field: &str) -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = s.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Keeps freed memory in the process for reuse (glibc only).
///
/// The CPU backend allocates a fresh buffer for every tensor operation. By
/// default glibc serves blocks above 128 KiB with `mmap` and unmaps them when
/// freed, so each operation pays page faults and the kernel's page clearing
/// again; in a profile of the training step that was about 12 % of the time.
/// Raising the mmap threshold to its maximum (32 MiB) and not trimming the
/// heap makes those buffers reusable: measured on a 2-core Xeon, the C128
/// 8 s embedding went from 89 to 65 ms and the C128 training step from 3.0
/// to 2.85 s (`BENCHMARKS.md`). Resident memory then stays at its peak.
///
/// Blocks above that maximum, such as a training batch's saved activations
/// of one block (40 MiB for C128 at batch 32), were still mapped and unmapped
/// on every step: half of the training step's page faults (404 000 → 202 000
/// in a 4-step `bench --train-batch 32`, the rest being the first touch of
/// the peak's pages). `mmap` is therefore not used for large blocks at all
/// (`M_MMAP_MAX` 0); glibc still falls back to it when the heap cannot grow.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called once at
    // start-up, before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_MMAP_MAX, 0);
    }
}

/// Keeps Mesa's Vulkan device-selection layer from connecting to a Wayland
/// display where there is none. The layer (an implicit layer that Mesa's
/// drivers install) orders GPUs by the display in use; without
/// `XDG_RUNTIME_DIR` its connection attempt prints "error: XDG_RUNTIME_DIR is
/// invalid or not set" on every device probe, runs that end on the CPU
/// included. It is switched off (`NODEVICE_SELECT=1`) only then, and never
/// when the user configures it (`MESA_VK_DEVICE_SELECT`). Call at start-up,
/// before other threads exist.
pub fn quiet_vulkan_layers() {
    let unset = |k: &str| std::env::var_os(k).is_none_or(|v| v.is_empty());
    if unset("XDG_RUNTIME_DIR") && unset("NODEVICE_SELECT") && unset("MESA_VK_DEVICE_SELECT") {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
}

/// Makes the CPU Burn's default device (`BURN_DEVICE=flex`, unless the user
/// set one). Our code always names its device; Burn itself materialises
/// optimiser moments read from a checkpoint on the default device, which
/// with the `wgpu` feature is the first GPU: a resumed CPU run then started
/// a GPU runtime, and every rank of a multi-GPU job put its moments on GPU 0.
/// They now pass through host memory and move to the parameters' device at
/// the next step, as they did before. Call at start-up, before other
/// threads exist.
pub fn host_as_default_device() {
    if std::env::var_os("BURN_DEVICE").is_none() {
        std::env::set_var("BURN_DEVICE", "flex");
    }
}

/// Resident memory of this process now.
pub fn resident_mib() -> Option<f64> {
    proc_status_mib("VmRSS:")
}

/// Memory available to new work (Linux's `MemAvailable`), in bytes.
pub fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Peak resident memory of this process so far.
pub fn peak_resident_mib() -> Option<f64> {
    proc_status_mib("VmHWM:")
}

/// Resolves `--device` (or the default) to a live device and logs it.
///
/// A GPU runtime can be initialised once per process, so devices are
/// remembered: selecting the same spec again returns the same device.
pub fn select(spec: Option<DeviceSpec>) -> Result<SelectedDevice> {
    static SELECTED: std::sync::Mutex<Vec<(DeviceSpec, SelectedDevice)>> = std::sync::Mutex::new(Vec::new());
    let spec = match spec {
        Some(s) => s,
        None => default_spec(),
    };
    let mut known = SELECTED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, d)) = known.iter().find(|(s, _)| *s == spec) {
        return Ok(d.clone());
    }
    let selected = init(spec)?;
    known.push((spec, selected.clone()));
    Ok(selected)
}

fn init(spec: DeviceSpec) -> Result<SelectedDevice> {
    if !spec.kind.compiled() {
        bail!(
            "device '{spec}' is not available in this build: rebuild with `--features {}` (e.g. `cargo build --release --features {}`)",
            spec.kind.feature(),
            spec.kind.feature()
        );
    }
    let selected = match spec.kind {
        BackendKind::Cpu => SelectedDevice {
            device: Device::flex(),
            info: DeviceInfo {
                spec: spec.to_string(),
                backend: "flex".into(),
                feature: "(default)".into(),
                adapter: cpu_name(),
                vendor: std::env::consts::ARCH.into(),
                driver: format!("{} threads", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)),
                api: "native".into(),
            },
        },
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu | BackendKind::Vulkan | BackendKind::Metal => gpu::select_wgpu(spec)?,
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => SelectedDevice {
            device: Device::cuda(spec.index.unwrap_or(0)),
            info: DeviceInfo {
                spec: spec.to_string(),
                backend: "cuda".into(),
                feature: "cuda".into(),
                adapter: format!("CUDA device {}", spec.index.unwrap_or(0)),
                vendor: "NVIDIA".into(),
                driver: "cuda".into(),
                api: "CUDA".into(),
            },
        },
        #[allow(unreachable_patterns)]
        _ => unreachable!("backend compiled check above"),
    };
    log::info!(
        "device {}: backend {} (feature {}), adapter '{}', vendor {}, driver {}, api {}",
        selected.info.spec,
        selected.info.backend,
        selected.info.feature,
        selected.info.adapter,
        selected.info.vendor,
        selected.info.driver,
        selected.info.api
    );
    Ok(selected)
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "CPU".into())
}

/// The best device this build and machine offer: a CUDA device, then a real
/// GPU adapter through wgpu, else the CPU backend. A software rasteriser
/// (e.g. lavapipe) is slower than the CPU backend, so it is never the default.
pub fn default_spec() -> DeviceSpec {
    #[cfg(feature = "cuda")]
    {
        if std::path::Path::new("/dev/nvidiactl").exists() {
            return DeviceSpec { kind: BackendKind::Cuda, index: None };
        }
    }
    #[cfg(feature = "wgpu")]
    {
        if gpu::has_hardware_adapter() {
            return DeviceSpec { kind: BackendKind::Wgpu, index: None };
        }
    }
    DeviceSpec { kind: BackendKind::Cpu, index: None }
}

/// Every device this build can use on this machine.
pub fn available() -> Vec<(DeviceSpec, String)> {
    let mut out = vec![(DeviceSpec { kind: BackendKind::Cpu, index: None }, cpu_name())];
    #[cfg(feature = "wgpu")]
    for (i, a) in gpu::adapters().into_iter().enumerate() {
        out.push((
            DeviceSpec { kind: BackendKind::Wgpu, index: Some(i) },
            format!("{} ({:?}, {:?}, driver {} {})", a.name, a.device_type, a.backend, a.driver, a.driver_info),
        ));
    }
    out
}

#[cfg(feature = "wgpu")]
mod gpu {
    use super::*;
    use burn::tensor::wgpu::{wgpu, WgpuBackend};
    use burn::tensor::DeviceKind;

    /// Adapters of the APIs the wgpu backend runs on (Vulkan, Metal, DX12).
    /// OpenGL is left out: it is not used for compute here, and probing it
    /// opens a display connection (EGL), which prints errors about
    /// `XDG_RUNTIME_DIR` on machines without one.
    pub fn adapters() -> Vec<wgpu::AdapterInfo> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::PRIMARY,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        futures_lite::future::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY))
            .into_iter()
            .map(|a| a.get_info())
            .filter(|i| i.backend != wgpu::Backend::Noop)
            .collect()
    }

    pub fn has_hardware_adapter() -> bool {
        adapters().iter().any(|a| {
            matches!(
                a.device_type,
                wgpu::DeviceType::DiscreteGpu | wgpu::DeviceType::IntegratedGpu | wgpu::DeviceType::VirtualGpu
            )
        })
    }

    /// Maps "the N-th adapter" to the selector CubeCL understands (the index within its type).
    fn kind_of(index: Option<usize>, list: &[wgpu::AdapterInfo]) -> Result<DeviceKind> {
        let Some(n) = index else { return Ok(DeviceKind::DefaultDevice) };
        let Some(target) = list.get(n) else {
            bail!("no GPU adapter {n}: this machine has {} (see `nexttdnn devices`)", list.len())
        };
        let same = list[..n].iter().filter(|a| a.device_type == target.device_type).count();
        Ok(match target.device_type {
            wgpu::DeviceType::DiscreteGpu => DeviceKind::DiscreteGpu(same),
            wgpu::DeviceType::IntegratedGpu => DeviceKind::IntegratedGpu(same),
            wgpu::DeviceType::VirtualGpu => DeviceKind::VirtualGpu(same),
            wgpu::DeviceType::Cpu => DeviceKind::Cpu,
            wgpu::DeviceType::Other => DeviceKind::DefaultDevice,
        })
    }

    pub fn select_wgpu(spec: DeviceSpec) -> Result<SelectedDevice> {
        let list = adapters();
        if list.is_empty() {
            bail!("device '{spec}': no GPU adapter found (is a Vulkan, Metal or DX12 driver installed? on Linux: mesa-vulkan-drivers)");
        }
        let mut kind = kind_of(spec.index, &list)?;
        if spec.index.is_none() && !has_hardware_adapter() {
            // Only a software adapter (e.g. lavapipe): ask for it explicitly.
            kind = DeviceKind::Cpu;
        }
        let (api, feature) = match spec.kind {
            BackendKind::Vulkan => (WgpuBackend::Vulkan, "vulkan"),
            BackendKind::Metal => (WgpuBackend::Metal, "metal"),
            _ => (WgpuBackend::Auto, "wgpu"),
        };
        let (device, setup) = Device::wgpu_options()
            .device_kind(kind)
            .graphics_api(api)
            .init_with_setup()
            .map_err(|e| anyhow::anyhow!("device '{spec}': cannot initialise wgpu: {e:?}"))?;
        let info = setup.adapter.get_info();
        Ok(SelectedDevice {
            device,
            info: DeviceInfo {
                spec: spec.to_string(),
                backend: feature.into(),
                feature: feature.into(),
                adapter: info.name.clone(),
                vendor: format!("{:#06x}", info.vendor),
                driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
                api: format!("{:?}", setup.backend),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec { kind: BackendKind::Cpu, index: None });
        assert_eq!("wgpu:1".parse::<DeviceSpec>().unwrap(), DeviceSpec { kind: BackendKind::Wgpu, index: Some(1) });
        assert_eq!("cuda:0".parse::<DeviceSpec>().unwrap().to_string(), "cuda:0");
        assert!("tpu".parse::<DeviceSpec>().is_err());
        assert!("cpu:1".parse::<DeviceSpec>().is_err());
        assert!("wgpu:x".parse::<DeviceSpec>().is_err());
    }

    #[test]
    fn missing_backend_names_feature() {
        if !BackendKind::Cuda.compiled() {
            let err = select(Some("cuda".parse().unwrap())).unwrap_err().to_string();
            assert!(err.contains("--features cuda"), "{err}");
        }
    }
}
