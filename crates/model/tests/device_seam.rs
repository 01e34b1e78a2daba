//! The device seam holds: a second backend, written here outside `tensor` and `model` with
//! memory of its own type, runs the model's training forward and backward without a line of
//! the layer code changing, and gives bit for bit what the CPU gives. Its memory is a private
//! newtype with no indexing, so the layer code compiles against it only if it reaches every
//! buffer through `tensor::Device`; and it counts its kernel calls, so the test also lists
//! which kernels each architecture's step needs (the checklist of a GPU backend).

use model::{Llama, ModelConfig};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tensor::device::HeadGrads;
use tensor::ops::attention::AttnShape;
use tensor::ops::cross_entropy::Head;
use tensor::ops::moe::Routing;
use tensor::ops::rope::{RopeLayout, RopeScaling, RopeTable};
use tensor::ops::rows::KvExpand;
use tensor::{Cpu, Device, Gemm, Memory, Mut, Ref, Rng};

/// Memory of the traced device: host floats behind a type the layer code cannot index.
#[derive(Clone, Debug)]
struct Buf(Vec<f32>);

#[derive(Clone, Copy)]
struct Ptr(*mut f32);
// SAFETY: dereferenced only through views, which borrow like slices.
unsafe impl Send for Ptr {}
unsafe impl Sync for Ptr {}

// SAFETY: a Vec's pointer addresses its len elements while it is borrowed.
unsafe impl Memory<Traced> for Buf {
    fn numel(&self) -> usize {
        self.0.len()
    }
    fn base(&self) -> Ptr {
        Ptr(self.0.as_ptr() as *mut f32)
    }
    fn base_mut(&mut self) -> Ptr {
        Ptr(self.0.as_mut_ptr())
    }
}

/// A backend that runs each kernel on the CPU and counts it.
#[derive(Clone, Default)]
struct Traced {
    calls: Arc<Mutex<BTreeMap<&'static str, usize>>>,
}

impl Traced {
    fn hit(&self, kernel: &'static str) {
        *self.calls.lock().unwrap().entry(kernel).or_default() += 1;
    }
    fn kernels(&self) -> Vec<&'static str> {
        self.calls.lock().unwrap().keys().copied().collect()
    }
}

fn r(v: Ref<Traced>) -> Ref<Cpu> {
    // SAFETY: the view borrows `len` floats of a live Buf for as long as the result lives.
    unsafe { std::slice::from_raw_parts(v.ptr().0, v.len()) }.into()
}

fn m(v: Mut<Traced>) -> Mut<Cpu> {
    // SAFETY: as `r`, and the view is the only one of its range while it lives.
    unsafe { std::slice::from_raw_parts_mut(v.ptr().0, v.len()) }.into()
}

impl Device for Traced {
    type Mem = Buf;
    type Ptr = Ptr;
    type Rope = RopeTable;
    type Routing = Routing;

    fn describe(&self) -> String {
        "traced cpu".into()
    }
    fn zeros(&self, len: usize) -> Buf {
        Buf(vec![0.0; len])
    }
    fn upload(&self, host: &[f32]) -> Buf {
        Buf(host.to_vec())
    }
    fn download(&self, src: Ref<Self>, dst: &mut [f32]) {
        Cpu.download(r(src), dst)
    }
    fn write(&self, dst: Mut<Self>, src: &[f32]) {
        Cpu.write(m(dst), src)
    }
    fn to_host(&self, mem: Buf) -> Vec<f32> {
        mem.0
    }
    fn resize(&self, mem: &mut Buf, len: usize) {
        mem.0.resize(len, 0.0)
    }
    fn synchronize(&self) {}
    fn offset(ptr: Ptr, i: usize) -> Ptr {
        Ptr(ptr.0.wrapping_add(i))
    }

