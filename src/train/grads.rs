//! Gradients of one optimiser step over micro-batches and ranks: their mean,
//! exchanged as one flat buffer, and the buffers and parameters that ranks
//! must agree on.

use std::hash::Hasher;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};

use super::collective::Collective;

/// Layout of the gradients in the flat buffer: parameter order of the module.
struct Pack {
    grads: GradientsParams,
    parts: Vec<Tensor<1>>,
    shapes: Vec<Vec<usize>>,
    device: Option<Device>,
}

impl ModuleVisitor for Pack {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(p.id) {
            let shape = g.dims().to_vec();
            self.device.get_or_insert_with(|| g.device());
            self.parts.push(g.reshape([shape.iter().product::<usize>()]));
            self.shapes.push(shape);
        }
    }
}

struct Unpack {
    flat: Tensor<1>,
    shapes: std::vec::IntoIter<Vec<usize>>,
    offset: usize,
    grads: GradientsParams,
    /// Ids seen by the packing visitor, in order (parameters without a
    /// gradient are skipped by both).
    ids: std::vec::IntoIter<burn::module::ParamId>,
}

impl ModuleVisitor for Unpack {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        let Some(id) = self.ids.as_slice().first().copied() else { return };
        if id != p.id {
            return;
        }
        self.ids.next();
        let shape = self.shapes.next().expect("one shape per packed gradient");
        let n: usize = shape.iter().product();
        let dims: [usize; D] = shape.try_into().expect("gradient rank matches its parameter");
        let part = self.flat.clone().narrow(0, self.offset, n).reshape(dims);
        self.offset += n;
        self.grads.register::<D>(p.id, part);
    }
}

struct Ids<'a> {
    grads: &'a GradientsParams,
    ids: Vec<burn::module::ParamId>,
}

impl ModuleVisitor for Ids<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if self.grads.get::<D>(p.id).is_some() {
            self.ids.push(p.id);
        }
    }
}

/// The mean gradient of the step: `grads` holds this rank's sum over its
/// micro-batches, `total` is the number of micro-batches over all ranks.
///
/// One process divides on the device. Several pack every gradient into one
/// flat buffer, read it back once, sum it across ranks with one all-reduce,
/// divide, and write it back: every rank then holds the same gradient.
pub fn mean_gradient<M: Module>(
    model: &M,
    grads: GradientsParams,
    total: usize,
    comm: &dyn Collective,
) -> GradientsParams {
    if comm.size() == 1 {
        return if total == 1 { grads } else { scale(model, grads, total as f64) };
    }
    let mut ids = Ids { grads: &grads, ids: vec![] };
    model.visit(&mut ids);
    let ids = ids.ids;
    let mut pack = Pack { grads, parts: vec![], shapes: vec![], device: None };
    model.visit(&mut pack);
    let Some(device) = pack.device else { return pack.grads };
    let flat = Tensor::cat(pack.parts, 0);
    let mut host = flat.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 gradients");
    comm.sum_f32(&mut host);
    let k = total as f32;
    for v in host.iter_mut() {
        *v /= k;
    }
    let n = host.len();
    let flat = Tensor::<1>::from_data(TensorData::new(host, [n]), &device);
    let mut unpack =
        Unpack { flat, shapes: pack.shapes.into_iter(), offset: 0, grads: pack.grads, ids: ids.into_iter() };
    model.visit(&mut unpack);
    unpack.grads
}

struct Divide {
    grads: GradientsParams,
    by: f64,
}

impl ModuleVisitor for Divide {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(p.id) {
            self.grads.register::<D>(p.id, g.div_scalar(self.by));
        }
    }
}

fn scale<M: Module>(model: &M, grads: GradientsParams, by: f64) -> GradientsParams {
    let mut d = Divide { grads, by };
    model.visit(&mut d);
    d.grads
}

/// Averages the module's buffers (BatchNorm running statistics: the float
/// tensors that take no gradient) over all ranks, as one flat all-reduce.
pub struct AverageBuffers<'a> {
    comm: &'a dyn Collective,
}

impl ModuleMapper for AverageBuffers<'_> {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if p.val().is_require_grad() {
            return p;
        }
        let (id, t, mapper) = p.consume();
        let dims = t.dims();
        let device = t.device();
        let mut host = t.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 buffer");
        self.comm.sum_f32(&mut host);
        let n = self.comm.size() as f32;
        for v in host.iter_mut() {
            *v /= n;
        }
        Param::from_mapped_value(id, Tensor::from_data(TensorData::new(host, dims), &device), mapper)
    }
}

/// Replaces every buffer by its mean over the ranks (nothing with one rank).
pub fn average_buffers<M: Module>(model: M, comm: &dyn Collective) -> M {
    if comm.size() == 1 {
        return model;
    }
    model.map(&mut AverageBuffers { comm })
}

struct HashParams {
    h: std::collections::hash_map::DefaultHasher,
}

impl ModuleVisitor for HashParams {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if !p.val().is_require_grad() {
            // Buffers (BatchNorm statistics) differ between ranks until averaged.
            return;
        }
        let v = p.val().into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 parameter");
        self.h.write_usize(v.len());
        for x in v {
            self.h.write_u32(x.to_bits());
        }
    }
}

/// A hash of every trained parameter of the module, bit for bit.
pub fn parameter_hash<M: Module>(model: &M) -> u64 {
    let mut h = HashParams { h: Default::default() };
    model.visit(&mut h);
    h.h.finish()
}
