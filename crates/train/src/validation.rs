//! Loss on held-out text: the validation windows of the pretraining split, scored by the
//! training forward. Pretraining logs it; evaluation's bits per byte and the report read it.

use bpe::Tokenizer;
use model::Llama;

/// Mean validation loss (nats/token) and bits per byte over `windows`.
pub fn evaluate(model: &Llama, tok: &Tokenizer, windows: &[Vec<u32>], batch: usize) -> (f64, f64) {
    evaluate_with_load(model, tok, windows, batch).0
}

/// `evaluate`, and the tokens each routed expert of each layer received over the windows
/// (empty per dense layer): expert balance on held-out text.
pub fn evaluate_with_load(
    model: &Llama,
    tok: &Tokenizer,
    windows: &[Vec<u32>],
    batch: usize,
) -> ((f64, f64), Vec<Vec<u64>>) {
    let t = windows.first().map_or(0, |w| w.len() - 1);
    let (mut nats, mut count, mut bytes) = (0f64, 0usize, 0usize);
    let mut load: Vec<Vec<u64>> = Vec::new();
    for chunk in windows.chunks(batch.max(1)) {
        let x: Vec<u32> = chunk.iter().flat_map(|w| w[..t].iter().copied()).collect();
        let y: Vec<u32> = chunk.iter().flat_map(|w| w[1..].iter().copied()).collect();
        let mut ws = model.workspace(chunk.len(), t);
        let (sum, n) = model.loss(&x, &y, &mut ws);
        let part = ws.take_expert_load();
        load.resize(part.len(), Vec::new());
        for (total, part) in load.iter_mut().zip(part) {
            total.resize(part.len(), 0);
            total.iter_mut().zip(part).for_each(|(a, b)| *a += b);
        }
        nats += sum;
        count += n;
        bytes += y
            .iter()
            .map(|&id| tok.token_bytes(id).map_or(0, <[u8]>::len))
            .sum::<usize>();
    }
    let loss = (
        nats / count.max(1) as f64,
        nats / std::f64::consts::LN_2 / bytes.max(1) as f64,
    );
    (loss, load)
}
