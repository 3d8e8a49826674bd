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
///
/// `make` runs without the list locked: it may run parallel loops, and a
/// rayon worker waiting for them takes other tasks, which can be another
/// model's call asking for its own forms on the same thread. Two threads
/// that both miss may both make the form; the first one kept is used.
pub fn kept<T: Any + Send + Sync>(
    w: &FlexTensor,
    what: &'static str,
    dims: [usize; 2],
    make: impl FnOnce(&[f32]) -> T,
) -> Arc<T> {
    let floats = f32s(w);
    let key = Key { at: floats.as_ptr() as usize, len: floats.len(), what, dims };
    if let Some(value) = find(&key) {
        return value;
    }
    let made = Arc::new(make(floats));
    let mut forms = FORMS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(value) = take_up(&mut forms, &key) {
        return value;
    }
    if forms.len() == KEPT {
        forms.remove(0);
    }
    forms.push(Form { key, _tensor: w.clone(), value: made.clone() });
    made
}

/// The kept form under `key`, if any.
fn find<T: Any + Send + Sync>(key: &Key) -> Option<Arc<T>> {
    take_up(&mut FORMS.lock().unwrap_or_else(|e| e.into_inner()), key)
}

/// The form under `key` in `forms`, moved to the end (most recently used).
fn take_up<T: Any + Send + Sync>(forms: &mut Vec<Form>, key: &Key) -> Option<Arc<T>> {
    let i = forms.iter().position(|f| f.key == *key)?;
    let form = forms.remove(i);
    let value = form.value.clone();
    forms.push(form);
    Some(value.downcast().expect("one type per kind of form"))
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

    /// A form's `make` may ask for another form on the same thread (as a
    /// rayon worker does when it takes another model's call while waiting
    /// for its own loops).
    #[test]
    fn making_a_form_may_ask_for_another() {
        let tensor = |v: f32| FlexTensor::from_data(TensorData::new(vec![v; 4], [2, 2]));
        let (a, b) = (tensor(1.0), tensor(3.0));
        let outer = kept(&a, "outer", [2, 2], |w| w[0] + *kept(&b, "inner", [2, 2], |v| v.iter().sum::<f32>()));
        assert_eq!(*outer, 13.0);
    }
}
