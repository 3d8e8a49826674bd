//! `devices`: what this build can run on.

use anyhow::Result;

use crate::device::{available, default_spec, BackendKind};

pub fn run() -> Result<()> {
    println!("default: {}", default_spec());
    for (spec, desc) in available() {
        println!("{spec:<10} {desc}");
    }
    for kind in [BackendKind::Wgpu, BackendKind::Vulkan, BackendKind::Metal, BackendKind::Cuda] {
        if !kind.compiled() {
            println!("{:<10} not built (enable feature `{}`)", format!("{kind:?}").to_lowercase(), kind.feature());
        }
    }
    Ok(())
}
