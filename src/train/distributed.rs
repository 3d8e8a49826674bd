//! Data-parallel training over MPI (the `distributed` feature).
//!
//! MPI reduces host buffers, so it serves every GPU vendor and the CPU alike:
//! shared memory between the ranks of one machine, TCP or InfiniBand between
//! machines. A job is started by `mpirun -np N nexttdnn train …` or by
//! Slurm's `srun`; each rank trains on its share of every batch, and the
//! ranks sum one flat gradient buffer per step ([`super::grads`]).

use anyhow::{Context, Result};
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Threading;

use super::collective::Collective;

/// Environment variables that MPI launchers set for their processes
/// (Open MPI's mpirun, PMI and PMIx, as under Slurm's srun, and MPICH's Hydra).
const LAUNCHER_VARS: [&str; 4] = ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK"];

/// This process's place in an MPI job.
pub struct Mpi {
    // Finalises MPI when dropped, after every collective has returned.
    _universe: Universe,
    world: SimpleCommunicator,
    local_rank: usize,
}

impl Mpi {
    /// Joins the MPI job when this process was started by an MPI launcher;
    /// `None` for a process started on its own.
    pub fn from_launcher() -> Result<Option<Self>> {
        if !LAUNCHER_VARS.iter().any(|v| std::env::var_os(v).is_some()) {
            return Ok(None);
        }
        // Only the main thread calls MPI; loader and compute threads never do.
        let (universe, _) =
            mpi::initialize_with_threading(Threading::Funneled).context("MPI was initialised already")?;
        let world = universe.world();
        let local_rank = world.split_shared(world.rank()).rank() as usize;
        let mpi = Self { _universe: universe, world, local_rank };
        install_abort_on_panic();
        Ok(Some(mpi))
    }

    /// Ends the whole job with `code`: the launcher stops every other rank,
    /// so none is left waiting in a collective.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

/// A panic on any rank (after the message is printed) aborts the job.
fn install_abort_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        SimpleCommunicator::world().abort(101);
    }));
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn local_rank(&self) -> usize {
        self.local_rank
    }

    fn sum_f32(&self, buf: &mut [f32]) {
        let send = buf.to_vec();
        self.world.all_reduce_into(&send[..], buf, SystemOperation::sum());
    }

    fn sum_f64(&self, buf: &mut [f64]) {
        let send = buf.to_vec();
        self.world.all_reduce_into(&send[..], buf, SystemOperation::sum());
    }

    fn all_equal(&self, value: u64) -> bool {
        let (mut lo, mut hi) = (0u64, 0u64);
        self.world.all_reduce_into(&value, &mut lo, SystemOperation::min());
        self.world.all_reduce_into(&value, &mut hi, SystemOperation::max());
        lo == hi
    }
}
