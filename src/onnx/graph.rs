//! A small builder of ONNX graphs: named initialisers, nodes with one
//! output, and the attribute and input conventions that change with the
//! opset (reduction axes are attributes before opset 18 and inputs from it).

use super::proto::{
    AttributeProto, NodeProto, TensorProto, ATTR_FLOAT, ATTR_INT, ATTR_INTS, ATTR_STRING, FLOAT, INT64,
};

/// A node attribute.
pub enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
    Str(&'static str),
}

/// Nodes and initialisers under construction.
pub struct Graph {
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
    pub opset: i64,
    count: usize,
}

impl Graph {
    pub fn new(opset: i64) -> Self {
        Self { nodes: vec![], initializers: vec![], opset, count: 0 }
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.count += 1;
        format!("{hint}_{}", self.count)
    }

    /// A float32 initialiser of shape `dims`; its name.
    pub fn init(&mut self, hint: &str, dims: &[usize], values: &[f32]) -> String {
        assert_eq!(dims.iter().product::<usize>(), values.len(), "{hint}: {dims:?} holds {} values", values.len());
        let name = self.fresh(hint);
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: FLOAT,
            name: name.clone(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name
    }

    /// A 1-D int64 initialiser (shapes, axes, pads, slice bounds).
    pub fn ints(&mut self, hint: &str, values: &[i64]) -> String {
        let name = self.fresh(hint);
        self.initializers.push(TensorProto {
            dims: vec![values.len() as i64],
            data_type: INT64,
            name: name.clone(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name
    }

    /// A float32 scalar initialiser.
    pub fn scalar(&mut self, v: f32) -> String {
        self.init("const", &[], &[v])
    }

    /// Adds a node with one output; its name.
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        let out = self.fresh(&op.to_lowercase());
        let attribute = attrs
            .into_iter()
            .map(|(name, a)| {
                let mut p = AttributeProto { name: name.to_string(), ..Default::default() };
                match a {
                    Attr::Int(i) => (p.i, p.r#type) = (Some(i), ATTR_INT),
                    Attr::Float(f) => (p.f, p.r#type) = (Some(f), ATTR_FLOAT),
                    Attr::Ints(v) => (p.ints, p.r#type) = (v, ATTR_INTS),
                    Attr::Str(s) => (p.s, p.r#type) = (Some(s.as_bytes().to_vec()), ATTR_STRING),
                }
                p
            })
            .collect();
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: format!("n{}", self.nodes.len()),
            op_type: op.to_string(),
            attribute,
            domain: String::new(),
        });
        out
    }

    /// Renames the output of the last node (graph outputs have fixed names).
    pub fn rename_last(&mut self, name: &str) {
        let node = self.nodes.last_mut().expect("a node");
        node.output[0] = name.to_string();
    }

    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.op("Add", &[a, b], vec![])
    }

    pub fn sub(&mut self, a: &str, b: &str) -> String {
        self.op("Sub", &[a, b], vec![])
    }

    pub fn mul(&mut self, a: &str, b: &str) -> String {
        self.op("Mul", &[a, b], vec![])
    }

    pub fn div(&mut self, a: &str, b: &str) -> String {
        self.op("Div", &[a, b], vec![])
    }

    pub fn transpose(&mut self, x: &str, perm: &[i64]) -> String {
        self.op("Transpose", &[x], vec![("perm", Attr::Ints(perm.to_vec()))])
    }

    /// `x[…, start..end, …]` along `axis`.
    pub fn slice(&mut self, x: &str, start: i64, end: i64, axis: i64) -> String {
        let (s, e, a) = (self.ints("start", &[start]), self.ints("end", &[end]), self.ints("axis", &[axis]));
        self.op("Slice", &[x, &s, &e, &a], vec![])
    }

    pub fn concat(&mut self, xs: &[&str], axis: i64) -> String {
        self.op("Concat", xs, vec![("axis", Attr::Int(axis))])
    }

    /// A reduction over `axes`, kept as size-1 dimensions. `ReduceSum` takes
    /// its axes as an input from opset 13, the others from opset 18.
    pub fn reduce(&mut self, op: &str, x: &str, axes: &[i64]) -> String {
        let as_input = op == "ReduceSum" || self.opset >= 18;
        if as_input {
            let a = self.ints("axes", axes);
            self.op(op, &[x, &a], vec![("keepdims", Attr::Int(1))])
        } else {
            self.op(op, &[x], vec![("axes", Attr::Ints(axes.to_vec())), ("keepdims", Attr::Int(1))])
        }
    }
}