    fn gemm(&self, g: &Gemm, a: Ref<Self>, b: Ref<Self>, c: Mut<Self>) {
        self.hit("gemm");
        Cpu.gemm(g, r(a), r(b), m(c))
    }
    fn add(&self, y: Mut<Self>, x: Ref<Self>) {
        self.hit("add");
        Cpu.add(m(y), r(x))
    }
    fn add_bias(&self, x: Mut<Self>, bias: Ref<Self>) {
        self.hit("add_bias");
        Cpu.add_bias(m(x), r(bias))
    }
    fn bias_backward(&self, dbias: Mut<Self>, dy: Ref<Self>) {
        self.hit("bias_backward");
        Cpu.bias_backward(m(dbias), r(dy))
    }
    fn scale(&self, x: Mut<Self>, k: f32) {
        self.hit("scale");
        Cpu.scale(m(x), k)
    }
    fn fill(&self, x: Mut<Self>, v: f32) {
        self.hit("fill");
        Cpu.fill(m(x), v)
    }
    fn dropout(&self, out: Mut<Self>, x: Ref<Self>, p: f32, key: u64, accumulate: bool) {
        self.hit("dropout");
        Cpu.dropout(m(out), r(x), p, key, accumulate)
    }
    fn copy(&self, dst: Mut<Self>, src: Ref<Self>) {
        self.hit("copy");
        Cpu.copy(m(dst), r(src))
    }
    fn embedding_forward(&self, out: Mut<Self>, tokens: &[u32], table: Ref<Self>, d: usize) {
        self.hit("embedding_forward");
        Cpu.embedding_forward(m(out), tokens, r(table), d)
    }
    fn embedding_backward(&self, dt: Mut<Self>, dout: Ref<Self>, tokens: &[u32], d: usize) {
        self.hit("embedding_backward");
        Cpu.embedding_backward(m(dt), r(dout), tokens, d)
    }
    fn rmsnorm_forward(
        &self,
        y: Mut<Self>,
        rstd: Mut<Self>,
        x: Ref<Self>,
        w: Ref<Self>,
        d: usize,
        eps: f32,
    ) {
        self.hit("rmsnorm_forward");
        Cpu.rmsnorm_forward(m(y), m(rstd), r(x), r(w), d, eps)
    }
    fn rmsnorm_backward(
        &self,
        dx: Mut<Self>,
        dw: Mut<Self>,
        dy: Ref<Self>,
        x: Ref<Self>,
        w: Ref<Self>,
        rstd: Ref<Self>,
        d: usize,
    ) {
        self.hit("rmsnorm_backward");
        Cpu.rmsnorm_backward(m(dx), m(dw), r(dy), r(x), r(w), r(rstd), d)
    }
    fn rope_table(&self, context: usize, head_dim: usize, theta: f32, s: RopeScaling) -> RopeTable {
        Cpu.rope_table(context, head_dim, theta, s)
    }
    fn rope_forward(&self, x: Mut<Self>, layout: RopeLayout, table: &RopeTable) {
        self.hit("rope_forward");
        Cpu.rope_forward(m(x), layout, table)
    }
    fn rope_backward(&self, dx: Mut<Self>, layout: RopeLayout, table: &RopeTable) {
        self.hit("rope_backward");
        Cpu.rope_backward(m(dx), layout, table)
    }
    fn attention_forward(
        &self,
        out: Mut<Self>,
        lse: Mut<Self>,
        qkv: Ref<Self>,
        s: AttnShape,
        starts: Option<&[u32]>,
    ) {
        self.hit("attention_forward");
        Cpu.attention_forward(m(out), m(lse), r(qkv), s, starts)
    }
    fn attention_backward(
        &self,
        dqkv: Mut<Self>,
        dout: Ref<Self>,
        qkv: Ref<Self>,
        out: Ref<Self>,
        lse: Ref<Self>,
        s: AttnShape,
        starts: Option<&[u32]>,
    ) {
        self.hit("attention_backward");
        Cpu.attention_backward(m(dqkv), r(dout), r(qkv), r(out), r(lse), s, starts)
    }
    fn swiglu_forward(&self, h: Mut<Self>, gu: Ref<Self>, hidden: usize) {
        self.hit("swiglu_forward");
        Cpu.swiglu_forward(m(h), r(gu), hidden)
    }
    fn swiglu_backward(&self, dgu: Mut<Self>, dh: Ref<Self>, gu: Ref<Self>, hidden: usize) {
        self.hit("swiglu_backward");
        Cpu.swiglu_backward(m(dgu), r(dh), r(gu), hidden)
    }
    fn lm_head_loss(
        &self,
        x: Ref<Self>,
        w: Ref<Self>,
        targets: &[u32],
        head: Head,
        grads: Option<HeadGrads<Self>>,
        scratch: &mut Buf,
    ) -> (f64, usize) {
        self.hit("lm_head_loss");
        let grads = grads.map(|g| HeadGrads {
            dx: m(g.dx),
            dw: g.dw.map(m),
            scale: g.scale,
            weights: g.weights,
        });
        Cpu.lm_head_loss(r(x), r(w), targets, head, grads, &mut scratch.0)
    }
    fn lm_head_token_losses(
        &self,
        x: Ref<Self>,
        w: Ref<Self>,
        targets: &[u32],
        head: Head,
        scratch: &mut Buf,
        out: &mut [f64],
    ) {
        self.hit("lm_head_token_losses");
        Cpu.lm_head_token_losses(r(x), r(w), targets, head, &mut scratch.0, out)
    }
    fn concat_cols(&self, out: Mut<Self>, a: Ref<Self>, b: Ref<Self>, wa: usize, wb: usize) {
        self.hit("concat_cols");
        Cpu.concat_cols(m(out), r(a), r(b), wa, wb)
    }
    fn split_cols(&self, a: Mut<Self>, b: Mut<Self>, src: Ref<Self>, wa: usize, wb: usize) {
        self.hit("split_cols");
        Cpu.split_cols(m(a), m(b), r(src), wa, wb)
    }
    fn expand_kv(&self, qkv: Mut<Self>, kv: Ref<Self>, kpe: Ref<Self>, s: KvExpand) {
        self.hit("expand_kv");
        Cpu.expand_kv(m(qkv), r(kv), r(kpe), s)
    }
    fn expand_kv_backward(&self, dkv: Mut<Self>, dkpe: Mut<Self>, dqkv: Ref<Self>, s: KvExpand) {
        self.hit("expand_kv_backward");
        Cpu.expand_kv_backward(m(dkv), m(dkpe), r(dqkv), s)
    }
    fn routing(&self) -> Routing {
        Routing::default()
    }
    fn moe_route(&self, l: Ref<Self>, b: Ref<Self>, k: usize, s: f32, rt: &mut Routing) {
        self.hit("moe_route");
        Cpu.moe_route(r(l), r(b), k, s, rt)
    }
    fn moe_load(&self, rt: &Routing) -> Vec<usize> {
        Cpu.moe_load(rt)
    }
    fn moe_dispatch(&self, xd: Mut<Self>, x: Ref<Self>, rt: &Routing, d: usize) {
        self.hit("moe_dispatch");
        Cpu.moe_dispatch(m(xd), r(x), rt, d)
    }
    fn moe_dispatch_backward(&self, dx: Mut<Self>, dxd: Ref<Self>, rt: &Routing, d: usize) {
        self.hit("moe_dispatch_backward");
        Cpu.moe_dispatch_backward(m(dx), r(dxd), rt, d)
    }
    fn moe_combine(&self, out: Mut<Self>, yd: Ref<Self>, rt: &Routing, d: usize) {
        self.hit("moe_combine");
        Cpu.moe_combine(m(out), r(yd), rt, d)
    }
    fn moe_combine_backward(
        &self,
        dyd: Mut<Self>,
        dgates: Mut<Self>,
        dout: Ref<Self>,
        yd: Ref<Self>,
        rt: &Routing,
        d: usize,
    ) {
        self.hit("moe_combine_backward");
        Cpu.moe_combine_backward(m(dyd), m(dgates), r(dout), r(yd), rt, d)
    }
    fn moe_route_backward(&self, dl: Mut<Self>, dg: Ref<Self>, rt: &Routing, scale: f32) {
        self.hit("moe_route_backward");
        Cpu.moe_route_backward(m(dl), r(dg), rt, scale)
    }
    fn moe_balance_loss(
        &self,
        dlogits: Option<Mut<Self>>,
        rt: &Routing,
        seq_len: usize,
        alpha: f32,
        weight: f32,
    ) -> f64 {
        self.hit("moe_balance_loss");
        Cpu.moe_balance_loss(dlogits.map(m), rt, seq_len, alpha, weight)
    }
    fn experts_forward(
        &self,
        rt: &Routing,
        widths: (usize, usize),
        w: Ref<Self>,
        xd: Ref<Self>,
        gud: Mut<Self>,
        hd: Mut<Self>,
        yd: Mut<Self>,
    ) {
        self.hit("experts_forward");
        Cpu.experts_forward(rt, widths, r(w), r(xd), m(gud), m(hd), m(yd))
    }
    fn experts_backward(
        &self,
        rt: &Routing,
        widths: (usize, usize),
        (w, gw): (Ref<Self>, Mut<Self>),
        (xd, gud, hd): (Ref<Self>, Ref<Self>, Ref<Self>),
        dyd: Ref<Self>,
        (dgud, dhd, dxd): (Mut<Self>, Mut<Self>, Mut<Self>),
    ) {
        self.hit("experts_backward");
        let scratch = (m(dgud), m(dhd), m(dxd));
        Cpu.experts_backward(
            rt,
            widths,
            (r(w), m(gw)),
            (r(xd), r(gud), r(hd)),
            r(dyd),
            scratch,
        )
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The same model on the CPU and on the traced device, and a batch for it.
fn pair(preset: &str, set: &[&str]) -> (Llama, Llama<Traced>, Vec<u32>, Vec<u32>) {
    let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
    let cfg = ModelConfig::preset(preset, &set).unwrap();
    let cpu = Llama::init(cfg.clone(), 7);
    let dev = Traced::default();
    let traced = Llama::on(dev.clone(), cfg.clone(), cpu.params.to_device(&dev));
    let (b, t) = (2, 16);
    let mut rng = Rng::new(3);
    let x: Vec<u32> = (0..b * t)
        .map(|_| rng.below(cfg.vocab_size as u64) as u32)
        .collect();
    let mut y = x[1..].to_vec();
    y.push(0);
    (cpu, traced, x, y)
}

/// Loss, gradient and per-token log-probabilities on both devices, over two documents packed
/// into each row when `packed`.
fn step_on_both(preset: &str, set: &[&str], packed: bool) -> Vec<&'static str> {
    let (cpu, traced, x, y) = pair(preset, set);
    let (b, t) = (2, 16);
    let starts: Vec<u32> = (0..b * t).map(|i| if i % t < 5 { 0 } else { 5 }).collect();
    let (mut wc, mut wt) = (cpu.workspace(b, t), traced.workspace(b, t));
    if packed {
        wc.doc_starts = Some(starts.clone());
        wt.doc_starts = Some(starts);
    }
    let scale = 1.0 / (b * t) as f32;
    let mut gc = vec![0f32; cpu.params.len()];
    let mut gt = traced.device().zeros(cpu.params.len());
    let lc = cpu.forward_backward(&x, &y, &mut gc, scale, &mut wc);
    let lt = traced.forward_backward(&x, &y, gt.all_mut(), scale, &mut wt);
    assert_eq!(lc.0.to_bits(), lt.0.to_bits(), "{preset}: loss");
    assert_eq!(lc.1, lt.1, "{preset}: count");
    assert_eq!(wc.mtp_loss().to_bits(), wt.mtp_loss().to_bits(), "{preset}");
    assert_eq!(
        wc.balance_loss().to_bits(),
        wt.balance_loss().to_bits(),
        "{preset}"
    );
    let gt = traced.device().to_host(gt);
    assert!(gc.iter().any(|g| *g != 0.0), "{preset}: no gradient");
    assert_eq!(bits(&gc), bits(&gt), "{preset}: gradients differ");
    let (pc, pt) = (
        cpu.token_logprobs_at(&x, &y, 0.7, &mut wc),
        traced.token_logprobs_at(&x, &y, 0.7, &mut wt),
    );
    assert_eq!(pc, pt, "{preset}: log-probabilities");
    assert_eq!(wc.take_expert_load(), wt.take_expert_load(), "{preset}");
    traced.device().kernels()
}

#[test]
fn every_architecture_trains_bit_identically_on_a_second_backend() {
    let dense = step_on_both("tiny", &[], false);
    for k in [
        "gemm",
        "embedding_forward",
        "embedding_backward",
        "rmsnorm_forward",
        "rmsnorm_backward",
        "rope_forward",
        "rope_backward",
        "attention_forward",
        "attention_backward",
        "swiglu_forward",
        "swiglu_backward",
        "lm_head_loss",
        "lm_head_token_losses",
        "add",
        "fill",
    ] {
        assert!(dense.contains(&k), "dense step never ran {k}: {dense:?}");
    }
    let moe = step_on_both("tiny-moe", &["model.moe.balance_loss=0.01"], true);
    for k in [
        "moe_route",
        "experts_forward",
        "experts_backward",
        "moe_balance_loss",
    ] {
        assert!(moe.contains(&k), "MoE step never ran {k}: {moe:?}");
    }
    let mla = step_on_both("tiny-mla", &[], true);
    assert!(mla.contains(&"expand_kv_backward"), "{mla:?}");
    let mtp = step_on_both("tiny-mtp", &[], false);
    assert!(
        mtp.contains(&"concat_cols") && mtp.contains(&"split_cols"),
        "{mtp:?}"
    );
}

#[test]
fn hidden_states_logits_and_balancing_agree_across_backends() {
    let (mut cpu, mut traced, x, _) = pair("tiny-moe", &[]);
    let (b, t) = (2, 16);
    let (mut wc, mut wt) = (cpu.workspace(b, t), traced.workspace(b, t));
    assert_eq!(cpu.logits(&x, &mut wc), traced.logits(&x, &mut wt));
    let hc = cpu.hidden_states(&x, &mut wc).slice().to_vec();
    let ht = traced.hidden_states(&x, &mut wt);
    let mut host = vec![0f32; ht.len()];
    traced.device().download(ht, &mut host);
    assert_eq!(bits(&hc), bits(&host));
    // A reward model's path: backward from a gradient on the hidden states.
    let dxf: Vec<f32> = hc.iter().map(|h| 0.5 - h).collect();
    let mut gc = vec![0f32; cpu.params.len()];
    cpu.backward_from_hidden(&x, &dxf, &mut gc, &mut wc);
    let (dev, dxf_dev) = (traced.device().clone(), traced.device().upload(&dxf));
    let mut gt = dev.zeros(cpu.params.len());
    traced.backward_from_hidden(&x, dxf_dev.all(), gt.all_mut(), &mut wt);
    assert_eq!(bits(&gc), bits(&dev.to_host(gt)));
    // Auxiliary-loss-free balancing moves the same biases on both.
    let load = wc.take_expert_load();
    assert_eq!(load, wt.take_expert_load());
    cpu.balance_experts(&load);
    traced.balance_experts(&load);
    let mut moved = vec![0f32; cpu.params.len()];
    dev.download(traced.params.data.all(), &mut moved);
    assert_eq!(bits(&cpu.params.data), bits(&moved));
}
