//! The routed experts of a mixture-of-experts layer as one grouped kernel: after `moe::dispatch`
//! has gathered each expert's tokens into a contiguous block of rows, expert e runs its SwiGLU
//! MLP, y = (silu(x·W_gateᵀ) ⊙ x·W_upᵀ)·W_downᵀ, over block e alone. The experts run in
//! parallel, each of its GEMMs on one thread (a block is small; many blocks fill the cores), in
//! the way a GPU runs a grouped GEMM. The result does not depend on the thread count.
//!
//! Weights are laid out per expert as [W_gate_up (2·eh, d) | W_down (d, eh)], experts one after
//! another; `offsets` are the dispatch offsets (experts + 1), block e = rows offsets[e]..[e + 1].

use super::swiglu::{swiglu_backward, swiglu_forward};
use crate::matmul::{sgemm_serial, Gemm};
use rayon::prelude::*;

/// The widths of the grouped experts: model width `d`, expert hidden width `eh`.
#[derive(Clone, Copy, Debug)]
pub struct Experts<'a> {
    pub offsets: &'a [usize],
    pub d: usize,
    pub eh: usize,
}

impl Experts<'_> {
    /// Weights per expert.
    pub fn expert_len(&self) -> usize {
        3 * self.eh * self.d
    }

    fn count(&self) -> usize {
        self.offsets.len() - 1
    }

    fn rows(&self) -> usize {
        self.offsets[self.count()] - self.offsets[0]
    }
}

/// `buf` cut into consecutive blocks of (offsets[i + 1] − offsets[i]) rows of `width`.
fn blocks<'a>(buf: &'a mut [f32], offsets: &[usize], width: usize) -> Vec<&'a mut [f32]> {
    let mut rest = &mut buf[offsets[0] * width..];
    offsets
        .windows(2)
        .map(|w| {
            let (this, after) = std::mem::take(&mut rest).split_at_mut((w[1] - w[0]) * width);
            rest = after;
            this
        })
        .collect()
}

/// Immutable twin of `blocks`.
fn views<'a>(buf: &'a [f32], offsets: &[usize], width: usize) -> Vec<&'a [f32]> {
    offsets
        .windows(2)
        .map(|w| &buf[w[0] * width..w[1] * width])
        .collect()
}

/// yd = expert_e(xd) for every block e, keeping the gate/up products `gud` (rows, 2·eh) and the
/// hidden activations `hd` (rows, eh) for the backward. `xd` and `yd` are (rows, d).
pub fn experts_forward(
    e: Experts,
    weights: &[f32],
    xd: &[f32],
    gud: &mut [f32],
    hd: &mut [f32],
    yd: &mut [f32],
) {
    let (d, eh, o) = (e.d, e.eh, e.offsets);
    let per = e.expert_len();
    blocks(gud, o, 2 * eh)
        .into_par_iter()
        .zip(blocks(hd, o, eh))
        .zip(blocks(yd, o, d))
        .zip(views(xd, o, d))
        .enumerate()
        .for_each(|(ex, (((gu, h), y), x))| {
            let n = x.len() / d;
            if n == 0 {
                return;
            }
            let (w_gu, w_down) = weights[ex * per..][..per].split_at(2 * eh * d);
            sgemm_serial(&Gemm::nt(n, 2 * eh, d), x, w_gu, gu);
            swiglu_forward(h, gu, eh);
            sgemm_serial(&Gemm::nt(n, d, eh), h, w_down, y);
        });
    // The serial GEMMs inside the pool are not counted by sgemm: 2 FLOPs per weight per row.
    crate::flops::add((2 * e.rows() * per) as u64);
}

/// The backward of `experts_forward` from dyd = dL/dyd: writes dxd = dL/dxd and, scratch,
/// dgud and dhd; accumulates the weight gradients into `gweights` (laid out like `weights`).
#[allow(clippy::too_many_arguments)]
pub fn experts_backward(
    e: Experts,
    weights: &[f32],
    gweights: &mut [f32],
    (xd, gud, hd): (&[f32], &[f32], &[f32]),
    dyd: &[f32],
    dgud: &mut [f32],
    dhd: &mut [f32],
    dxd: &mut [f32],
) {
    let (d, eh, o) = (e.d, e.eh, e.offsets);
    let per = e.expert_len();
    let inputs = views(xd, o, d)
        .into_iter()
        .zip(views(gud, o, 2 * eh))
        .zip(views(hd, o, eh))
        .zip(views(dyd, o, d))
        .collect::<Vec<_>>();
    blocks(dhd, o, eh)
        .into_par_iter()
        .zip(blocks(dgud, o, 2 * eh))
        .zip(blocks(dxd, o, d))
        .zip(gweights[..e.count() * per].par_chunks_mut(per))
        .zip(inputs)
        .enumerate()
        .for_each(|(ex, ((((dh, dgu), dx), gw), (((x, gu), h), dy)))| {
            let n = x.len() / d;
            if n == 0 {
                return;
            }
            let (w_gu, w_down) = weights[ex * per..][..per].split_at(2 * eh * d);
            let (g_gu, g_down) = gw.split_at_mut(2 * eh * d);
            sgemm_serial(&Gemm::nn(n, eh, d), dy, w_down, dh);
            sgemm_serial(&Gemm::tn(d, eh, n).accumulate(true), dy, h, g_down);
            swiglu_backward(dgu, dh, gu, eh);
            sgemm_serial(&Gemm::tn(2 * eh, d, n).accumulate(true), dgu, x, g_gu);
            sgemm_serial(&Gemm::nn(n, d, 2 * eh), dgu, w_gu, dx);
        });
    // Input and weight gradients: twice the forward's products.
    crate::flops::add((4 * e.rows() * per) as u64);
}

