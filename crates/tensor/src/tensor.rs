//! A named-shape f32 buffer: the unit of weights that move in and out of files.

/// Where a tensor's data lives. Model code never branches on it; kernels dispatch per op.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    #[default]
    Cpu,
}

/// A dense row-major f32 tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    pub device: Device,
}

impl Tensor {
    pub fn zeros(shape: &[usize]) -> Self {
        Self::from_vec(shape, vec![0.0; shape.iter().product()])
    }

    /// Panics if `data.len()` disagrees with the shape: an internal invariant, not user input.
    pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Self {
        let n: usize = shape.iter().product();
        assert_eq!(
            n,
            data.len(),
            "Tensor::from_vec: shape {shape:?} needs {n} values, got {}",
            data.len()
        );
        Tensor {
            shape: shape.to_vec(),
            data,
            device: Device::Cpu,
        }
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }
}
