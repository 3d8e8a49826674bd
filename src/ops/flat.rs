//! Helpers shared by the fused CPU operations (`ffn`, `msc`, `layer_norm`,
//! `pointwise`, `pooling`): host views of `flex` tensors, and the flat
//! tensors by which one Burn extension call returns several results (the
//! training forward `[out | saved]`, the backward `[∂input | ∂parameters…]`).

use burn::backend::autodiff::{grads::Gradients, NodeId};
use burn::backend::flex::FlexTensor;
use burn::backend::{tensor::FloatTensor, Backend, TensorMetadata};
use burn::tensor::{DType, Shape, Slice};

/// `t` contiguous on the host; the fused operations run in float32 only
/// (their callers check, see `ops::fused`).
///
/// A contiguous view is kept as it is, without a copy: [`f32s`] reads its
/// window of the buffer. Flex's own `to_contiguous` copies any view that
/// does not span its whole buffer, and every [`part`] of a flat result is
/// such a view: the fused blocks' outputs and input gradients, that is
/// each block's input and incoming gradient (two 5 MB copies per block in
/// the forward and four in the backward, C128 at batch 32).
pub fn host(t: &FlexTensor) -> FlexTensor {
    assert_eq!(t.dtype(), DType::F32, "the fused CPU operations run in float32");
    if t.layout().contiguous_offsets().is_some() {
        return t.clone();
    }
    t.to_contiguous()
}

/// The floats of a contiguous float32 tensor.
pub fn f32s(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous f32")
}

/// The floats of an optional tensor; none for a parameter a call does not
/// read (the biases in a backward).
pub fn f32s_or_empty(t: &Option<FlexTensor>) -> &[f32] {
    t.as_ref().map_or(&[], f32s)
}

/// `t[start..start + shape.num_elements()]` of a flat tensor, reshaped to
/// `shape` (a view, no copy).
pub fn part<B: Backend>(t: &FloatTensor<B>, start: usize, shape: Shape) -> FloatTensor<B> {
    let n = shape.num_elements();
    let s = B::float_slice(t.clone(), &[Slice::new(start as isize, Some((start + n) as isize), 1)]);
    B::float_reshape(s, shape)
}

/// Registers the gradients laid end to end in the flat `all`, one per
/// parent in order with the given shapes, for the parents that take one.
pub fn register_flat<B: Backend>(
    grads: &mut Gradients,
    all: &FloatTensor<B>,
    parents: impl IntoIterator<Item = Option<NodeId>>,
    shapes: impl IntoIterator<Item = Shape>,
) {
    let mut start = 0;
    for (parent, shape) in parents.into_iter().zip(shapes) {
        let n = shape.num_elements();
        if let Some(id) = parent {
            grads.register::<B>(id, part::<B>(all, start, shape));
        }
        start += n;
    }
    debug_assert_eq!(start, all.shape().num_elements(), "the flat gradients' length");
}

/// Declares a fused operation's parameters once, as a struct with one field
/// per parameter, generic over what each field holds: a tensor, an optional
/// tensor, a host slice, a gradient buffer or a size. The field order is the
/// order of every flat layout (the autodiff parents, the gradients, the
/// host buffers), so that order is written here and nowhere else.
macro_rules! op_params {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* $field:ident,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone)]
        pub struct $name<T> {
            $($(#[$fm])* pub $field: T,)+
        }

        #[allow(dead_code)]
        impl<T> $name<T> {
            /// Each field through `f`, in order.
            pub fn map<U>(self, mut f: impl FnMut(T) -> U) -> $name<U> {
                $name { $($field: f(self.$field),)+ }
            }

            /// References to the fields.
            pub fn as_ref(&self) -> $name<&T> {
                $name { $($field: &self.$field,)+ }
            }

            /// The fields in order.
            pub fn into_vec(self) -> Vec<T> {
                vec![$(self.$field,)+]
            }

            /// The fields from the first values of `values`, in order.
            pub fn from_values(mut values: impl Iterator<Item = T>) -> Self {
                $name { $($field: values.next().expect(concat!("a value for ", stringify!($field))),)+ }
            }

            /// `first`, then the fields in order (the operation's input and
            /// its parameters, as the autodiff parents list them).
            pub fn after(self, first: T) -> [T; 1 $(+ op_params!(@one $field))+] {
                [first, $(self.$field,)+]
            }
        }

        #[allow(dead_code)]
        impl $name<Vec<usize>> {
            /// The number of values of each shape, in order.
            pub fn sizes(self) -> impl Iterator<Item = usize> {
                self.into_vec().into_iter().map(|shape| shape.iter().product())
            }
        }
    };
    (@one $field:ident) => {
        1
    };
}

pub(crate) use op_params;

/// Consecutive parts of `buf` of the given sizes (their sum is `buf`'s length).
pub fn split_sizes(mut buf: &mut [f32], sizes: impl IntoIterator<Item = usize>) -> Vec<&mut [f32]> {
    let mut parts = vec![];
    for n in sizes {
        let (part, rest) = buf.split_at_mut(n);
        parts.push(part);
        buf = rest;
    }
    debug_assert!(buf.is_empty(), "the parts' sizes cover the buffer");
    parts
}
