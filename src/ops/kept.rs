//! Forms of a loaded model's weights that the CPU operations derive once and
//! keep between calls: a weight in `gemm`'s panels ([`super::panels`]), a
//! transposed copy.
//!
//! A form is found by the weight's storage address, what it is and its
//! dimensions. Each entry holds a handle on the weight tensor: storage that
//! is shared is never written in place, and it is not freed while the handle
//! lives, so the address cannot come to mean another weight while the entry
//! exists. A model whose weights change (training) gets new tensors, hence
//! new entries; the oldest fall out once there are [`KEPT`].

use std::any::Any;
use std::sync::{Arc, Mutex};

use burn::backend::flex::FlexTensor;

use super::flat::f32s;

/// How many forms are kept: every block's of the largest configuration,
/// twice over.
pub const KEPT: usize = 48;

/// The form `what` (of dimensions `dims`) of the float32 weight `w`: made by
/// `make` from its floats on the first call, the kept one after.
pub fn kept<T: Any + Send + Sync>(
    w: &FlexTensor,
    what: &'static str,
    dims: [usize; 2],
    make: impl FnOnce(&[f32]) -> T,
) -> Arc<T> {
    let floats = f32s(w);
    let key = Key { at: floats.as_ptr() as usize, len: floats.len(), what, dims };
    let mut forms = FORMS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = forms.iter().position(|f| f.key == key) {
        let form = forms.remove(i);
        let value = form.value.clone();
        forms.push(form);
        return value.downcast().expect("one type per kind of form");
    }
    let value = Arc::new(make(floats));
    if forms.len() == KEPT {
        forms.remove(0);
    }
    forms.push(Form { key, _tensor: w.clone(), value: value.clone() });
    value
}

#[derive(PartialEq, Eq)]
struct Key {
    at: usize,
    len: usize,
    what: &'static str,
    dims: [usize; 2],
}

/// One kept form, most recently used last.
struct Form {
    key: Key,
    /// Holds the tensor's storage, so that `key` cannot name another.
    _tensor: FlexTensor,
    value: Arc<dyn Any + Send + Sync>,
}

static FORMS: Mutex<Vec<Form>> = Mutex::new(Vec::new());

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    /// A form is made once per weight and kind; another weight of the same
    /// shape, or another kind of form, is made anew.
    #[test]
    fn forms_are_kept_per_weight_and_kind() {
        let tensor = |v: f32| FlexTensor::from_data(TensorData::new(vec![v; 6], [2, 3]));
        let (a, b) = (tensor(1.0), tensor(2.0));
        let sum = |w: &[f32]| w.iter().sum::<f32>();
        let first = kept(&a, "sum", [2, 3], sum);
        assert!(Arc::ptr_eq(&first, &kept(&a, "sum", [2, 3], |_| -> f32 { unreachable!("kept") })));
        assert_eq!(*kept(&b, "sum", [2, 3], sum), 12.0);
        assert_eq!(*kept(&a, "twice", [2, 3], |w| 2.0 * sum(w)), 12.0);
        assert_eq!(*first, 6.0);
    }
}