/// Plain specification, for the tests: one expert's SwiGLU applied to one row.
pub mod reference {
    /// y = W_down · (silu(W_gate·x) ⊙ W_up·x) for expert weights [W_gate_up | W_down].
    pub fn expert_row(w: &[f32], x: &[f32], d: usize, eh: usize) -> Vec<f32> {
        let dot = |row: &[f32], v: &[f32]| row.iter().zip(v).map(|(a, b)| a * b).sum::<f32>();
        let (w_gu, w_down) = w.split_at(2 * eh * d);
        let h: Vec<f32> = (0..eh)
            .map(|j| {
                let g = dot(&w_gu[j * d..(j + 1) * d], x);
                let u = dot(&w_gu[(eh + j) * d..(eh + j + 1) * d], x);
                g / (1.0 + (-g).exp()) * u
            })
            .collect();
        (0..d)
            .map(|i| dot(&w_down[i * eh..(i + 1) * eh], &h))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{assert_close, dot, grad_check, projection};

    /// Three experts, one of them idle, over 7 dispatched rows.
    fn setup() -> (Vec<usize>, usize, usize, Vec<f32>, Vec<f32>) {
        let (d, eh) = (6, 4);
        let offsets = vec![0, 3, 3, 7];
        let w: Vec<f32> = projection(3 * 3 * eh * d, 1)
            .iter()
            .map(|v| 0.5 * v)
            .collect();
        let x = projection(7 * d, 2);
        (offsets, d, eh, w, x)
    }

    fn forward(e: Experts, w: &[f32], x: &[f32]) -> Vec<f32> {
        let rows = x.len() / e.d;
        let (mut gu, mut h, mut y) = (
            vec![0f32; rows * 2 * e.eh],
            vec![0f32; rows * e.eh],
            vec![0f32; rows * e.d],
        );
        experts_forward(e, w, x, &mut gu, &mut h, &mut y);
        y
    }

    #[test]
    fn each_block_goes_through_its_own_expert() {
        let (offsets, d, eh, w, x) = setup();
        let e = Experts {
            offsets: &offsets,
            d,
            eh,
        };
        let y = forward(e, &w, &x);
        let per = e.expert_len();
        for (ex, win) in offsets.windows(2).enumerate() {
            for row in win[0]..win[1] {
                let want = reference::expert_row(&w[ex * per..][..per], &x[row * d..][..d], d, eh);
                assert_close(&y[row * d..][..d], &want, 1e-5, "expert output");
            }
        }
    }

    #[test]
    fn the_backward_matches_finite_differences() {
        let (offsets, d, eh, w, x) = setup();
        let e = Experts {
            offsets: &offsets,
            d,
            eh,
        };
        let rows = x.len() / d;
        let proj = projection(rows * d, 3);
        let (mut gu, mut h, mut y) = (
            vec![0f32; rows * 2 * eh],
            vec![0f32; rows * eh],
            vec![0f32; rows * d],
        );
        experts_forward(e, &w, &x, &mut gu, &mut h, &mut y);
        let (mut dgu, mut dh, mut dx) = (
            vec![0f32; rows * 2 * eh],
            vec![0f32; rows * eh],
            vec![0f32; rows * d],
        );
        let mut gw = vec![0f32; w.len()];
        let ins = (&x[..], &gu[..], &h[..]);
        experts_backward(e, &w, &mut gw, ins, &proj, &mut dgu, &mut dh, &mut dx);
        let mut x0 = x.clone();
        grad_check("dL/dx", &mut x0, &dx, |x| dot(&forward(e, &w, x), &proj));
        let mut w0 = w.clone();
        grad_check("dL/dW", &mut w0, &gw, |w| dot(&forward(e, w, &x), &proj));
    }
}
